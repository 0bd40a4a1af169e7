"""The re-created third-party cubes on the docker platform, with locally built images.

The originals' base images no longer build offline, so each image is built FROM the project's
base image (`localhost/cuberun-base:bookworm`, plus their packages in one shared layer) with the
original Dockerfile's own COPY/ADD, WORKDIR, ENV and ENTRYPOINT lines: the same paths inside the
image, tagged with the cube's exact `docker.image`. Builds use `--network host` (for pip);
containers run with `--network none`; the downloads join the network namespace of a
loopback-only HTTP server in a `--network none` container. The images are removed at the end
(the shared layer is kept).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.test_docker_runner import Engine, _env, ok
from tests.integration.test_thirdparty_local import DATA, boston_raw, copy_cube, fets_case, tiny_mnist

try:
    from tests.backends import require_backend
except ModuleNotFoundError:  # pragma: no cover
    raise

# the originals' base images also have `python` (python:3.x), which Debian's python3 does not
DEPS = ("RUN python3 -m pip install --no-cache-dir --break-system-packages typer pandas requests wget pillow tqdm"
        " && ln -s /usr/bin/python3 /usr/local/bin/python\n")
KEPT = ("COPY", "ADD", "WORKDIR", "ENV", "ENTRYPOINT", "CMD", "ARG")


@pytest.fixture(scope="module")
def docker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    details = require_backend("docker")
    tmp = tmp_path_factory.mktemp("thirdparty-docker")
    engine = Engine("docker", "docker", str(details["base_image"]), _env("docker", tmp), tmp)
    yield engine
    engine.cleanup()


def deps_image(engine: Engine) -> str:
    """typer and pandas over the base image, kept between sessions (keyed by its recipe)."""
    recipe = f"FROM {engine.base}\n{DEPS}"
    tag = f"localhost/cuberun-thirdparty-deps:{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"
    if engine.image_id(tag) is None:
        ctx = engine.tmp / "deps"
        ctx.mkdir(exist_ok=True)
        (ctx / "Dockerfile").write_text(recipe)
        engine.cli("build", "--network", "host", "-t", tag, str(ctx), timeout=900)
    return tag


def build_like_the_original(engine: Engine, cube: Path) -> str:
    """An image with the original Dockerfile's paths, WORKDIR, ENV and ENTRYPOINT, tagged with the
    cube's docker.image; its RUN lines (apt, pip) are replaced by the shared deps layer."""
    spec = yaml.safe_load((cube / "mlcube.yaml").read_text()) if (cube / "mlcube.yaml").is_file() else None
    if spec is None:  # MLBox: mlbox_docker.yaml and build/
        image, context = yaml.safe_load((cube / "mlbox_docker.yaml").read_text())["image"], cube / "build"
    else:
        image, context = spec["docker"]["image"], cube / spec["docker"].get("build_context", ".")
    original = (context / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", original)
    kept = [line for line in joined.splitlines() if line.split(" ", 1)[0].upper() in KEPT]
    (context / "Dockerfile.cuberun-test").write_text(f"FROM {deps_image(engine)}\n" + "\n".join(kept) + "\n")
    before = engine.image_id(image)
    if before:
        engine.restore[image] = before
    engine.images.append(image)
    engine.cli("build", "--network", "none", "-t", image, "-f", str(context / "Dockerfile.cuberun-test"), str(context), timeout=300)
    return image


@contextlib.contextmanager
def loopback_server(engine: Engine, served: Path) -> Iterator[str]:
    """An HTTP server on 127.0.0.1:8000 in a container without network; yields its name (tasks
    reach it with --network=container:NAME)."""
    name = f"cuberun-it-http-{uuid.uuid4().hex[:8]}"
    engine.cli("run", "-d", "--rm", "--name", name, "--network", "none", "-v", f"{served}:/srv:ro", "-w", "/srv", engine.base,
               "python3", "-m", "http.server", "8000", "--bind", "127.0.0.1")
    try:
        probe = ("import time, urllib.request as u\nfor _ in range(100):\n    try:\n        u.urlopen('http://127.0.0.1:8000/'); break\n"
                 "    except OSError:\n        time.sleep(0.2)\nelse:\n    raise SystemExit('no server')\n")
        engine.cli("exec", name, "python3", "-c", probe, timeout=60)
        yield name
    finally:
        engine.cli("rm", "-f", name, check=False)


def run(engine: Engine, cube: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return ok(engine.cuberun("run", f"--mlcube={cube}", "--platform=docker", "--network=none", *args))


@pytest.mark.docker
def test_hello_world_and_mlbox_in_docker(docker: Engine, tmp_path: Path) -> None:
    cube = copy_cube("hello_world", tmp_path)
    build_like_the_original(docker, cube)
    run(docker, cube, "--task=hello,bye")
    lines = (cube / "workspace" / "chats" / "chat_with_alice.txt").read_text().splitlines()
    assert [line.split("]  ", 1)[1] for line in lines] == ["Hi, Alice! Nice to meet you.", "Bye, Alice! It was great talking to you."]
    box = copy_cube("mlbox_hello_world", tmp_path)
    build_like_the_original(docker, box)
    run(docker, box, "--task=hello,goodbye")
    assert (box / "workspace" / "alice_bye.txt").read_text() == "Hello, Alice! Goodbye, Alice!\n"


@pytest.mark.docker
def test_medperf_hello_world_end_to_end_in_docker(docker: Engine, tmp_path: Path) -> None:
    root = copy_cube("medperf_hello_world", tmp_path)
    prep, model, evaluator = (root / n / "mlcube" for n in ("data_preparator", "model", "evaluator"))
    expected = {p: p.read_bytes() for p in (prep / "workspace" / "statistics.yaml", model / "workspace" / "predictions" / "predictions.csv",
                                               evaluator / "workspace" / "results.yaml")}
    for path in expected:
        path.unlink()
    for cube in (prep, model, evaluator):
        build_like_the_original(docker, cube)
    run(docker, prep, "--task=prepare,sanity_check,statistics")
    run(docker, model, "--task=infer", f"data_path={prep / 'workspace' / 'data'}")
    run(docker, evaluator, "--task=evaluate", f"predictions={model / 'workspace' / 'predictions'}", f"labels={prep / 'workspace' / 'data'}")
    for path, content in expected.items():
        assert path.read_bytes() == content, path


@pytest.mark.docker
def test_fets_in_docker_null_defaults_use_the_image(docker: Engine, tmp_path: Path) -> None:
    root = copy_cube("fets_model", tmp_path)
    cube, ws = root / "mlcube", root / "mlcube" / "workspace"
    fets_case(ws / "data", "Patient_001", 20)
    fets_case(ws / "data", "Patient_002", 200)
    build_like_the_original(docker, cube)
    proc = run(docker, cube, "--task=infer")  # "null": the program's fallbacks exist inside the image
    assert "using /mlcube_project/model_ckpts" in proc.stdout
    assert sorted(p.name for p in (ws / "output").iterdir()) == ["Patient_001.nii.gz", "Patient_002.nii.gz"]
    pre = copy_cube("fets_preprocessing", tmp_path) / "mlcube"
    build_like_the_original(docker, pre)
    run(docker, pre, "--task=prepare", "--allow-missing-inputs")  # /workspace/run.sh exists in the image
    assert (pre / "workspace" / "results" / "output.nii.gz").read_bytes() == (pre / "workspace" / "data" / "BraTS_example_seg.nii.gz").read_bytes()
    run(docker, pre, "--task=sanity_check,statistics")
    assert yaml.safe_load((pre / "workspace" / "statistics.yaml").read_text()) == {"Valid_Subjects": 1, "Invalid_Subjects": 0}


def test_recipes_keep_the_originals_paths() -> None:
    """The test images' recipes keep every COPY/WORKDIR/ENTRYPOINT line of the originals."""
    original = (DATA / "medperf_hello_world" / "evaluator" / "project" / "Dockerfile").read_text()
    kept = [line for line in original.splitlines() if line.split(" ", 1)[0] in KEPT]
    assert kept == ["COPY ./requirements.txt project/requirements.txt ", "ENV LANG C.UTF-8", "COPY . /project", "WORKDIR /project",
                    'ENTRYPOINT ["python3", "mlcube.py"]']
    assert shutil.which("python3")


@pytest.mark.docker
def test_getting_started_mnist_fl_and_chestxray_in_docker(docker: Engine, tmp_path: Path) -> None:
    import json

    import numpy as np

    served = tmp_path / "served"
    served.mkdir()
    (served / "boston").write_text(boston_raw())
    tiny_mnist(served / "mnist.npz")
    gs = copy_cube("getting_started", tmp_path) / "mlcube"
    fl = copy_cube("mnist_fl", tmp_path)
    build_like_the_original(docker, gs)
    build_like_the_original(docker, fl)
    with loopback_server(docker, served) as server:
        url = "http://127.0.0.1:8000"
        (gs / "workspace" / "parameters.yaml").write_text(f'dataset_url: "{url}/boston"\n')
        ok(docker.cuberun("run", f"--mlcube={gs}", "--platform=docker", f"--network=container:{server}", "--task=download_data"))
        ok(docker.cuberun("run", f"--mlcube={fl}", "--platform=docker", f"--network=container:{server}", "--task=download",
                          f"-Pdocker.env_args.MNIST_FL_URL={url}/mnist.npz"))
    assert (gs / "workspace" / "data" / "raw_dataset.txt").read_text() == boston_raw()
    assert (fl / "workspace" / "data" / "mnist.npz").read_bytes() == (served / "mnist.npz").read_bytes()
    # --no-deps: the downloads ran with another --network, which is part of their command (not up to date)
    proc = run(docker, gs, "--task=preprocess_data,train", "--no-deps")
    assert "TRAIN RMSE:" in proc.stdout
    run(docker, fl, "--task=train", "--no-deps")
    run(docker, fl, "--task=train", "--force", "--no-deps")  # resumes from its own checkpoint
    run(docker, fl, "--task=evaluate", "--no-deps")
    assert json.loads((fl / "workspace" / "metrics" / "evaluate_metrics.json").read_text())["epochs_done"] == 2

    root = copy_cube("chestxray_tutorial", tmp_path)
    prep, metrics = root / "data_preparator" / "mlcube", root / "metrics" / "mlcube"
    build_like_the_original(docker, prep)
    build_like_the_original(docker, metrics)
    run(docker, prep, "--task=prepare,sanity_check,statistics")
    labels = prep / "workspace" / "labels"
    assert yaml.safe_load((prep / "workspace" / "statistics.yaml").read_text())["num_cases"] == 6
    predictions = {f"img{i}": np.load(labels / f"img{i}.npy").astype(float).tolist() for i in range(6)}
    (metrics / "workspace" / "predictions").mkdir()
    (metrics / "workspace" / "predictions" / "predictions.json").write_text(json.dumps(predictions))
    run(docker, metrics, "--task=evaluate", f"labels={labels}")
    assert yaml.safe_load((metrics / "workspace" / "results.yaml").read_text())["Accuracy"] == 1.0
