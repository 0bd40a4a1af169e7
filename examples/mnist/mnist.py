"""mnist cube: download MNIST, train a small NumPy neural network on it, evaluate the model.

Usage:
  mnist.py download --data_config=FILE --data_dir=DIR --log_dir=DIR
  mnist.py train    --data_dir=DIR --train_config=FILE --log_dir=DIR --model_dir=DIR
  mnist.py evaluate --data_dir=DIR --model_dir=DIR --log_dir=DIR --metrics=FILE
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import yaml

DATA_FILE = "mnist.npz"
MODEL_FILE = "model.npz"
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
CHUNK = 1 << 16
ATTEMPTS = 4
TIMEOUT_S = 60.0


class TaskError(Exception):
    """A failure explained by its message; the program exits 1 without a traceback."""


# --------------------------------------------------------------------------- logging


class TaskLog:
    """Writes every line to stdout and to a log file, flushing both."""

    def __init__(self, log_dir: Path, name: str) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.path = log_dir / name
        self._file: IO[str] = self.path.open("w", encoding="utf-8")

    def info(self, message: str) -> None:
        for stream in (sys.stdout, self._file):
            stream.write(message + "\n")
            stream.flush()

    def mllog(self, key: str, value: Any = None, event: str = "POINT_IN_TIME", **metadata: Any) -> None:
        """One MLPerf-style line: `:::MLLOG {json}`."""
        record = {
            "namespace": "",
            "time_ms": int(time.time() * 1000),
            "event_type": event,
            "key": key,
            "value": value,
            "metadata": {"file": "mnist.py", **metadata},
        }
        self.info(":::MLLOG " + json.dumps(record))

    def error(self, message: str) -> None:
        """A failure line: to stderr and to the log file."""
        self._file.write(message + "\n")
        self._file.flush()
        print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        self._file.close()


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TaskError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise TaskError(f"{path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TaskError(f"{path}: expected a mapping of keys to values")
    return data


# --------------------------------------------------------------------------- download


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as src:
        for block in iter(lambda: src.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch_http(uri: str, part: Path, log: TaskLog) -> None:
    """Download `uri` into `part`, resuming from its current size with an HTTP Range request."""
    for attempt in range(1, ATTEMPTS + 1):
        offset = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": "cuberun-mnist/0.1"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            log.info(f"resuming at byte {offset}")
        try:
            with urllib.request.urlopen(urllib.request.Request(uri, headers=headers), timeout=TIMEOUT_S) as resp:
                mode, start = "wb", 0
                if resp.status == 206:
                    match = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
                    if not match or int(match.group(1)) != offset:
                        raise TaskError(f"server answered a range request with {resp.headers.get('Content-Range')!r}")
                    mode, start = "ab", offset
                elif offset:
                    log.info("server does not support ranges; starting over")
                length = resp.headers.get("Content-Length")
                total = start + int(length) if length and length.isdigit() else None
                _copy_stream(resp, part, mode, start, total, log)
            return
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:
                log.info("server reports the partial file is already complete")
                return
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                raise TaskError(f"download of {uri} failed: HTTP {exc.code} {exc.reason}") from exc
            error: Exception = exc
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            error = exc
        if attempt == ATTEMPTS:
            raise TaskError(f"download of {uri} failed after {ATTEMPTS} attempts: {error}")
        delay = min(2.0 ** (attempt - 1), 8.0)
        log.info(f"attempt {attempt} failed ({error}); retrying in {delay:.0f}s")
        time.sleep(delay)


def _copy_stream(src: Any, part: Path, mode: str, done: int, total: int | None, log: TaskLog) -> None:
    next_report = (int(10 * done / total) + 1) / 10 if total else 1.0
    with part.open(mode) as out:
        while block := src.read(CHUNK):
            out.write(block)
            done += len(block)
            if total and done / total >= next_report:
                log.info(f"downloaded {done}/{total} bytes ({100 * done // total}%)")
                next_report += 0.1
    if total is not None and done < total:
        raise http.client.IncompleteRead(b"", total - done)


def fetch(uri: str, part: Path, log: TaskLog) -> None:
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme in ("http", "https"):
        _fetch_http(uri, part, log)
    elif parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise TaskError(f"file URI with a remote host is not supported: {uri}")
        source = Path(urllib.request.url2pathname(parsed.path))
        try:
            shutil.copyfile(source, part)
        except OSError as exc:
            raise TaskError(f"cannot copy {source}: {exc.strerror or exc}") from exc
    else:
        raise TaskError(f"unsupported URI scheme {parsed.scheme!r} in {uri!r}: use file://, http:// or https://")


def download(data_config: Path, data_dir: Path, log: TaskLog) -> None:
    config = read_yaml(data_config)
    uri, expected = config.get("uri"), config.get("hash")
    if not isinstance(uri, str) or not uri:
        raise TaskError(f"{data_config}: 'uri' must be a non-empty string")
    if not isinstance(expected, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", expected):
        raise TaskError(f"{data_config}: 'hash' must be the sha256 of the data set as 64 hex digits (quote it)")
    expected = expected.lower()

    data_dir.mkdir(parents=True, exist_ok=True)
    target = data_dir / DATA_FILE
    if target.exists() and sha256_of(target) == expected:
        log.info(f"{target} is present and its sha256 matches; nothing to download")
        return
    part = target.with_name(target.name + ".part")
    log.info(f"downloading {uri} -> {target}")
    fetch(uri, part, log)
    actual = sha256_of(part)
    if actual != expected:
        part.unlink(missing_ok=True)
        raise TaskError(
            f"sha256 mismatch for {uri}: expected {expected}, got {actual}. "
            f"The downloaded file was removed; check 'hash' in {data_config}."
        )
    os.replace(part, target)
    load_dataset(data_dir)  # fail now, not in train, if the archive is not a usable MNIST npz
    log.info(f"sha256 verified; saved {target} ({target.stat().st_size} bytes)")


# --------------------------------------------------------------------------- data and model


@dataclass(frozen=True)
class Dataset:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _features(images: np.ndarray) -> np.ndarray:
    flat = images.reshape(len(images), -1).astype(np.float32)
    return flat / 255.0 if np.issubdtype(images.dtype, np.integer) else flat


def load_dataset(data_dir: Path) -> Dataset:
    path = data_dir / DATA_FILE
    try:
        with np.load(path) as npz:
            missing = [k for k in NPZ_KEYS if k not in npz.files]
            if missing:
                raise TaskError(f"{path} lacks the arrays {missing}; expected {list(NPZ_KEYS)}")
            arrays = {k: npz[k] for k in NPZ_KEYS}
    except (OSError, ValueError) as exc:
        raise TaskError(f"cannot load {path}: {exc}. Run the download task first.") from exc
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if len(x) != len(y):
            raise TaskError(f"{path}: x_{split} has {len(x)} samples but y_{split} has {len(y)}")
    if len(arrays["x_train"]) == 0:
        raise TaskError(f"{path}: x_train is empty")
    return Dataset(
        x_train=_features(arrays["x_train"]),
        y_train=arrays["y_train"].astype(np.int64).ravel(),
        x_test=_features(arrays["x_test"]),
        y_test=arrays["y_test"].astype(np.int64).ravel(),
    )


class MLP:
    """Input -> dense + ReLU -> dense -> softmax."""

    def __init__(self, params: dict[str, np.ndarray]) -> None:
        self.params = params

    @classmethod
    def create(cls, n_inputs: int, n_hidden: int, n_classes: int, rng: np.random.Generator) -> MLP:
        return cls(
            {
                "w1": (rng.standard_normal((n_inputs, n_hidden)) * np.sqrt(2.0 / n_inputs)).astype(np.float32),
                "b1": np.zeros(n_hidden, np.float32),
                "w2": (rng.standard_normal((n_hidden, n_classes)) * np.sqrt(1.0 / n_hidden)).astype(np.float32),
                "b2": np.zeros(n_classes, np.float32),
            }
        )

    @property
    def n_classes(self) -> int:
        return int(self.params["b2"].shape[0])

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        hidden = np.maximum(x @ self.params["w1"] + self.params["b1"], 0.0)
        logits = hidden @ self.params["w2"] + self.params["b2"]
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        return hidden, probs

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        hidden, probs = self._forward(x)
        n = len(x)
        loss = float(-np.log(probs[np.arange(n), y] + 1e-12).mean())
        d_logits = probs
        d_logits[np.arange(n), y] -= 1.0
        d_logits /= n
        d_hidden = (d_logits @ self.params["w2"].T) * (hidden > 0)
        grads = {
            "w2": hidden.T @ d_logits,
            "b2": d_logits.sum(axis=0),
            "w1": x.T @ d_hidden,
            "b1": d_hidden.sum(axis=0),
        }
        return loss, grads

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch: int = 4096) -> tuple[float, float]:
        """Mean cross-entropy and accuracy over (x, y)."""
        loss_sum, correct = 0.0, 0
        for i in range(0, len(x), batch):
            _, probs = self._forward(x[i : i + batch])
            yb = y[i : i + batch]
            loss_sum += float(-np.log(probs[np.arange(len(yb)), yb] + 1e-12).sum())
            correct += int((probs.argmax(axis=1) == yb).sum())
        return loss_sum / len(x), correct / len(x)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as out:
            p = self.params
            np.savez(out, w1=p["w1"], b1=p["b1"], w2=p["w2"], b2=p["b2"])
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> MLP:
        try:
            with np.load(path) as npz:
                return cls({k: npz[k] for k in ("w1", "b1", "w2", "b2")})
        except (OSError, KeyError, ValueError) as exc:
            raise TaskError(f"cannot load the model {path}: {exc}. Run the train task first.") from exc


class Optimizer:
    """Plain SGD (optional momentum) or Adam, updating the parameter arrays in place."""

    def __init__(self, name: str, lr: float, momentum: float = 0.0) -> None:
        self.name, self.lr, self.momentum = name, lr, momentum
        self.step_count = 0
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        self.step_count += 1
        for key, grad in grads.items():
            m = self.m.setdefault(key, np.zeros_like(grad))
            if self.name == "sgd":
                m *= self.momentum
                m += grad
                params[key] -= self.lr * m
                continue
            v = self.v.setdefault(key, np.zeros_like(grad))
            m *= 0.9
            m += 0.1 * grad
            v *= 0.999
            v += 0.001 * grad * grad
            m_hat = m / (1 - 0.9**self.step_count)
            v_hat = v / (1 - 0.999**self.step_count)
            params[key] -= self.lr * m_hat / (np.sqrt(v_hat) + 1e-8)


# --------------------------------------------------------------------------- train / evaluate


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str
    train_epochs: int
    batch_size: int
    learning_rate: float
    hidden_units: int
    momentum: float
    max_samples: int | None
    seed: int

    @classmethod
    def from_file(cls, path: Path) -> TrainConfig:
        raw = read_yaml(path)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise TaskError(f"{path}: unknown keys {unknown}; known keys are {sorted(known)}")
        optimizer = str(raw.get("optimizer", "adam")).lower()
        if optimizer not in ("adam", "sgd"):
            raise TaskError(f"{path}: optimizer must be 'adam' or 'sgd', got {raw.get('optimizer')!r}")

        def positive_int(key: str, default: int | None) -> int | None:
            value = raw.get(key, default)
            if value is None:
                return None
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise TaskError(f"{path}: {key} must be a positive integer, got {value!r}")
            return value

        def number(key: str, default: float, minimum: float) -> float:
            value = raw.get(key, default)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < minimum:
                raise TaskError(f"{path}: {key} must be a number >= {minimum}, got {value!r}")
            return float(value)

        learning_rate = number("learning_rate", 0.001 if optimizer == "adam" else 0.1, 0.0)
        if learning_rate == 0:
            raise TaskError(f"{path}: learning_rate must be positive")
        seed = raw.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TaskError(f"{path}: seed must be an integer, got {seed!r}")
        return cls(
            optimizer=optimizer,
            train_epochs=positive_int("train_epochs", 5) or 5,
            batch_size=positive_int("batch_size", 32) or 32,
            learning_rate=learning_rate,
            hidden_units=positive_int("hidden_units", 128) or 128,
            momentum=number("momentum", 0.0, 0.0),
            max_samples=positive_int("max_samples", None),
            seed=seed,
        )


def _subsample(
    x: np.ndarray, y: np.ndarray, limit: int | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    if limit is None or len(x) <= limit:
        return x, y
    keep = rng.choice(len(x), size=limit, replace=False)
    return x[keep], y[keep]


def train(data_dir: Path, train_config: Path, log_dir: Path, model_dir: Path, log: TaskLog) -> None:
    config = TrainConfig.from_file(train_config)
    data = load_dataset(data_dir)
    rng = np.random.default_rng(config.seed)
    x_train, y_train = _subsample(data.x_train, data.y_train, config.max_samples, rng)
    x_test, y_test = _subsample(data.x_test, data.y_test, config.max_samples, rng)
    n_classes = max(10, int(max(y_train.max(), y_test.max(initial=0))) + 1)
    model = MLP.create(x_train.shape[1], config.hidden_units, n_classes, rng)
    optimizer = Optimizer(config.optimizer, config.learning_rate, config.momentum)

    log.mllog("run_start", event="INTERVAL_START")
    log.mllog("opt_name", config.optimizer)
    log.mllog("opt_base_learning_rate", config.learning_rate)
    log.mllog("global_batch_size", config.batch_size)
    log.mllog("train_samples", len(x_train))
    log.mllog("eval_samples", len(x_test))
    metrics_path = log_dir / "metrics.jsonl"
    with metrics_path.open("w", encoding="utf-8") as metrics:
        for epoch in range(1, config.train_epochs + 1):
            log.mllog("epoch_start", event="INTERVAL_START", epoch_num=epoch)
            order = rng.permutation(len(x_train))
            loss_sum = 0.0
            for start in range(0, len(order), config.batch_size):
                batch = order[start : start + config.batch_size]
                loss, grads = model.loss_and_grads(x_train[batch], y_train[batch])
                optimizer.step(model.params, grads)
                loss_sum += loss * len(batch)
            train_loss = loss_sum / len(order)
            log.mllog("train_loss", round(train_loss, 6), epoch_num=epoch)
            accuracy: float | None = None
            if len(x_test):
                _, accuracy = model.evaluate(x_test, y_test)
                log.mllog("eval_accuracy", round(accuracy, 6), epoch_num=epoch)
            log.mllog("epoch_stop", event="INTERVAL_END", epoch_num=epoch)
            shown = "n/a" if accuracy is None else f"{accuracy:.4f}"
            log.info(f"epoch {epoch}/{config.train_epochs}: train_loss {train_loss:.4f}, eval_accuracy {shown}")
            metrics.write(json.dumps({"epoch": epoch, "loss": train_loss, "accuracy": accuracy}) + "\n")
            metrics.flush()
    model.save(model_dir / MODEL_FILE)
    log.info(f"saved the model to {model_dir / MODEL_FILE}")
    log.mllog("run_stop", event="INTERVAL_END", status="success")


def evaluate(data_dir: Path, model_dir: Path, metrics_file: Path, log: TaskLog) -> None:
    data = load_dataset(data_dir)
    if len(data.x_test) == 0:
        raise TaskError(f"{data_dir / DATA_FILE}: x_test is empty; nothing to evaluate")
    model = MLP.load(model_dir / MODEL_FILE)
    if model.params["w1"].shape[0] != data.x_test.shape[1]:
        raise TaskError(
            f"the model expects {model.params['w1'].shape[0]} features, the data has {data.x_test.shape[1]}"
        )
    if int(data.y_test.max()) >= model.n_classes:
        raise TaskError(f"the test labels go up to {int(data.y_test.max())}, the model knows {model.n_classes} classes")
    loss, accuracy = model.evaluate(data.x_test, data.y_test)
    log.mllog("eval_accuracy", round(accuracy, 6))
    result = {"accuracy": accuracy, "loss": loss, "samples": len(data.x_test)}
    metrics_file.parent.mkdir(parents=True, exist_ok=True)
    metrics_file.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    log.info(f"accuracy {accuracy:.4f} on {len(data.x_test)} test samples; wrote {metrics_file}")


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mnist.py", description=__doc__.splitlines()[0])
    tasks = parser.add_subparsers(dest="task", required=True, metavar="{download,train,evaluate}")
    for name, options in {
        "download": ("data_config", "data_dir", "log_dir"),
        "train": ("data_dir", "train_config", "log_dir", "model_dir"),
        "evaluate": ("data_dir", "model_dir", "log_dir", "metrics"),
    }.items():
        sub = tasks.add_parser(name)
        for option in options:
            sub.add_argument(f"--{option}", required=True, type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log: TaskLog | None = None
    try:
        log = TaskLog(args.log_dir, f"{args.task}.log")
        if args.task == "download":
            download(args.data_config, args.data_dir, log)
        elif args.task == "train":
            train(args.data_dir, args.train_config, args.log_dir, args.model_dir, log)
        else:
            evaluate(args.data_dir, args.model_dir, args.metrics, log)
    except (TaskError, OSError) as exc:
        message = f"mnist {args.task}: error: {exc}"
        if log is None:
            print(message, file=sys.stderr, flush=True)
        else:
            if args.task == "train":
                log.mllog("run_stop", event="INTERVAL_END", status="aborted")
            log.error(message)
        return 1
    finally:
        if log is not None:
            log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
