"""Shared fixtures: run the real CLI as a subprocess, in an isolated settings/cache setup."""

from __future__ import annotations

import http.server as _http_server
import os
import random
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
# The container_config.yaml of the batch runners' unit tests (k8s, backendai), which add tasks of their own:
# `prepare` with every run_args key and a directory and a file volume of each kind, `plain` without volumes,
# and the GPU forms a scheduler cannot express (`all_gpus`, `some_gpus`).
BATCH_TASKS = (REPO / "tests" / "data" / "medperf_config" / "batch_tasks.yaml").read_text(encoding="utf-8")


@pytest.fixture(scope="session", autouse=True)
def _temp_xdg_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every test (in process, and the CLIs it starts) caches under a temp XDG cache, never the
    real ~/.cache (parse caches, code listings, the secret key). A test that shares managed envs
    sets CUBERUN_CACHE_DIR itself (the cache_dir fixture)."""
    xdg = tmp_path_factory.mktemp("xdg-cache")
    saved = {k: os.environ.get(k) for k in ("XDG_CACHE_HOME", "CUBERUN_CACHE_DIR")}
    os.environ["XDG_CACHE_HOME"] = str(xdg)
    os.environ.pop("CUBERUN_CACHE_DIR", None)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Managed envs are shared by the whole session (creating one costs seconds)."""
    shared = os.environ.get("CUBERUN_TEST_CACHE")
    if shared:
        return Path(shared)
    return tmp_path_factory.mktemp("cuberun-cache")


