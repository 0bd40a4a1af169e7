"""A real image registry on loopback for tests: Debian's `docker-registry` (the Docker
distribution registry), started once per session on 127.0.0.1 with a port in 15100-15199 (kept
out of the ephemeral range by scripts/backends/up.sh; picked by tests.conftest.server_ports),
stopped by its PID at the end.

Docker talks plain HTTP to 127.0.0.0/8 registries by itself; Podman needs `--tls-verify=false`.
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends import skip_or_fail
from tests.conftest import server_ports

EXECUTABLE = "/usr/bin/docker-registry"
PORTS = range(15100, 15200)
READY_POLLS = 300  # x 0.05 s: the registry answers /v2/ within a second when it starts at all
CONFIG = """version: 0.1
storage:
  filesystem:
    rootdirectory: {root}
http:
  addr: 127.0.0.1:{port}
"""


class Registry:
    def __init__(self, port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.port = port
        self.proc = proc
        self.log = log

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"


def _ready(port: int, proc: subprocess.Popen[bytes]) -> bool:
    """Poll GET /v2/ (bounded); False when the registry exited (e.g. the port was taken meanwhile)."""
    for _ in range(READY_POLLS):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        try:
            proc.wait(timeout=0.05)  # the pause between polls, which also notices an exit
            return False
        except subprocess.TimeoutExpired:
            continue
    return False


@pytest.fixture(scope="session", name="registry")
def registry_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    if not Path(EXECUTABLE).is_file() or shutil.which(EXECUTABLE) is None:
        skip_or_fail(f"{EXECUTABLE} is not installed (apt-get install docker-registry)")
    base = tmp_path_factory.mktemp("registry")
    started: Registry | None = None
    for _ in range(3):
        [port] = server_ports(1, PORTS)
        config = base / f"config-{port}.yml"
        config.write_text(CONFIG.format(root=base / "data", port=port), encoding="utf-8")
        log = base / f"registry-{port}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([EXECUTABLE, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if _ready(port, proc):
            started = Registry(port, proc, log)
            break
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    if started is None:
        skip_or_fail("no docker-registry could be started on 127.0.0.1:15100-15199")
    try:
        yield started
    finally:
        started.proc.terminate()
        try:
            started.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            started.proc.kill()
            started.proc.wait(timeout=30)
