"""MNIST for federated learning, re-created for cuberun's tests: one program, the task name first.

    mnist.py download --log_dir=DIR --data_dir=DIR
    mnist.py train    --log_dir=DIR --data_dir=DIR --parameters_file=FILE --model_in=DIR --model_dir=DIR --metrics=FILE
    mnist.py evaluate --log_dir=DIR --data_dir=DIR --parameters_file=FILE --model_in=DIR --metrics=FILE

A softmax regression in numpy stands in for the original's PyTorch network. `train` resumes from
the checkpoint in --model_in when there is one (in the cube, --model_in and --model_dir are the
same folder: each round of federated training continues where the last one stopped).
"""

import argparse
import json
import logging
import logging.config
import os
import sys

import numpy as np
import requests
import yaml

logger = logging.getLogger(__name__)

DEFAULT_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
DATA_FILE = "mnist.npz"
CHECKPOINT = "model.npz"
CLASSES = 10


# ------------------------------------------------------------------------------------------ helpers


def write_atomically(path, write):
    """Write through a temporary file in the same folder, then rename: a reader (or the next
    round, which reads the same folder) never sees half a file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.partial-{os.getpid()}"
    try:
        with open(tmp, "xb") as stream:
            write(stream)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_parameters(path):
    with open(path) as stream:
        parameters = yaml.safe_load(stream) or {}
    logger.info("parameters read from %s: %s", path, parameters)
    return parameters


def load_split(data_dir, split):
    with np.load(os.path.join(data_dir, DATA_FILE), allow_pickle=False) as data:
        x, y = data[f"x_{split}"], data[f"y_{split}"]
    return x.reshape(len(x), -1).astype(np.float64) / 255.0, y.astype(np.int64)


def softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def measure(model, x, y):
    probabilities = softmax(x @ model["weights"] + model["bias"])
    loss = -np.log(probabilities[np.arange(len(y)), y] + 1e-12).mean()
    accuracy = (probabilities.argmax(axis=1) == y).mean()
    return {"loss": float(loss), "accuracy": float(accuracy)}


def read_checkpoint(folder):
    path = os.path.join(folder, CHECKPOINT)
    with np.load(path, allow_pickle=False) as saved:
        return {"weights": saved["weights"], "bias": saved["bias"], "epochs_done": int(saved["epochs_done"])}, path


def write_metrics(path, metrics, epochs_done):
    # the original writes its numbers as strings; the epoch count is ours (it shows the resuming)
    document = {"loss": str(metrics["loss"]), "accuracy": str(metrics["accuracy"]), "epochs_done": epochs_done}
    write_atomically(path, lambda stream: stream.write(json.dumps(document).encode()))


# ------------------------------------------------------------------------------------------ tasks


def download(task_args):
    parser = argparse.ArgumentParser(prog="mnist.py download")
    parser.add_argument("--data_dir", "--data-dir", required=True, help="where mnist.npz goes")
    args = parser.parse_args(task_args)
    os.makedirs(args.data_dir, exist_ok=True)
    target = os.path.join(args.data_dir, DATA_FILE)
    if os.path.exists(target):
        logger.info("%s is there already: nothing to download", target)
        print(f"MNIST is there already: {target}")
        return
    url = os.environ.get("MNIST_FL_URL") or DEFAULT_URL
    print(f"downloading {url}")
    done = 0
    with requests.get(url, stream=True, timeout=60) as response:
        response.raise_for_status()
        total = int(response.headers.get("Content-Length") or 0)

        def save(stream):
            nonlocal done
            for chunk in response.iter_content(chunk_size=1 << 16):
                stream.write(chunk)
                done += len(chunk)
                if total:
                    sys.stdout.write(f"\rdownloaded {100 * done // total}% [{done} / {total}] bytes")
                    sys.stdout.flush()

        write_atomically(target, save)
    print(f"\nMNIST saved to {target} ({done} bytes)")
    logger.info("downloaded %s to %s", url, target)


def train(task_args):
    parser = argparse.ArgumentParser(prog="mnist.py train")
    parser.add_argument("--data_dir", "--data-dir", required=True)
    parser.add_argument("--parameters_file", "--parameters-file", required=True)
    parser.add_argument("--model_in", "--model-in", default="", help="a checkpoint to resume from (may be empty)")
    parser.add_argument("--model_dir", "--model-dir", required=True, help="where the checkpoint is written")
    parser.add_argument("--metrics", required=True, help="training metrics (JSON)")
    args = parser.parse_args(task_args)
    parameters = load_parameters(args.parameters_file)
    x, y = load_split(args.data_dir, "train")

    if args.model_in and os.path.isfile(os.path.join(args.model_in, CHECKPOINT)):
        model, path = read_checkpoint(args.model_in)
        print(f"resuming from {path} ({model['epochs_done']} epoch(s) done)")
    else:
        model = {"weights": np.zeros((x.shape[1], CLASSES)), "bias": np.zeros(CLASSES), "epochs_done": 0}
        print("no checkpoint: training from scratch")

    batch_size = int(parameters.get("batch_size", 32))
    learning_rate = float(parameters.get("learning_rate", 0.5))
    epochs = int(parameters.get("epochs", 5))
    onehot = np.eye(CLASSES)[y]
    for _ in range(epochs):
        model["epochs_done"] += 1
        # a fixed order per epoch: the same data and checkpoint always give the same model
        order = np.random.default_rng(model["epochs_done"]).permutation(len(y))
        for start in range(0, len(y), batch_size):
            batch = order[start : start + batch_size]
            error = softmax(x[batch] @ model["weights"] + model["bias"]) - onehot[batch]
            model["weights"] -= learning_rate * x[batch].T @ error / len(batch)
            model["bias"] -= learning_rate * error.mean(axis=0)
        metrics = measure(model, x, y)
        print(f"epoch {model['epochs_done']}: loss {metrics['loss']:.4f}, accuracy {100 * metrics['accuracy']:.2f}%")

    def save(stream):
        np.savez(stream, weights=model["weights"], bias=model["bias"], epochs_done=np.int64(model["epochs_done"]))

    write_atomically(os.path.join(args.model_dir, CHECKPOINT), save)
    logger.info("checkpoint saved in %s", args.model_dir)
    metrics = measure(model, x, y)
    print(f"training metrics: loss {metrics['loss']:.4f}, accuracy {100 * metrics['accuracy']:.2f}%")
    write_metrics(args.metrics, metrics, model["epochs_done"])


def evaluate(task_args):
    parser = argparse.ArgumentParser(prog="mnist.py evaluate")
    parser.add_argument("--data_dir", "--data-dir", required=True)
    parser.add_argument("--parameters_file", "--parameters-file", required=True)
    parser.add_argument("--model_in", "--model-in", required=True)
    parser.add_argument("--metrics", required=True, help="evaluation metrics (JSON)")
    args = parser.parse_args(task_args)
    load_parameters(args.parameters_file)
    x, y = load_split(args.data_dir, "test")
    model, path = read_checkpoint(args.model_in)
    metrics = measure(model, x, y)
    print(f"evaluated {path}: loss {metrics['loss']:.4f}, accuracy {100 * metrics['accuracy']:.2f}%")
    write_metrics(args.metrics, metrics, model["epochs_done"])


TASKS = {"download": download, "train": train, "evaluate": evaluate}


def main():
    parser = argparse.ArgumentParser(description="MNIST (federated learning variant)")
    parser.add_argument("mlcube_task", choices=sorted(TASKS), help="the task to run")
    parser.add_argument("--log_dir", "--log-dir", required=True, help="where the task's log goes")
    known, task_args = parser.parse_known_args()
    os.makedirs(known.log_dir, exist_ok=True)
    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}},
        "handlers": {"file": {"class": "logging.FileHandler", "level": "INFO", "formatter": "plain",
                              "filename": os.path.join(known.log_dir, f"mlcube_mnist_{known.mlcube_task}.log")}},
        "root": {"level": "INFO", "handlers": ["file"]},
    })
    logger.info("task %s: %s", known.mlcube_task, task_args)
    try:
        TASKS[known.mlcube_task](task_args)
    except Exception as error:
        logger.exception("task %s failed", known.mlcube_task)
        print(f"mnist.py {known.mlcube_task}: {error}", file=sys.stderr)
        sys.exit(1)
    logger.info("task %s done", known.mlcube_task)


if __name__ == "__main__":
    main()
