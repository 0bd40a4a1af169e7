"""Third-party cubes on the local platform, re-created in tests/data/thirdparty (see its README).

Each cube is copied into tmp_path and run through the CLI with the fewest options a user needs
(docs/compatibility.md lists them). Downloads come from an HTTP server on 127.0.0.1; managed envs
land in the session's shared cache (CUBERUN_TEST_CACHE), so a warm run builds none.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.checkout import copy_checkout_folder
from tests.conftest import CLI, REPO
from tests.integration.test_local_runner import ok, records, serve_directory

DATA = REPO / "tests" / "data" / "thirdparty"
LOOPBACK = {"NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}


def copy_cube(name: str, dest: Path) -> Path:
    """The cube's files as a clean clone has them (tests/checkout.py): a file git ignores, or an
    empty folder, is not there, here as in CI."""
    return copy_checkout_folder(DATA / name, dest / name)


def failed(proc: subprocess.CompletedProcess[str], code: int | None = None) -> list[str]:
    assert proc.returncode != 0 and (code is None or proc.returncode == code), f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return [line for line in proc.stderr.splitlines() if line.startswith("cuberun: error:")]


# ------------------------------------------------------------------------------------------ hello_world


def test_hello_world_runs_unmodified(cli: CLI, tmp_path: Path) -> None:
    cube = copy_cube("hello_world", tmp_path)
    proc = ok(cli("run", f"--mlcube={cube}", "--task=hello,bye"))
    lines = (cube / "workspace" / "chats" / "chat_with_alice.txt").read_text().splitlines()
    assert [line.split("]  ", 1)[1] for line in lines] == ["Hi, Alice! Nice to meet you.", "Bye, Alice! It was great talking to you."]
    # one warning lists the system packages; nothing but the requirements reached pip
    [warning] = [line for line in proc.stderr.splitlines() if "system packages" in line]
    assert warning.endswith("software-properties-common, python3-dev, curl")
    runs = records(cube / "workspace")
    assert [(r["task"], r["status"]) for r in runs] == [("hello", "succeeded"), ("bye", "succeeded")]
    assert runs[0]["command"][1:3] == [str(cube / "hello_world.py"), "hello"]
    assert runs[0]["steps"][-1]["env"]["LANG"] == "C.UTF-8"


# ------------------------------------------------------------------------------------------ getting-started


BOSTON_HEADER = "".join(f"header line {i}\n" for i in range(22))


def boston_raw(rows: int = 40) -> str:
    out = []
    for i in range(rows):
        values = [0.01 * i, 18.0, 2.31, 0.0, 0.538, 6.0 + i % 3, 65.2, 4.09, 1.0, 296.0, 15.3, 396.9, 4.98 + i % 5, 20.0 + i % 7]
        out.append(" ".join(f"{v:.4f}" for v in values[:11]))
        out.append(" ".join(f"{v:.4f}" for v in values[11:]))
    return BOSTON_HEADER + "\n".join(out) + "\n"


def test_getting_started_with_relaxed_pins(cli: CLI, tmp_path: Path) -> None:
    cube = copy_cube("getting_started", tmp_path) / "mlcube"
    served = tmp_path / "served"
    served.mkdir()
    (served / "boston").write_text(boston_raw())
    with serve_directory(served) as (url, requests):
        (cube / "workspace" / "parameters.yaml").write_text(f'dataset_url: "{url}/boston"\nn_estimators: "500"\n')
        proc = ok(cli("run", f"--mlcube={cube}", "--task=download_data,preprocess_data,train", "--relax-pins", env=LOOPBACK))
    assert requests == ["/boston"]
    assert "TRAIN RMSE:" in proc.stdout
    processed = (cube / "workspace" / "data" / "processed_dataset.csv").read_text().splitlines()
    assert processed[0].startswith("CRIM,ZN") and len(processed) == 41
    runs = records(cube / "workspace")
    assert [r["task"] for r in runs] == ["download_data", "preprocess_data", "train"]
    relaxed = {r["requirement"]: r for r in runs[0]["details"]["relaxed_pins"]}
    assert set(relaxed) == {"pandas==1.1.3", "numpy==1.19.5", "PyYAML==5.4.1"}  # requests==2.25.1 has a build: kept
    assert relaxed["pandas==1.1.3"]["relaxed_to"] == "pandas>=1.1.3,<2" and relaxed["pandas==1.1.3"]["installed"].startswith("1.")
    assert relaxed["numpy==1.19.5"]["installed"].startswith("1.")
    assert relaxed["pandas==1.1.3"]["where"] == "requirements.txt:1"
    # the task entrypoints ran with the task name dropped, in the image's WORKDIR (/, where COPY . . put the project)
    assert runs[0]["command"][1:] == ["01_download_dataset.py", f"--parameters_file={cube / 'workspace' / 'parameters.yaml'}",
                                      f"--data_dir={cube / 'workspace' / 'data'}"]
    assert runs[0]["steps"][-1]["cwd"] == str(cube.parent / "project")


# ------------------------------------------------------------------------------------------ mnist_fl


def tiny_mnist(path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(1)

    def split(n: int) -> tuple[Any, Any]:
        y = rng.integers(0, 10, n)
        x = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(y):
            x[i, label * 2 : label * 2 + 3, :] = 250
        return x, y

    x_train, y_train = split(300)
    x_test, y_test = split(100)
    buffer = io.BytesIO()
    np.savez(buffer, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    path.write_bytes(buffer.getvalue())


def test_mnist_fl_download_train_twice_resuming_then_evaluate(cli: CLI, tmp_path: Path) -> None:
    cube = copy_cube("mnist_fl", tmp_path)
    ws = cube / "workspace"
    served = tmp_path / "served"
    served.mkdir()
    tiny_mnist(served / "mnist.npz")
    with serve_directory(served) as (url, requests):
        ok(cli("run", f"--mlcube={cube}", "--task=download", "--relax-pins", env={**LOOPBACK, "MNIST_FL_URL": f"{url}/mnist.npz"}))
    assert requests == ["/mnist.npz"]
    # first train: model_in (its own output model/) does not exist yet: created empty, not an error
    ok(cli("run", f"--mlcube={cube}", "--task=train", "--relax-pins"))
    assert json.loads((ws / "metrics" / "train_metrics.json").read_text())["epochs_done"] == 1
    skipped = ok(cli("run", f"--mlcube={cube}", "--task=train", "--relax-pins"))
    assert "skipping task 'train'" in skipped.stderr and "input model_in is the task's own output" in skipped.stderr
    resumed = ok(cli("run", f"--mlcube={cube}", "--task=train", "--relax-pins", "--force", "--no-deps"))
    assert "resuming from" in resumed.stdout
    assert json.loads((ws / "metrics" / "train_metrics.json").read_text())["epochs_done"] == 2
    # evaluate: train is its inferred dependency, and up to date: it must not train once more
    first = ok(cli("run", f"--mlcube={cube}", "--task=evaluate", "--relax-pins"))
    assert "skipping task 'train'" in first.stderr and "skipping task 'download'" in first.stderr
    metrics = json.loads((ws / "metrics" / "evaluate_metrics.json").read_text())
    assert metrics["epochs_done"] == 2 and float(metrics["accuracy"]) > 0.5
    ok(cli("run", f"--mlcube={cube}", "--task=evaluate", "--relax-pins", "--force", "--no-deps"))
    assert json.loads((ws / "metrics" / "evaluate_metrics.json").read_text()) == metrics
    runs = records(ws)
    assert [r["task"] for r in runs] == ["download", "train", "train", "evaluate", "evaluate"]
    assert all(r["status"] == "succeeded" for r in runs)
    relaxed = {r["requirement"] for r in runs[0]["details"]["relaxed_pins"]}
    assert "numpy==1.19.5" in relaxed and "wget==3.2" not in relaxed  # wget has no wheel at all: built from source, not relaxed


# ------------------------------------------------------------------------------------------ fets


def fets_case(root: Path, name: str, level: int) -> None:
    case = root / name
    case.mkdir(parents=True)
    for i, modality in enumerate(("t1", "t1ce", "t2", "flair")):
        voxels = bytes(min(255, level + 10 * i + (v % 50)) for v in range(64))
        (case / f"{name}_brain_{modality}.nii.gz").write_bytes(gzip.compress(voxels, mtime=0))


def test_fets_model_with_null_defaults_and_a_directory_for_a_file_parameter(cli: CLI, tmp_path: Path) -> None:
    root = copy_cube("fets_model", tmp_path)
    cube, ws = root / "mlcube", root / "mlcube" / "workspace"
    fets_case(ws / "data", "Patient_001", 20)
    fets_case(ws / "data", "Patient_002", 200)
    # as published: the "null" inputs are passed on, with a warning; the program's own defaults are
    # paths inside the image, which do not exist on the host
    plain = cli("run", f"--mlcube={cube}", "--task=infer")
    assert plain.returncode != 0
    assert "input 'checkpoint_path' is \"null\" (not given)" in plain.stderr and "checkpoint_path=PATH" in plain.stderr
    # the fewest options: both given, one of them a directory for a `type: file` parameter
    project = root / "project"
    proc = ok(cli("run", f"--mlcube={cube}", "--task=infer", f"checkpoint_path={project / 'model_ckpts'}",
                  f"parameters_file={project / 'parameters.yaml'}"))
    assert "segmented Patient_001" in proc.stdout and "segmented Patient_002" in proc.stdout
    outputs = sorted(p.name for p in (ws / "output").iterdir())
    assert outputs == ["Patient_001.nii.gz", "Patient_002.nii.gz"]
    assert sum(gzip.decompress((ws / "output" / "Patient_002.nii.gz").read_bytes())) > sum(gzip.decompress((ws / "output" / "Patient_001.nii.gz").read_bytes()))
    record = records(ws)[-1]
    assert record["parameters"]["checkpoint_path"] == {"io": "input", "type": "file", "path": str(project / "model_ckpts")}


def test_fets_preprocessing_tasks_and_an_honest_outcome(cli: CLI, tmp_path: Path) -> None:
    cube = copy_cube("fets_preprocessing", tmp_path) / "mlcube"
    ws = cube / "workspace"
    ok(cli("run", f"--mlcube={cube}", "--task=sanity_check"))
    ok(cli("run", f"--mlcube={cube}", "--task=statistics"))
    assert yaml.safe_load((ws / "statistics.yaml").read_text()) == {"Valid_Subjects": 1, "Invalid_Subjects": 0}
    # prepare: labels.csv is missing on purpose; its wrapper runs /workspace/run.sh (inside the image) and
    # ignores the exit code: exit 0, nothing written
    proc = ok(cli("run", f"--mlcube={cube}", "--task=prepare", "--allow-missing-inputs"))
    assert "exited 0 without writing its declared output: output_path" in proc.stderr
    assert "finished with warnings (prepare: succeeded-with-warnings)" in proc.stderr
    record = records(ws)[-1]
    assert record["status"] == "succeeded-with-warnings" and record["exit_code"] == 0 and record["warnings"]
    again = cli("run", f"--mlcube={cube}", "--task=prepare", "--allow-missing-inputs", "--strict-outputs")
    [line] = failed(again, 1)
    assert "exited 0 without writing its declared output" in line and "--strict-outputs" in line
    assert records(ws)[-1]["status"] == "failed"


# ------------------------------------------------------------------------------------------ medperf HelloWorld


def test_medperf_hello_world_prepare_infer_evaluate(cli: CLI, tmp_path: Path) -> None:
    root = copy_cube("medperf_hello_world", tmp_path)
    prep, model, evaluator = (root / n / "mlcube" for n in ("data_preparator", "model", "evaluator"))
    expected = {
        "statistics": (prep / "workspace" / "statistics.yaml").read_bytes(),
        "predictions": (model / "workspace" / "predictions" / "predictions.csv").read_bytes(),
        "results": (evaluator / "workspace" / "results.yaml").read_bytes(),
    }
    for path in (prep / "workspace" / "statistics.yaml", model / "workspace" / "predictions" / "predictions.csv", evaluator / "workspace" / "results.yaml"):
        path.unlink()
    shutil.rmtree(model / "workspace" / "data")
    # the data preparator: apt-get installs python3-pip and python3.8: never a pip requirement
    shown = yaml.safe_load(ok(cli("show-config", f"--mlcube={prep}", "--platform=local")).stdout)["runner"]["derived"]
    assert shown["requirements"] == [str(root / "data_preparator" / "project" / "requirements.txt")]
    assert shown["packages"] == ["pip"] and "python3.8" in shown["system_packages_not_installed"]
    assert shown["command"] == ["python3", "mlcube.py"] and shown["workdir"] == str(root / "data_preparator" / "project")
    ok(cli("run", f"--mlcube={prep}", "--task=prepare,sanity_check,statistics"))
    assert (prep / "workspace" / "statistics.yaml").read_bytes() == expected["statistics"]
    # the model, on the prepared data
    ok(cli("run", f"--mlcube={model}", "--task=infer", f"data_path={prep / 'workspace' / 'data'}"))
    assert (model / "workspace" / "predictions" / "predictions.csv").read_bytes() == expected["predictions"]
    # the evaluator pins PyYAML~=5.3, which has no build for this Python: one line says so, with the options
    args = (f"--mlcube={evaluator}", "--task=evaluate", f"predictions={model / 'workspace' / 'predictions'}", f"labels={prep / 'workspace' / 'data'}")
    [line] = failed(cli("run", *args), 125)
    assert "cannot build the Python environment: PyYAML~=5.3 (requirements.txt:1) has no build for Python 3.11" in line
    assert "--relax-pins" in line and "-Plocal.python=3.6 (the image's Python; found: Python 3.6" in line
    again = cli("run", *args)  # remembered: not built again
    assert failed(again, 125)[0].startswith(line.split(" (remembered")[0].split(". Hint")[0])
    assert "remembered from the attempt" in again.stderr and "creating Python environment" not in again.stderr
    proc = ok(cli("run", *args, "-Plocal.python=3.6"))
    assert "using Python 3.6" in proc.stderr
    assert (evaluator / "workspace" / "results.yaml").read_bytes() == expected["results"]
    assert records(evaluator / "workspace")[-1]["details"]["python"].startswith("3.6")


# ------------------------------------------------------------------------------------------ chestxray


def test_chestxray_prep_and_metrics_on_the_images_python(cli: CLI, tmp_path: Path) -> None:
    root = copy_cube("chestxray_tutorial", tmp_path)
    prep, metrics = root / "data_preparator" / "mlcube", root / "metrics" / "mlcube"
    ws = prep / "workspace"
    # on this Python, typer==0.9.0 meets today's click: the task fails, and the message names the way out
    [line] = failed(cli("run", f"--mlcube={prep}", "--task=prepare"))
    assert "its image runs Python 3.9" in line and "Hint: try -Plocal.python=3.9" in line
    shutil.rmtree(ws / "data")
    shutil.rmtree(ws / "labels")
    ok(cli("run", f"--mlcube={prep}", "--task=prepare,sanity_check,statistics", "-Plocal.python=3.9"))
    assert sorted(p.name for p in (ws / "data").iterdir()) == [f"img{i}.npy" for i in range(6)]
    stats = yaml.safe_load((ws / "statistics.yaml").read_text())
    assert stats["num_cases"] == 6 and stats["labels_count"]["cardiomegaly"] == 2 and stats["labels_count"]["pneumonia"] == 0
    import numpy as np

    predictions = {f"img{i}": np.load(ws / "labels" / f"img{i}.npy").astype(float).tolist() for i in range(6)}
    (metrics / "workspace" / "predictions").mkdir()
    (metrics / "workspace" / "predictions" / "predictions.json").write_text(json.dumps(predictions))
    ok(cli("run", f"--mlcube={metrics}", "--task=evaluate", f"labels={ws / 'labels'}", "-Plocal.python=3.9"))
    results = yaml.safe_load((metrics / "workspace" / "results.yaml").read_text())
    assert results["Accuracy"] == 1.0 and results["AUC"] > 0


# ------------------------------------------------------------------------------------------ MLBox


def test_mlbox_hello_world_with_its_docker_implementation_file(cli: CLI, tmp_path: Path) -> None:
    box = copy_cube("mlbox_hello_world", tmp_path)
    ok(cli("run", f"--mlcube={box}", "--task=hello,goodbye"))
    assert (box / "workspace" / "alice_bye.txt").read_text() == "Hello, Alice! Goodbye, Alice!\n"
    shown = yaml.safe_load(ok(cli("show-config", f"--mlcube={box}", "--platform=docker")).stdout)
    assert shown["docker"]["image"] == "mlperf/mlbox-hello-world:0.1"


# ------------------------------------------------------------------------------------------ smaller items


def test_dry_run_prints_commands_with_inputs_missing(cli: CLI, tmp_path: Path) -> None:
    cube = copy_cube("medperf_hello_world", tmp_path) / "model" / "mlcube"
    shutil.rmtree(cube / "workspace" / "data")
    proc = ok(cli("run", f"--mlcube={cube}", "--task=infer", "--dry-run", "-Plocal.env=current"))
    assert proc.stdout.strip().endswith(f"--output_path={cube / 'workspace' / 'predictions'}")
    assert f"input 'data_path': {cube / 'workspace' / 'data'} does not exist" in proc.stderr


def test_overrides_of_an_inferred_dependency_are_accepted(cli: CLI, tmp_path: Path) -> None:
    shutil.copytree(REPO / "examples" / "mnist", tmp_path / "mnist")
    proc = ok(cli("run", f"--mlcube={tmp_path / 'mnist'}", "--task=train", "data_config=other.yaml", "--dry-run"))
    assert f"--data_config={tmp_path / 'mnist' / 'workspace' / 'other.yaml'}" in proc.stdout


def test_validate_reports_cubes_the_host_cannot_launch(cli: CLI, tmp_path: Path) -> None:
    cube = copy_cube("hello_world", tmp_path)
    ok(cli("validate", f"--mlcube={cube}", "--platform=local"))
    dockerfile = cube / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace("COPY hello_world.py /workspace/", "COPY hello_world.py /opt/app/"))
    proc = cli("validate", f"--mlcube={cube}", "--platform=local")
    lines = failed(proc, 2)
    assert len(lines) == 2 and "task 'hello' cannot run on the host: ENTRYPOINT at Dockerfile:" in lines[0]
    assert "names /workspace/hello_world.py, a path inside the image that no COPY line of Dockerfile provides" in lines[0]
    run = cli("run", f"--mlcube={cube}", "--task=hello")
    assert failed(run, 2)[0].startswith("cuberun: error: task 'hello' has no entrypoint and ENTRYPOINT at Dockerfile:")
    assert not (cube / "workspace" / ".cuberun").exists()  # nothing ran


@pytest.mark.parametrize("name", ["hello_world", "getting_started/mlcube", "mnist_fl", "fets_model/mlcube", "fets_preprocessing/mlcube",
                                  "medperf_hello_world/data_preparator/mlcube", "medperf_hello_world/model/mlcube",
                                  "medperf_hello_world/evaluator/mlcube", "chestxray_tutorial/data_preparator/mlcube",
                                  "chestxray_tutorial/metrics/mlcube", "mlbox_hello_world"])
def test_every_recreated_cube_validates_for_the_host(cli: CLI, tmp_path: Path, name: str) -> None:
    top, _, rest = name.partition("/")
    ok(cli("validate", f"--mlcube={copy_cube(top, tmp_path) / rest}", "--platform=local"))
