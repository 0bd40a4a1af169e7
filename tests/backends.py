"""Access to the real test backends started by ``scripts/backends/up.sh``.

``up.sh`` (run as root) writes ``$CUBERUN_TEST_STATE/backends.json`` (default state dir
``/tmp/cuberun-test-state``) with one entry per backend::

    {"docker": {"ok": true, "reason": "", "docker_host": "unix://...", "base_image": "..."},
     "slurm":  {"ok": false, "reason": "slurmctld did not come up within 30s", ...}, ...}

Tests call :func:`require_backend` to get a backend's details, or to be skipped with the
reason when it is not available. With ``CUBERUN_REQUIRE_BACKENDS=1`` (CI jobs that did run
``up.sh``) a missing backend fails the test instead of skipping it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NoReturn

import pytest

DEFAULT_STATE_DIR = "/tmp/cuberun-test-state"
BACKENDS = ("docker", "podman", "ssh", "slurm", "charliecloud", "registry", "apptainer", "htcondor", "gpu", "slurm-multi", "backendai", "k8s")
UP_SCRIPT = "scripts/backends/up.sh"


def state_dir() -> Path:
    """The backends' state directory (``$CUBERUN_TEST_STATE`` or the default)."""
    return Path(os.environ.get("CUBERUN_TEST_STATE") or DEFAULT_STATE_DIR)


def backends_file() -> Path:
    return state_dir() / "backends.json"


def load_backends() -> dict[str, dict[str, Any]] | None:
    """The parsed ``backends.json``, or None when it does not exist or is unreadable.

    Read on every call (it is small), so a run of ``up.sh`` between sessions is seen.
    """
    try:
        data = json.loads(backends_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def backends_required() -> bool:
    return os.environ.get("CUBERUN_REQUIRE_BACKENDS", "").strip() == "1"


def skip_or_fail(reason: str) -> NoReturn:
    """Skip a test whose backend or facility is missing; fail instead under CUBERUN_REQUIRE_BACKENDS=1."""
    if backends_required():
        pytest.fail(f"{reason} (CUBERUN_REQUIRE_BACKENDS=1)", pytrace=False)
    pytest.skip(reason)


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def unavailable_reason(name: str) -> str | None:
    """Why backend ``name`` cannot be used, or None when it is available."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
    path = backends_file()
    if not _is_root():
        return f"backend tests run as root (they start daemons and use root-owned sockets); run `sudo bash {UP_SCRIPT}` and the tests as root"
    data = load_backends()
    if data is None:
        return f"backend {name!r} not set up: no {path}; run `bash {UP_SCRIPT}`"
    entry = data.get(name)
    if not isinstance(entry, dict):
        return f"backend {name!r} is not listed in {path}; run `bash {UP_SCRIPT} {name}`"
    if not entry.get("ok"):
        reason = entry.get("reason") or "no reason recorded"
        return f"backend {name!r} unavailable: {reason}"
    return None


def require_backend(name: str) -> dict[str, Any]:
    """Details of backend ``name`` from ``backends.json``; skips (or fails) when unavailable.

    Details per backend:

    - docker: ``docker_host`` ("unix://..."), ``base_image``
    - podman: ``base_image``
    - ssh: ``ssh_config`` (for ``ssh -F``), ``hosts`` (["cuberun-local", "cuberun-h2"]),
      ``state`` (the ssh state dir), ``identity_file``, ``known_hosts``
    - slurm: ``slurm_conf``, ``partition``
    - charliecloud: ``rootfs`` (a directory for ``ch-run``)
    - registry: ``address`` (127.0.0.1:PORT)
    - apptainer: ``executable`` (the wrapper running the real apptainer), ``sid_root``, ``version``
    - htcondor: ``tool`` (runs an HTCondor tool in the rootfs), ``bin_dir`` (condor_submit etc. as the
      submit user: the runner's htcondor.bin_dir), ``condor_config``, ``submit_user``
    - gpu: ``docker_host``, ``hook_log``, ``probe_image``
    - slurm-multi: ``slurm_conf``, ``partition``, ``nodes``, ``netns``
    - backendai: ``endpoint``, ``client``, ``docker_host``, ``manager_dir``, ``base_image`` (and the keypair in ``env``)
    - k8s: ``kubeconfig``, ``server``, ``docker_host``, ``base_image``, ``version``
    """
    reason = unavailable_reason(name)
    if reason is not None:
        skip_or_fail(reason)
    data = load_backends() or {}
    return dict(data[name])


def backend_env(name: str) -> dict[str, str]:
    """Environment variables a client of backend ``name`` needs (merge into os.environ).

    ``USER`` is always set (ch-run refuses to start without it); docker adds ``DOCKER_HOST``,
    slurm adds ``SLURM_CONF``. Skips (or fails) like :func:`require_backend`.
    """
    details = require_backend(name)
    env: dict[str, str] = {"USER": os.environ.get("USER") or "root"}
    recorded = details.get("env")
    if isinstance(recorded, dict):
        env.update({str(k): str(v) for k, v in recorded.items()})
    if name == "docker" and details.get("docker_host"):
        env["DOCKER_HOST"] = str(details["docker_host"])
    if name == "slurm" and details.get("slurm_conf"):
        env["SLURM_CONF"] = str(details["slurm_conf"])
    return env


def client_env(name: str) -> dict[str, str]:
    """A full environment for a subprocess talking to backend ``name``."""
    return {**os.environ, **backend_env(name)}
