"""`cuberun export backendai --build` with the real Docker engine (scripts/backends/up.sh).

The hello_world example is built FROM the locally imported base (localhost/cuberun-base:bookworm,
Debian 12 with /usr/bin/python3), the kernel image is derived from it in the same command, and
its labels are read back with `docker inspect`: every required ai.backend label is there, with
the values read from the image (base distro debian12, runtime path /usr/bin/python3). Images
carry a per-session `localhost/cuberun-bai-<hex>/` prefix and are removed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends import client_env, require_backend

REPO = Path(__file__).resolve().parents[2]
SESSION = uuid.uuid4().hex[:8]
REQUIRED = ("ai.backend.kernelspec", "ai.backend.features", "ai.backend.base-distro", "ai.backend.resource.min.cpu",
            "ai.backend.resource.min.mem", "ai.backend.runtime-type", "ai.backend.runtime-path")


class Docker:
    def __init__(self, base: str, env: dict[str, str]) -> None:
        self.base = base
        self.env = env
        self.images: list[str] = []

    def tag(self, name: str) -> str:
        tag = f"localhost/cuberun-bai-{SESSION}/{name}"
        self.images.append(tag)
        return tag

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True, timeout=300, check=False)
        if check:
            assert proc.returncode == 0, f"docker {args}: {proc.stderr}"
        return proc

    def labels(self, image: str) -> dict[str, str]:
        proc = self.docker("image", "inspect", "--format", "{{json .Config.Labels}}", image)
        return dict(json.loads(proc.stdout) or {})

    def cuberun(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cuberun", *args], env=self.env, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Docker]:
    details = require_backend("docker")
    tmp = tmp_path_factory.mktemp("backendai-image")
    env = client_env("docker")
    env["CUBERUN_SETTINGS"] = str(tmp / "settings.yaml")
    env["MLCUBE_SYSTEM_SETTINGS"] = str(tmp / "mlcube-settings.yaml")
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    docker = Docker(str(details["base_image"]), env)
    yield docker
    for image in reversed(docker.images):
        docker.docker("rmi", "-f", image, check=False)
    leftovers = docker.docker("ps", "-a", "-q", "--filter", f"ancestor=localhost/cuberun-bai-{SESSION}", check=False).stdout.split()
    for container in leftovers:
        docker.docker("rm", "-f", container, check=False)


@pytest.mark.docker
def test_exported_image_carries_every_required_label(engine: Docker, tmp_path: Path) -> None:
    cube = tmp_path / "hello_world"
    shutil.copytree(REPO / "examples" / "hello_world", cube, ignore=shutil.ignore_patterns(".cuberun", "__pycache__"))
    image = engine.tag("hello_world:0.1")
    kernel = engine.tag("hello_world:0.1-backendai")
    params = [f"-Pdocker.image={image}", "-Pdocker.build_strategy=auto", f"-Pdocker.build_args.BASE_IMAGE={engine.base}"]
    proc = engine.cuberun("export", "backendai", f"--mlcube={cube}", *params, "--build")  # builds the cube image, then the kernel image
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == kernel
    labels = engine.labels(kernel)
    missing = [k for k in REQUIRED if k not in labels]
    assert not missing, labels
    assert labels["ai.backend.base-distro"] == "debian12"
    assert labels["ai.backend.runtime-path"] == "/usr/bin/python3"
    assert labels["ai.backend.kernelspec"] == "1"
    assert labels["ai.backend.features"] == "batch uid-match" and labels["ai.backend.runtime-type"] == "app"
    assert labels["ai.backend.resource.min.cpu"] == "1" and labels["ai.backend.resource.min.mem"] == "1g"
    assert labels["ai.backend.envs.corecount"] == "OPENBLAS_NUM_THREADS,OMP_NUM_THREADS,NPROC"
    recipe = (cube / "Dockerfile.backendai").read_text()
    assert f"FROM {image}\n" in recipe and 'ai.backend.base-distro="debian12"' in recipe
    assert "(/etc/os-release of" in proc.stderr and "(the python of" in proc.stderr
    # the image still runs the cube's entrypoint (the agent ignores it; docker does not)
    run = engine.docker("run", "--rm", "--network", "none", "--entrypoint", "python3", kernel, "-c", "print('ok')")
    assert run.stdout.strip() == "ok"
    # explicit flags win over what the image says; the image's own labels are kept as the base
    proc = engine.cuberun("export", "backendai", f"--mlcube={cube}", *params, "--build", "--runtime-type=python", "--gpu=1",
                          "--min-mem=4g", f"--tag={engine.tag('hello_world:flags')}", "--output=-")
    assert proc.returncode == 0, proc.stderr
    labels = engine.labels(engine.images[-1])
    assert labels["ai.backend.features"] == "batch query uid-match user-input" and labels["ai.backend.runtime-type"] == "python"
    assert labels["ai.backend.resource.min.cuda.device"] == "1" and labels["ai.backend.accelerators"] == "cuda"
    assert labels["ai.backend.resource.min.mem"] == "4g" and labels["ai.backend.base-distro"] == "debian12"


@pytest.mark.docker
def test_rewritten_dockerfile_builds_with_labels(engine: Docker, tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("print('hi')\n")
    (tmp_path / "Dockerfile").write_text(
        f"ARG BASE={engine.base}\n"
        "FROM ${BASE} AS base\n"
        'LABEL ai.backend.kernelspec="1"\n'
        "FROM base\n"
        "# the program\n"
        "COPY app.py /app/app.py\n"
        'LABEL maintainer="cuberun tests" \\\n'
        "      ai.backend.base-distro=ubuntu16.04\n"
        'ENTRYPOINT ["python3", "/app/app.py"]\n'
    )
    tag = engine.tag("rewritten:1")
    out = tmp_path / "Dockerfile.backendai"
    proc = engine.cuberun("export", "backendai", f"--dockerfile={tmp_path / 'Dockerfile'}", f"--output={out}", "--build", f"--tag={tag}",
                          "--base-distro=debian12")
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert text.count("ai.backend.base-distro") == 1 and "ai.backend.base-distro=\"debian12\"" in text
    assert text.count("ai.backend.kernelspec") == 1  # inherited from the `base` stage, not added again
    labels = engine.labels(tag)
    assert not [k for k in REQUIRED if k not in labels], labels
    assert labels["ai.backend.base-distro"] == "debian12" and labels["maintainer"] == "cuberun tests"
    assert labels["ai.backend.runtime-path"] == "/usr/bin/python3"  # read from the base image
