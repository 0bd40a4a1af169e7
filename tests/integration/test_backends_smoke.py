"""Smoke tests: each real backend started by scripts/backends/up.sh answers.

Skipped (with the reason from backends.json) when a backend is not up, or failed with
CUBERUN_REQUIRE_BACKENDS=1. Only loopback and the cuberun-h2 network namespace are
contacted; containers run with --network none.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

try:
    from tests.backends import backend_env, client_env, require_backend
except ModuleNotFoundError:  # pytest run without the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from backends import backend_env, client_env, require_backend  # type: ignore[no-redef]

TIMEOUT = 180


def run(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


@pytest.mark.docker
def test_docker_runs_base_image_without_network() -> None:
    details = require_backend("docker")
    env = client_env("docker")
    assert env["DOCKER_HOST"] == details["docker_host"]
    proc = run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            details["base_image"],
            "python3",
            "-c",
            "import numpy, yaml, socket; print(sorted(n for _, n in socket.if_nameindex()))",
        ],
        env,
    )
    assert proc.stdout.strip() == "['lo']"
    run(["docker", "run", "--rm", "--network", "none", details["base_image"], "true"], env)


@pytest.mark.podman
def test_podman_runs_base_image_without_network() -> None:
    details = require_backend("podman")
    run(
        ["podman", "run", "--rm", "--network", "none", "--pull=never", details["base_image"], "true"],
        client_env("podman"),
    )


@pytest.mark.ssh
@pytest.mark.parametrize("host", ["cuberun-local", "cuberun-h2"])
def test_ssh_host_accepts_key_login(host: str) -> None:
    details = require_backend("ssh")
    assert host in details["hosts"]
    proc = run(["ssh", "-F", details["ssh_config"], host, "true"], client_env("ssh"))
    assert proc.stderr == ""


@pytest.mark.slurm
def test_slurm_batch_job_completes(tmp_path: Path) -> None:
    details = require_backend("slurm")
    env = client_env("slurm")
    assert backend_env("slurm")["SLURM_CONF"] == details["slurm_conf"]
    out = tmp_path / "job.out"
    run(
        ["sbatch", "--wait", "--quiet", f"--partition={details['partition']}", f"--output={out}", "--wrap", "echo cuberun-smoke"],
        env,
        cwd=tmp_path,
    )
    assert out.read_text().strip() == "cuberun-smoke"


@pytest.mark.charliecloud
def test_charliecloud_runs_python_in_rootfs() -> None:
    details = require_backend("charliecloud")
    proc = run(
        ["ch-run", details["rootfs"], "--", "python3", "-c", "print(1)"],
        client_env("charliecloud"),
    )
    assert proc.stdout.strip() == "1"
