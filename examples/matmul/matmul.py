"""matmul cube: multiply two seeded random matrices and report shape, checksum and time.

Usage: matmul.py matmul --parameters_file=FILE --output_file=FILE
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml


@dataclass(frozen=True)
class Shapes:
    a: tuple[int, int]
    b: tuple[int, int]
    seed: int


def _shape(raw: Any, key: str) -> tuple[int, int]:
    if not (isinstance(raw, list) and len(raw) == 2 and all(isinstance(v, int) and v > 0 for v in raw)):
        raise ValueError(f"'{key}' must be a list of two positive integers, got {raw!r}")
    return raw[0], raw[1]


def load_shapes(path: Path) -> Shapes:
    config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a mapping with matrix_a, matrix_b and seed")
    a = _shape(config.get("matrix_a"), "matrix_a")
    b = _shape(config.get("matrix_b"), "matrix_b")
    if a[1] != b[0]:
        raise ValueError(f"cannot multiply {a[0]}x{a[1]} by {b[0]}x{b[1]}: inner dimensions differ")
    seed = config.get("seed", 0)
    if not isinstance(seed, int):
        raise ValueError(f"'seed' must be an integer, got {seed!r}")
    return Shapes(a=a, b=b, seed=seed)


def multiply(shapes: Shapes) -> tuple[np.ndarray, float]:
    rng = np.random.default_rng(shapes.seed)
    a = rng.standard_normal(shapes.a)
    b = rng.standard_normal(shapes.b)
    start = time.perf_counter()
    c = a @ b
    return c, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="matmul.py", description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=["matmul"])
    parser.add_argument("--parameters_file", required=True, type=Path, help="YAML with matrix_a, matrix_b, seed")
    parser.add_argument("--output_file", required=True, type=Path, help="text file to write the result to")
    args = parser.parse_args(argv)
    try:
        shapes = load_shapes(args.parameters_file)
        print(f"multiplying {shapes.a} by {shapes.b} (seed {shapes.seed})", flush=True)
        c, elapsed = multiply(shapes)
        report = f"shape: {c.shape[0]}x{c.shape[1]}\nchecksum: {float(c.sum()):.6f}\nelapsed_seconds: {elapsed:.6f}\n"
        args.output_file.parent.mkdir(parents=True, exist_ok=True)
        args.output_file.write_text(report, encoding="utf-8")
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"matmul: error: {exc}", file=sys.stderr, flush=True)
        return 1
    print(report, end="", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