@pytest.fixture
def cli_env(tmp_path: Path, cache_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        CUBERUN_SETTINGS=str(tmp_path / "settings" / "settings.yaml"),
        MLCUBE_SYSTEM_SETTINGS=str(tmp_path / "no-reference-settings.yaml"),
        CUBERUN_CACHE_DIR=str(cache_dir),
    )
    env.pop("CUBERUN_DEBUG", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # byte-code caching keeps every CLI start-up fast
    return env


CLI = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(cli_env: dict[str, str], tmp_path: Path) -> CLI:
    """Run `python -m cuberun ARGS` for real; returns the completed process (text)."""

    def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        full_env = dict(cli_env)
        if env:
            full_env.update(env)
        return subprocess.run(
            [sys.executable, "-m", "cuberun", *args],
            cwd=str(cwd or tmp_path),
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    return run


@pytest.fixture
def image_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Settings, cache (`tmp_path/cache`) and a temporary directory (`tmp_path/tmp`, where
    decryptions go) of the test's own, for the image-file tests; returns `tmp_path`."""
    import tempfile

    monkeypatch.setenv("CUBERUN_SETTINGS", str(tmp_path / "no-settings.yaml"))
    monkeypatch.setenv("MLCUBE_SYSTEM_SETTINGS", str(tmp_path / "no-mlcube.yaml"))
    monkeypatch.setenv("CUBERUN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", None)
    return tmp_path


def gpg_encrypt(plain: Path, out: Path, passfile: Path) -> None:
    """Encrypt `plain` to `out` (GnuPG symmetric) as an image author would, in a throw-away GnuPG
    home. Encrypting starts a gpg-agent for that home: it is stopped (we started it) before the
    home is removed, and an agent socket that vanishes while the agent exits is not an error."""
    import shutil
    import uuid

    home = out.parent / f"gpghome-{uuid.uuid4().hex[:8]}"
    home.mkdir(mode=0o700)
    subprocess.run(["gpg", "--batch", "--quiet", "--homedir", str(home), "--pinentry-mode", "loopback", "--passphrase-file", str(passfile),
                    "--symmetric", "--output", str(out), str(plain)], check=True, capture_output=True, timeout=300)
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=True, capture_output=True, timeout=60)

    def gone_is_fine(func: object, path: str, exc_info: tuple[type[BaseException], BaseException, object]) -> None:
        if not isinstance(exc_info[1], FileNotFoundError):
            raise exc_info[1]

    shutil.rmtree(home, onerror=gone_is_fine)


def run_records(workspace: Path, platform: str | None = None) -> list[dict[str, Any]]:
    """The run records of a workspace, oldest first, in the order cuberun lists them: the records
    one command created come in the order it created them, even within one millisecond (sorting
    by `start`, or by folder name, which holds the task's name, is not that order)."""
    from cuberun.records import list_runs

    return [r for r in list_runs(workspace, warn=False) if platform is None or r.get("platform") == platform]


# Ports for the servers tests start themselves (a private sshd, slurmctld and slurmd, a second
# Backend.AI manager, the image registry). A port from bind(("127.0.0.1", 0)) lies in the kernel's
# automatic (ephemeral) range and is free only until that socket closes: any outgoing connection
# (a busy machine makes many) may take it before the server binds it. So these come from ports the
# kernel never hands out by itself: outside /proc/sys/net/ipv4/ip_local_port_range, or listed in
# ip_local_reserved_ports. This machine's range is 1024-65535; scripts/backends/up.sh reserves
# 15000-21000, and no backend listens in this block of it.
SERVER_PORTS = range(20500, 21000)


def _port_list(text: str) -> set[int]:
    """ "2222,12379-12381" (the format of ip_local_reserved_ports) as a set of ports."""
    ports: set[int] = set()
    for part in text.replace(" ", "").strip().split(","):
        if part:
            first, _, last = part.partition("-")
            ports.update(range(int(first), int(last or first) + 1))
    return ports


def automatic_ports() -> tuple[range, set[int]]:
    """The kernel's automatic port range and the ports reserved out of it (nothing reserved when
    the file cannot be read)."""
    low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    try:
        reserved = _port_list(Path("/proc/sys/net/ipv4/ip_local_reserved_ports").read_text())
    except OSError:
        reserved = set()
    return range(low, high + 1), reserved


def server_ports(count: int, block: range = SERVER_PORTS) -> list[int]:
    """`count` distinct ports of `block` that the kernel never picks by itself and that are free
    now (a probe bind on every address), in random order so that two test sessions seldom try
    the same. All probes stay open until every port is chosen (ports probed one at a time could
    repeat). Fails with the reason when the block has too few."""
    automatic, reserved = automatic_ports()
    candidates = [port for port in block if port not in automatic or port in reserved]
    if len(candidates) < count:
        pytest.fail(f"only {len(candidates)} ports of {block.start}-{block.stop - 1} are kept out of the kernel's automatic port choice "
                    f"(ip_local_port_range {automatic.start}-{automatic.stop - 1}); a test server needs {count}. Hint: reserve them "
                    f"(scripts/backends/up.sh does), e.g. add {block.start}-{block.stop - 1} to /proc/sys/net/ipv4/ip_local_reserved_ports")
    random.SystemRandom().shuffle(candidates)
    held: list[socket.socket] = []
    try:
        for port in candidates:
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                probe.bind(("", port))
            except OSError:
                probe.close()
                continue
            held.append(probe)
            if len(held) == count:
                return [int(sock.getsockname()[1]) for sock in held]
    finally:
        for sock in held:
            sock.close()
    pytest.fail(f"no {count} free ports in {block.start}-{block.stop - 1} (all but {len(held)} of the {len(candidates)} kept out of "
                "automatic choice are in use)")


def write_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


def image_file_cube(root: Path, kind: str, file: str, name: str | None = None) -> Path:
    """A container_config.yaml cube (one task, hello: echo hi) whose image is the file `file`
    beside it: for a DockerArchive a tar holding only an image's manifest.json, else a few bytes
    (a SingularityFile): enough for the runners that refuse an image file."""
    import io
    import json
    import tarfile

    root.mkdir(parents=True, exist_ok=True)
    if kind == "DockerArchive":
        manifest = json.dumps([{"Config": "a" * 64 + ".json", "RepoTags": ["x:1"], "Layers": []}]).encode()
        with tarfile.open(root / file, "w") as tar:
            info = tarfile.TarInfo("manifest.json")
            info.size = len(manifest)
            tar.addfile(info, io.BytesIO(manifest))
    else:
        (root / file).write_bytes(b"SIF")
    (root / "container_config.yaml").write_text(("" if name is None else f"name: {name}\n")
                                                + f"container_type: {kind}\nimage: {file}\ntasks:\n  hello:\n    run_args: {{command: [echo, hi]}}\n")
    return root


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """A loopback HTTP server of a folder (tmp_path/served), in a thread: (its URL, the folder,
    the paths it was asked for). Shut down and joined at the end."""
    served = tmp_path / "served"
    served.mkdir()
    requests: list[str] = []

    class Handler(_http_server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(served), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            requests.append(self.path)

    httpd = _http_server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", served, requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=30)
