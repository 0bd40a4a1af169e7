"""digits cube: classify scikit-learn's bundled 8x8 handwritten digits, fully offline.

Usage:
  digits.py prepare  --params=FILE --data_dir=DIR
  digits.py train    --data_dir=DIR --params=FILE --model_dir=DIR --log_dir=DIR
  digits.py evaluate --data_dir=DIR --model_dir=DIR --report=FILE
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import yaml
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, confusion_matrix
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

DATA_FILE = "digits.npz"
MODEL_FILE = "model.pkl"
MODEL_INFO = "model.json"
CLASSES = np.arange(10)


class TaskError(Exception):
    """A failure explained by its message; the program exits 1 without a traceback."""


def say(message: str) -> None:
    print(message, flush=True)


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- parameters


def load_section(path: Path, section: str) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise TaskError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise TaskError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise TaskError(f"{path}: expected a mapping with 'prepare' and 'train' sections")
    value = raw.get(section) or {}
    if not isinstance(value, dict):
        raise TaskError(f"{path}: '{section}' must be a mapping")
    return value


def get(params: dict[str, Any], key: str, default: Any, kind: type | tuple[type, ...], where: str) -> Any:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TaskError(f"{where}.{key} has the wrong type: {value!r}")
    return value


def fraction(params: dict[str, Any], key: str, default: float) -> float:
    value = float(get(params, key, default, (int, float), "prepare"))
    if not 0.0 < value < 1.0:
        raise TaskError(f"prepare.{key} must be between 0 and 1, got {value}")
    return value


# --------------------------------------------------------------------------- tasks


def prepare(params_file: Path, data_dir: Path) -> None:
    params = load_section(params_file, "prepare")
    test_size = fraction(params, "test_size", 0.2)
    val_size = fraction(params, "val_size", 0.1)
    if test_size + val_size >= 0.9:
        raise TaskError("prepare.test_size + prepare.val_size must leave at least 10% of the data for training")
    seed = get(params, "seed", 0, int, "prepare")

    digits = load_digits()
    x, y = digits.data.astype(np.float64), digits.target.astype(np.int64)
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=test_size, stratify=y, random_state=seed)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=val_size / (1.0 - test_size), stratify=y_rest, random_state=seed
    )
    scaler = StandardScaler().fit(x_train)  # fitted on the training split only
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / (DATA_FILE + ".tmp")
    with tmp.open("wb") as out:
        np.savez(
            out,
            x_train=scaler.transform(x_train),
            y_train=y_train,
            x_val=scaler.transform(x_val),
            y_val=y_val,
            x_test=scaler.transform(x_test),
            y_test=y_test,
            mean=scaler.mean_,
            scale=scaler.scale_,
        )
    os.replace(tmp, data_dir / DATA_FILE)
    say(f"{len(x)} images of {x.shape[1]} pixels: {len(x_train)} train, {len(x_val)} validation, {len(x_test)} test")
    say(f"wrote {data_dir / DATA_FILE}")


def load_data(data_dir: Path) -> dict[str, np.ndarray]:
    path = data_dir / DATA_FILE
    try:
        with np.load(path) as npz:
            return {key: npz[key] for key in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}
    except (OSError, KeyError, ValueError) as exc:
        raise TaskError(f"cannot load {path}: {exc}. Run the prepare task first.") from exc


def train(data_dir: Path, params_file: Path, model_dir: Path, log_dir: Path) -> None:
    params = load_section(params_file, "train")
    kind = get(params, "model", "mlp", str, "train")
    if kind not in TRAINERS:
        raise TaskError(f"train.model must be one of {sorted(TRAINERS)}, got {kind!r}")
    seed = get(params, "seed", 0, int, "train")
    data = load_data(data_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with (
        (log_dir / "metrics.jsonl").open("w", encoding="utf-8") as metrics,
        (log_dir / "train.log").open("w", encoding="utf-8") as train_log,
    ):

        def log(message: str) -> None:
            say(message)
            train_log.write(message + "\n")
            train_log.flush()

        def record(epoch: int, model: Any, loss: float | None) -> None:
            row = {
                "epoch": epoch,
                "loss": loss,
                "accuracy": float(model.score(data["x_val"], data["y_val"])),  # on the validation split
                "train_accuracy": float(model.score(data["x_train"], data["y_train"])),
                "elapsed_s": round(time.perf_counter() - start, 4),
            }
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()
            shown = "n/a" if loss is None else f"{loss:.4f}"
            log(
                f"epoch {epoch}: loss {shown}, train_accuracy {row['train_accuracy']:.4f}, "
                f"val_accuracy {row['accuracy']:.4f}"
            )

        log(f"training {kind} on {len(data['x_train'])} images")
        model, settings = TRAINERS[kind](params.get(kind) or {}, seed, data, record, log)
        log(f"trained {kind} in {time.perf_counter() - start:.2f}s")

    write_atomic(model_dir / MODEL_FILE, pickle.dumps(model))
    info = {"model": kind, "settings": settings, "sklearn": sklearn.__version__, "train_samples": len(data["x_train"])}
    write_atomic(model_dir / MODEL_INFO, (json.dumps(info, indent=2) + "\n").encode())
    say(f"wrote {model_dir / MODEL_FILE}")


Recorder = Callable[[int, Any, "float | None"], None]


def train_mlp(
    params: dict[str, Any], seed: int, data: dict[str, np.ndarray], record: Recorder, log: Callable[[str], None]
) -> tuple[Any, dict[str, Any]]:
    hidden = get(params, "hidden_layer_sizes", [64], list, "train.mlp")
    if not hidden or not all(isinstance(h, int) and h > 0 for h in hidden):
        raise TaskError(f"train.mlp.hidden_layer_sizes must be a list of positive integers, got {hidden!r}")
    settings = {
        "hidden_layer_sizes": hidden,
        "epochs": get(params, "epochs", 30, int, "train.mlp"),
        "batch_size": get(params, "batch_size", 64, int, "train.mlp"),
        "learning_rate": float(get(params, "learning_rate", 0.001, (int, float), "train.mlp")),
        "alpha": float(get(params, "alpha", 0.0001, (int, float), "train.mlp")),
    }
    if settings["epochs"] < 1 or settings["batch_size"] < 1 or settings["learning_rate"] <= 0:
        raise TaskError("train.mlp: epochs and batch_size must be >= 1 and learning_rate > 0")
    log(f"settings: {json.dumps(settings)}")
    model = MLPClassifier(
        hidden_layer_sizes=tuple(hidden),
        solver="adam",
        batch_size=settings["batch_size"],
        learning_rate_init=settings["learning_rate"],
        alpha=settings["alpha"],
        random_state=seed,
    )
    for epoch in range(1, settings["epochs"] + 1):
        model.partial_fit(data["x_train"], data["y_train"], classes=CLASSES)  # one pass over the data
        record(epoch, model, float(model.loss_))
    return model, settings


def train_logistic(
    params: dict[str, Any], seed: int, data: dict[str, np.ndarray], record: Recorder, log: Callable[[str], None]
) -> tuple[Any, dict[str, Any]]:
    settings = {
        "C": float(get(params, "C", 1.0, (int, float), "train.logistic")),
        "max_iter": get(params, "max_iter", 1000, int, "train.logistic"),
    }
    if settings["C"] <= 0 or settings["max_iter"] < 1:
        raise TaskError("train.logistic: C must be > 0 and max_iter >= 1")
    log(f"settings: {json.dumps(settings)}")
    model = LogisticRegression(C=settings["C"], max_iter=settings["max_iter"], random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(data["x_train"], data["y_train"])
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        log(f"warning: logistic regression did not converge in {settings['max_iter']} iterations")
    record(1, model, None)  # a single fit: one line in metrics.jsonl
    return model, settings


TRAINERS = {"mlp": train_mlp, "logistic": train_logistic}


def evaluate(data_dir: Path, model_dir: Path, report_file: Path) -> None:
    data = load_data(data_dir)
    path = model_dir / MODEL_FILE
    try:
        model = pickle.loads(path.read_bytes())  # our own train task wrote it
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        raise TaskError(f"cannot load the model {path}: {exc}. Run the train task first.") from exc
    predicted = model.predict(data["x_test"])
    accuracy = float(accuracy_score(data["y_test"], predicted))
    matrix = confusion_matrix(data["y_test"], predicted, labels=CLASSES)
    info_path = model_dir / MODEL_INFO
    kind = json.loads(info_path.read_text(encoding="utf-8")).get("model") if info_path.exists() else None
    report = {
        "accuracy": accuracy,
        "samples": len(data["y_test"]),
        "model": kind,
        "labels": CLASSES.tolist(),
    }
    # Rows: true label, columns: predicted label. One row per line keeps the file readable.
    fields = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in report.items()]
    rows = ",\n".join(f"    {json.dumps(row)}" for row in matrix.tolist())
    text = "{\n" + ",\n".join(fields) + ',\n  "confusion_matrix": [\n' + rows + "\n  ]\n}\n"
    write_atomic(report_file, text.encode())
    say(f"test accuracy {accuracy:.4f} on {len(predicted)} images; wrote {report_file}")


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="digits.py", description=__doc__.splitlines()[0])
    tasks = parser.add_subparsers(dest="task", required=True, metavar="{prepare,train,evaluate}")
    for name, options in {
        "prepare": ("params", "data_dir"),
        "train": ("data_dir", "params", "model_dir", "log_dir"),
        "evaluate": ("data_dir", "model_dir", "report"),
    }.items():
        sub = tasks.add_parser(name)
        for option in options:
            sub.add_argument(f"--{option}", required=True, type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.task == "prepare":
            prepare(args.params, args.data_dir)
        elif args.task == "train":
            train(args.data_dir, args.params, args.model_dir, args.log_dir)
        else:
            evaluate(args.data_dir, args.model_dir, args.report)
    except (TaskError, OSError) as exc:
        print(f"digits {args.task}: error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
