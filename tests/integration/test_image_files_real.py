"""container_config.yaml images from files on the real engines of scripts/backends/up.sh, through
the CLI in a subprocess: a DockerArchive downloaded from a loopback HTTP server (good and bad
sha256, the cache), an EncryptedDockerArchive (right and wrong passphrase, a failing task,
Ctrl-C) on docker and podman, and an EncryptedSingularityFile on apptainer (also Ctrl-C). After
each run nothing decrypted is left: no file in $TMPDIR or the cache has the plain image's
sha256, and the image loaded from an encrypted archive is gone from the engine.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cuberun import decrypt
from tests.backends import client_env, require_backend
from tests.conftest import gpg_encrypt, run_records
from tests.integration.test_container_config_real import _archive

REPO = Path(__file__).resolve().parents[2]
SESSION = uuid.uuid4().hex[:8]
TIMEOUT = 600
PASSPHRASE = "correct horse battery staple"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def busybox_tree(dest: Path) -> Path:
    tree = dest / "tree"
    (tree / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", tree / "bin" / "busybox")
    (tree / "bin" / "sh").symlink_to("busybox")
    return tree


def leftovers(dirs: list[Path], plain_sha: str) -> list[str]:
    """Files and folders in `dirs` that are a decrypted image or a decryption folder."""
    found = []
    for d in dirs:
        for path in d.rglob("*") if d.exists() else []:
            if path.name.startswith("cuberun-decrypted-") or (path.is_file() and not path.is_symlink() and sha256_of(path) == plain_sha):
                found.append(str(path))
    return found


class Setup:
    def __init__(self, kind: str, tmp: Path, env: dict[str, str]) -> None:
        self.kind = kind
        self.tmp = tmp
        self.env = env
        self.images: list[str] = []

    @property
    def dirs(self) -> list[Path]:
        return [Path(self.env["TMPDIR"]), Path(self.env["CUBERUN_CACHE_DIR"])]

    def cli(self, *args: str, check: bool = True, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        proc = subprocess.run([self.kind, *args], env=self.env, input=input, capture_output=True, timeout=300, check=False)
        if check:
            assert proc.returncode == 0, f"{self.kind} {args}: {proc.stderr.decode(errors='replace')}"
        return proc

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "cuberun", *args, "--platform", "singularity" if self.kind == "apptainer" else self.kind]

    def cuberun(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), env=self.env, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL,
                              check=False)

    def has_image(self, image_id: str) -> bool:
        return self.cli("image", "inspect", image_id, check=False).returncode == 0


def make_setup(kind: str, tmp: Path) -> Setup:
    env = client_env(kind)
    (tmp / "tmp").mkdir(parents=True)
    env.update(CUBERUN_SETTINGS=str(tmp / "settings.yaml"), MLCUBE_SYSTEM_SETTINGS=str(tmp / "none.yaml"), CUBERUN_CACHE_DIR=str(tmp / "cache"),
               TMPDIR=str(tmp / "tmp"), CUBERUN_PROGRESS="plain", CUBERUN_PROGRESS_INTERVAL="0",
               PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return Setup(kind, tmp, env)


def engine_setup(kind: str, tmp: Path) -> Iterator[Setup]:
    """The setup of engine `kind` (skipped when its backend is not up); the images it made removed after."""
    require_backend(kind)
    setup = make_setup(kind, tmp)
    try:
        yield setup
    finally:
        for image in setup.images:
            setup.cli("rmi", "-f", image, check=False)


@pytest.fixture(params=["docker", "podman"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    yield from engine_setup(str(request.param), tmp_path / "setup")


def without_engine(setup: Setup, missing: str) -> Setup:
    """The same cache (the converted images) of a charliecloud setup where no engine is installed:
    the settings name `missing` (a path that does not exist) as its engine."""
    bare = Setup("charliecloud", setup.tmp, dict(setup.env))
    bare.env.pop("DOCKER_HOST", None)
    settings = setup.tmp / "no-engine.yaml"
    settings.write_text(json.dumps({"platforms": {"charliecloud": {"runner": "charliecloud", "docker": str(setup.tmp / missing)}}}))
    bare.env["CUBERUN_SETTINGS"] = str(settings)
    return bare


def show_cube(root: Path, name: str, image: str, entrypoint: str) -> Path:
    """An mlcube.yaml cube of one task, `show`, running `entrypoint` in the docker image `image`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "mlcube.yaml").write_text(f"name: {name}\ndocker: {{image: \"{image}\"}}\n"
                                      f"tasks:\n  show:\n    entrypoint: {entrypoint}\n    parameters: {{}}\n")
    return root


