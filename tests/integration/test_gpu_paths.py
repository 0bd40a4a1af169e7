"""GPU requests end to end without a GPU: the docker runner against the private dockerd of
scripts/backends/gpu.sh, which runs with a stand-in `nvidia-container-runtime-hook` on its PATH.

dockerd then takes its real `--gpus` device-request path: it adds the hook to the container's
OCI config with NVIDIA_VISIBLE_DEVICES / NVIDIA_DRIVER_CAPABILITIES, and the stand-in records
that request (one JSON line per container in the backend's hook log) instead of mounting a
driver. So these tests check what the NVIDIA runtime would be asked for by
`cuberun run --gpus=all|N|device=...` (and by a cube's accelerator_count), and what the task
itself sees in CUDA_VISIBLE_DEVICES. Everything goes through the CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.backends import backend_env, require_backend

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.gpu

CUBE = """\
name: gpu_probe
platform:
  accelerator_count: {count}
docker:
  image: {image}
tasks:
  env:
    entrypoint: /bin/sh -c 'for a; do case "$a" in --out=*) env > "$(echo "$a" | cut -d= -f2-)";; esac; done' probe
    parameters:
      outputs: {{out: {{type: file, default: env.txt}}}}
"""


def hook_entries(log: Path, workspace: Path) -> list[dict[str, Any]]:
    """The hook's records of containers that mounted something from `workspace`."""
    found = []
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        if any(str(src).startswith(str(workspace)) for src in entry.get("mounts") or []):
            found.append(entry)
    return found


def run_probe(tmp_path: Path, gpus: str | None, count: int = 0) -> tuple[subprocess.CompletedProcess[str], dict[str, str], list[dict[str, Any]]]:
    details = require_backend("gpu")
    cube = tmp_path / "cube"
    cube.mkdir()
    (cube / "mlcube.yaml").write_text(CUBE.format(count=count, image=details["probe_image"]))
    workspace = cube / "workspace"
    env = {**os.environ, **backend_env("gpu"), "CUBERUN_SETTINGS": str(tmp_path / "settings.yaml"),
           "MLCUBE_SYSTEM_SETTINGS": str(tmp_path / "none.yaml"), "CUBERUN_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": str(REPO / "src")}
    args = [sys.executable, "-m", "cuberun", "run", "--mlcube", str(cube), "--task", "env", "--platform", "docker", "--network=none"]
    if gpus is not None:
        args.append(f"--gpus={gpus}")
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen = dict(line.split("=", 1) for line in (workspace / "env.txt").read_text().splitlines() if "=" in line)
    return proc, seen, hook_entries(Path(details["hook_log"]), workspace)


@pytest.mark.parametrize(
    ("gpus", "nvidia_visible", "cuda_visible"),
    [
        ("all", "all", None),
        ("2", "0,1", None),
        ("device=1,3", "1,3", "0,1"),  # only the two devices exist inside, renumbered from 0
        ("device=GPU-aaaa-bbbb", "GPU-aaaa-bbbb", "0"),
    ],
)
def test_docker_gpus_reach_the_nvidia_runtime(tmp_path: Path, gpus: str, nvidia_visible: str, cuda_visible: str | None) -> None:
    proc, seen, entries = run_probe(tmp_path, gpus)
    assert len(entries) == 1, entries
    assert entries[0]["hook_args"] == ["prestart"]
    assert entries[0]["env"].get("NVIDIA_VISIBLE_DEVICES") == nvidia_visible
    assert seen.get("NVIDIA_VISIBLE_DEVICES") == nvidia_visible
    assert seen.get("CUDA_VISIBLE_DEVICES") == cuda_visible


def test_accelerator_count_of_the_cube_requests_gpus(tmp_path: Path) -> None:
    _, _, entries = run_probe(tmp_path, None, count=1)
    assert [e["env"].get("NVIDIA_VISIBLE_DEVICES") for e in entries] == ["0"]


def test_gpus_zero_makes_no_device_request(tmp_path: Path) -> None:
    _, seen, entries = run_probe(tmp_path, "0", count=2)
    assert entries == []  # the hook never ran: no device request at all
    assert "NVIDIA_VISIBLE_DEVICES" not in seen