def save_archive(engine: Setup, dest: Path) -> tuple[Path, str]:
    """A `save` archive of a busybox image made here (the tag removed again), and its image id."""
    tag = f"localhost/cuberun-it-img-{SESSION}/busybox:{uuid.uuid4().hex[:6]}"
    tar = subprocess.run(["tar", "-C", str(busybox_tree(dest)), "-c", "."], capture_output=True, check=True).stdout
    engine.cli("import", "-c", "ENV PATH=/bin", "-", tag, input=tar)
    image_id = engine.cli("image", "inspect", "--format", "{{.Id}}", tag).stdout.decode().strip()
    image_id = image_id if image_id.startswith("sha256:") else f"sha256:{image_id}"
    engine.images.append(image_id)
    engine.cli("save", "-o", str(dest / "image.tar"), tag)
    engine.cli("rmi", "-f", image_id)
    return dest / "image.tar", image_id


def write_cube(root: Path, kind: str, image: str, command: str, extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "container_config.yaml").write_text(
        f"container_type: {kind}\nimage: {json.dumps(image)}\n{extra}tasks:\n  hello:\n"
        f"    run_args: {{command: [/bin/busybox, sh, -c, {json.dumps(command)}]}}\n"
        "    output_volumes: {out: {mount_path: /out, type: directory}}\n")
    return root


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("cuberun: error:")]
    assert "Traceback" not in proc.stderr
    return line


def test_archive_from_a_url_good_and_bad_sha256(engine: Setup, tmp_path: Path, server: tuple[str, Path, list[str]]) -> None:
    base, served, requests = server
    archive, image_id = save_archive(engine, tmp_path)
    shutil.move(archive, served / "image.tar")
    good = sha256_of(served / "image.tar")
    bad = "0" * 64
    url = f"{base}/image.tar"
    cube = write_cube(tmp_path / "bad", "DockerArchive", f"{url}#sha256={bad}", "echo no > /out/hello.txt")
    line = error_line(engine.cuberun("run", f"--mlcube={cube}"))
    assert line == (f"cuberun: error: sha256 mismatch for {url}: expected {bad}, got {good}. "
                    "Hint: the server sent another file than the digest names; nothing was cached")
    cache = Path(engine.env["CUBERUN_CACHE_DIR"]) / "images"
    assert [p for p in cache.rglob("*") if p.is_file()] == []  # neither the file nor a partial one
    assert not engine.has_image(image_id) and not (cube / "workspace" / "out" / "hello.txt").exists()

    cube = write_cube(tmp_path / "good", "DockerArchive", url, "echo loaded > /out/hello.txt", f"image_sha256: sha256:{good}\n")
    proc = ok(engine.cuberun("run", f"--mlcube={cube}"))
    assert f"downloading {url}" in proc.stderr
    assert (cube / "workspace" / "out" / "hello.txt").read_text() == "loaded\n"
    assert [p.name for p in cache.rglob("*") if p.is_file()] == [good]
    record = run_records(cube / "workspace")[-1]
    assert record["image"]["id"] == image_id
    engine.cli("rmi", "-f", image_id)
    again = ok(engine.cuberun("run", f"--mlcube={cube}", "--force"))  # loaded again from the cache, not downloaded
    assert "downloading" not in again.stderr and "load" in again.stderr
    assert requests == ["/image.tar", "/image.tar"]
    # the digest from the command line (MedPerf keeps it on its server) instead of the cube
    cube = write_cube(tmp_path / "cli", "DockerArchive", url, "echo cli > /out/hello.txt")
    ok(engine.cuberun("run", f"--mlcube={cube}", f"--image-sha256={good}"))
    assert (cube / "workspace" / "out" / "hello.txt").read_text() == "cli\n"


def test_encrypted_archive_right_and_wrong_passphrase(engine: Setup, tmp_path: Path) -> None:
    archive, image_id = save_archive(engine, tmp_path)
    plain_sha = sha256_of(archive)
    (tmp_path / "key").write_text(PASSPHRASE + "\n")
    (tmp_path / "wrong").write_text("not it\n")
    root = tmp_path / "enc"
    root.mkdir()
    gpg_encrypt(archive, root / "image.tar.gpg", tmp_path / "key")
    archive.unlink()

    cube = write_cube(root, "EncryptedDockerArchive", "image.tar.gpg", "echo decrypted > /out/hello.txt")
    line = error_line(engine.cuberun("run", f"--mlcube={cube}", f"--decryption-key={tmp_path / 'wrong'}"))
    assert line == (f"cuberun: error: cannot decrypt {root / 'image.tar.gpg'} with the passphrase in {tmp_path / 'wrong'}: "
                    "gpg: decryption failed: Bad session key. Hint: check that the passphrase file holds the passphrase the image was encrypted with")
    assert leftovers(engine.dirs, plain_sha) == [] and not engine.has_image(image_id)

    missing = error_line(engine.cuberun("run", f"--mlcube={cube}"))
    assert missing.startswith(f"cuberun: error: EncryptedDockerArchive {root / 'image.tar.gpg'} is encrypted and no passphrase file was given")

    proc = ok(engine.cuberun("run", f"--mlcube={cube}", f"--decryption-key={tmp_path / 'key'}"))
    assert (cube / "workspace" / "out" / "hello.txt").read_text() == "decrypted\n"
    assert run_records(cube / "workspace")[-1]["image"]["id"] == image_id  # the image that ran, by id
    assert PASSPHRASE not in proc.stdout + proc.stderr
    assert PASSPHRASE not in json.dumps(run_records(cube / "workspace"))
    assert leftovers(engine.dirs, plain_sha) == []
    assert not engine.has_image(image_id)  # the plain image does not stay in the engine

    failing = write_cube(tmp_path / "fails", "EncryptedDockerArchive", str(root / "image.tar.gpg"), "echo started; exit 3")
    proc = engine.cuberun("run", f"--mlcube={failing}", f"--decryption-key={tmp_path / 'key'}")
    assert proc.returncode == 3, proc.stderr
    assert leftovers(engine.dirs, plain_sha) == [] and not engine.has_image(image_id)


def interrupt_when(setup: Setup, argv: list[str], marker: str, while_running: list[str] | None = None,
                   sig: int = signal.SIGINT) -> tuple[int, str]:
    """Start cuberun, send `sig` (SIGINT) to it (by its pid) once its output shows `marker`; returns
    its exit code and output. `while_running` receives the decryption folders present at that point."""
    proc = subprocess.Popen(argv, env=setup.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    killer = threading.Timer(TIMEOUT, proc.kill)  # a safety net only: the test synchronises on the output
    killer.start()
    seen: list[str] = []
    try:
        assert proc.stdout is not None
        for _ in range(10_000):
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if marker in line:
                if while_running is not None:
                    while_running.extend(str(p) for p in sorted(Path(setup.env["TMPDIR"]).glob("cuberun-decrypted-*/*"))
                                         if p.name != decrypt.OWNER_LOCK)  # the folder's owner lock (decrypt.py): not an image
                os.kill(proc.pid, sig)
                break
        seen.append(proc.stdout.read())
        code = proc.wait(timeout=TIMEOUT)
    finally:
        killer.cancel()
        if proc.stdout is not None:
            proc.stdout.close()
    return code, "".join(seen)


def test_ctrl_c_removes_the_loaded_image(engine: Setup, tmp_path: Path) -> None:
    archive, image_id = save_archive(engine, tmp_path)
    plain_sha = sha256_of(archive)
    (tmp_path / "key").write_text(PASSPHRASE + "\n")
    gpg_encrypt(archive, tmp_path / "image.tar.gpg", tmp_path / "key")
    cube = write_cube(tmp_path / "slow", "EncryptedDockerArchive", str(tmp_path / "image.tar.gpg"), "echo task-is-running; sleep 300")
    code, output = interrupt_when(engine, engine.argv("run", f"--mlcube={cube}", f"--decryption-key={tmp_path / 'key'}"), "task-is-running")
    assert code == 130, output
    assert leftovers(engine.dirs, plain_sha) == [] and not engine.has_image(image_id)
    record = run_records(cube / "workspace")[-1]
    assert record["status"] == "interrupted", record["status"]


def test_sigkill_the_watchdog_removes_the_loaded_image(engine: Setup, tmp_path: Path) -> None:
    """cuberun killed with SIGKILL (nothing of it runs): its watchdog removes the container and
    then the image it loaded from the encrypted archive; the decrypted tar was deleted at load."""
    archive, image_id = save_archive(engine, tmp_path)
    plain_sha = sha256_of(archive)
    (tmp_path / "key").write_text(PASSPHRASE + "\n")
    gpg_encrypt(archive, tmp_path / "image.tar.gpg", tmp_path / "key")
    cube = write_cube(tmp_path / "slow", "EncryptedDockerArchive", str(tmp_path / "image.tar.gpg"), "echo task-is-running; sleep 300")
    code, output = interrupt_when(engine, engine.argv("run", f"--mlcube={cube}", f"--decryption-key={tmp_path / 'key'}"), "task-is-running",
                                  sig=signal.SIGKILL)
    assert code == -signal.SIGKILL, output
    deadline = time.monotonic() + TIMEOUT  # the watchdog works after cuberun is gone: wait for its result, bounded
    while engine.has_image(image_id):
        assert time.monotonic() < deadline, f"image {image_id} still in the engine"
        time.sleep(0.2)
    assert leftovers(engine.dirs, plain_sha) == []


@pytest.fixture
def apptainer(tmp_path: Path) -> Setup:
    details = require_backend("apptainer")
    setup = make_setup("apptainer", tmp_path / "setup")
    (tmp_path / "setup" / "settings.yaml").write_text(
        json.dumps({"platforms": {"singularity": {"runner": "singularity", "singularity": details["executable"]}}}))
    setup.env["APPTAINER_EXE"] = str(details["executable"])
    return setup


def encrypted_sif(setup: Setup, tmp_path: Path) -> tuple[Path, str]:
    rootfs = tmp_path / "rootfs.tar"
    subprocess.run(["tar", "-C", str(busybox_tree(tmp_path)), "-cf", str(rootfs), "."], check=True)
    sif = tmp_path / "image.sif"
    build = subprocess.run([setup.env["APPTAINER_EXE"], "build", str(sif), f"docker-archive:{_archive(tmp_path, rootfs)}"],
                           env=setup.env, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert build.returncode == 0, build.stderr
    plain_sha = sha256_of(sif)
    (tmp_path / "key").write_text(PASSPHRASE + "\n")
    gpg_encrypt(sif, tmp_path / "image.sif.gpg", tmp_path / "key")
    sif.unlink()
    return tmp_path / "image.sif.gpg", plain_sha


def test_encrypted_sif_from_a_url_on_apptainer(apptainer: Setup, tmp_path: Path, server: tuple[str, Path, list[str]]) -> None:
    base, served, requests = server
    enc, plain_sha = encrypted_sif(apptainer, tmp_path)
    shutil.move(enc, served / "image.sif.gpg")
    cube = write_cube(tmp_path / "sifcube", "EncryptedSingularityFile", f"{base}/image.sif.gpg", "echo from-sif > /out/hello.txt",
                      f"image_sha256: {sha256_of(served / 'image.sif.gpg')}\n")
    (tmp_path / "wrong").write_text("nope\n")
    line = error_line(apptainer.cuberun("run", f"--mlcube={cube}", f"--decryption-key={tmp_path / 'wrong'}"))
    assert "gpg: decryption failed: Bad session key" in line
    assert leftovers(apptainer.dirs, plain_sha) == []
    ok(apptainer.cuberun("run", f"--mlcube={cube}", f"--decryption-key={tmp_path / 'key'}"))
    assert (cube / "workspace" / "out" / "hello.txt").read_text() == "from-sif\n"
    assert leftovers(apptainer.dirs, plain_sha) == []
    assert requests == ["/image.sif.gpg"]  # downloaded once (before the wrong passphrase), then from the cache


def test_ctrl_c_deletes_the_decrypted_sif(apptainer: Setup, tmp_path: Path) -> None:
    enc, plain_sha = encrypted_sif(apptainer, tmp_path)
    cube = write_cube(tmp_path / "slow", "EncryptedSingularityFile", str(enc), "echo task-is-running; sleep 300")
    during: list[str] = []
    code, output = interrupt_when(apptainer, apptainer.argv("run", f"--mlcube={cube}", f"--decryption-key={tmp_path / 'key'}"),
                                  "task-is-running", during)
    assert code == 130, output
    assert [Path(p).name for p in during] == ["image.sif"]  # the decrypted SIF existed while the task ran
    assert leftovers(apptainer.dirs, plain_sha) == []
    assert not Path(during[0]).parent.exists()
