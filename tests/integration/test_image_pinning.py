"""Verifiable images on the real Docker and Podman engines, against a real registry on loopback
(tests/registry.py): digest-pinned references (`name@sha256:...`, `name:tag@sha256:...`), pulls
by digest, a tag moved to another image, and `cuberun lock` / the lock check.

Images are built here from the shared base image (ENV only: no network, no RUN step) and pushed
to the loopback registry; each test pushes to a repository of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.backends import client_env, require_backend
from tests.conftest import run_records
from tests.registry import Registry, registry_fixture  # noqa: F401 - the session fixture `registry`

REPO = Path(__file__).resolve().parents[2]
SESSION = uuid.uuid4().hex[:8]
TIMEOUT = 600


class Engine:
    def __init__(self, kind: str, base: str, env: dict[str, str], tmp: Path) -> None:
        self.kind = kind
        self.base = base
        self.env = env
        self.tmp = tmp
        self.images: list[str] = []

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.kind, *args], env=self.env, capture_output=True, text=True, timeout=300, check=False, stdin=subprocess.DEVNULL)
        if check:
            assert proc.returncode == 0, f"{self.kind} {args}: {proc.stderr}"
        return proc

    def tls(self) -> list[str]:
        return ["--tls-verify=false"] if self.kind == "podman" else []

    def build(self, tag: str, which: str) -> None:
        recipe = self.tmp / f"Dockerfile.{which}"
        recipe.write_text(f"FROM {self.base}\nENV CUBERUN_PIN_WHICH={which}\nLABEL cuberun.test.pin={SESSION}\n", encoding="utf-8")
        self.cli("build", "-q", "-t", tag, "-f", str(recipe), str(self.tmp))
        self.images.append(tag)

    def push(self, ref: str) -> str:
        """Push `ref`; the manifest digest the registry stored."""
        digest_file = self.tmp / "digest"
        digest_file.unlink(missing_ok=True)
        if self.kind == "podman":
            self.cli("push", "--tls-verify=false", "--digestfile", str(digest_file), ref)
            return digest_file.read_text().strip()
        out = self.cli("push", ref).stdout
        line = next(x for x in out.splitlines() if "digest: sha256:" in x)
        return line.split("digest: ", 1)[1].split()[0]

    def repo_digests(self, ref: str) -> list[str]:
        return list(json.loads(self.cli("image", "inspect", "--format", "{{json .RepoDigests}}", ref).stdout))

    def cuberun(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cuberun", *args, "--platform", self.kind], env=self.env, capture_output=True,
                              text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL, check=False)


@pytest.fixture(scope="module", params=["docker", "podman"])
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    kind = str(request.param)
    details = require_backend(kind)
    tmp = tmp_path_factory.mktemp(f"pin-{kind}")
    env = client_env(kind)
    env.update(CUBERUN_SETTINGS=str(tmp / "settings.yaml"), MLCUBE_SYSTEM_SETTINGS=str(tmp / "none.yaml"),
               CUBERUN_CACHE_DIR=str(tmp / "cache"), PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    eng = Engine(kind, str(details["base_image"]), env, tmp)
    eng.build(f"cuberun-pin-a-{SESSION}:1", "A")
    eng.build(f"cuberun-pin-b-{SESSION}:1", "B")
    try:
        yield eng
    finally:
        for image in eng.images:
            eng.cli("rmi", "-f", image, check=False)
        # what is left under a digest reference only (pulled by digest, its tag moved away): by id
        left = eng.cli("images", "-q", "--no-trunc", "--filter", f"label=cuberun.test.pin={SESSION}", check=False).stdout.split()
        for image in dict.fromkeys(left):
            eng.cli("rmi", "-f", image, check=False)
        assert not eng.cli("images", "-q", "--filter", f"label=cuberun.test.pin={SESSION}", check=False).stdout.strip()


def cube(root: Path, image: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "mlcube.yaml").write_text(
        f"name: pin\nplatform: {{accelerator_count: 0}}\ndocker: {{image: \"{image}\"}}\n"
        "tasks:\n  show:\n    entrypoint: env\n    parameters: {}\n", encoding="utf-8")
    return root


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def ran(proc: subprocess.CompletedProcess[str]) -> str:
    """Which test image the task ran in (A or B), from its environment."""
    found = [line.split("=", 1)[1] for line in ok(proc).stdout.splitlines() if line.startswith("CUBERUN_PIN_WHICH=")]
    assert len(found) == 1, proc.stdout
    return found[0]


def refused(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert proc.returncode == 2, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    errors = [line for line in proc.stderr.splitlines() if line.startswith("cuberun: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert "Hint:" in errors[0]
    assert "CUBERUN_PIN_WHICH" not in proc.stdout
    return errors[0]


def last_image(workspace: Path) -> dict[str, Any]:
    return dict(run_records(workspace)[-1]["image"])


def publish(engine: Engine, registry: Registry, repo: str, local: str) -> tuple[str, str]:
    """Tag the local image `local` as REGISTRY/repo:1 and push it; (the tag reference, its digest)."""
    ref = f"{registry.host}/{repo}-{engine.kind}-{SESSION}:1"
    engine.cli("tag", local, ref)
    engine.images.append(ref)
    return ref, engine.push(ref)


def test_pinned_digest_runs_pulls_and_survives_a_moved_tag(engine: Engine, registry: Registry, tmp_path: Path) -> None:
    ref, digest_a = publish(engine, registry, "pin", f"cuberun-pin-a-{SESSION}:1")
    name = ref.rsplit(":", 1)[0]
    pinned = f"{name}@{digest_a}"
    root = cube(tmp_path / "cube", pinned)
    workspace = root / "workspace"
    engine.cli("rmi", ref)  # as on another machine: only the registry has it (podman lists the registry digest after the pull)

    # missing locally: pulled by digest, runs, the record holds the digest
    assert ran(engine.cuberun("run", f"--mlcube={root}")) == "A"
    image = last_image(workspace)
    assert image["ref"] == pinned and image["digest"] == digest_a and image["pinned"] == digest_a
    assert f"{name}@{digest_a}" in image["repo_digests"]
    dry = ok(engine.cuberun("run", f"--mlcube={root}", "--dry-run")).stdout
    assert f"{engine.kind} pull {'--tls-verify=false ' if engine.kind == 'podman' else ''}{pinned}" in dry.splitlines()
    assert any(line.startswith(f"{engine.kind} run ") and f" {pinned}" in line for line in dry.splitlines())

    # removed again: pulled by digest again
    engine.cli("rmi", "-f", pinned)
    assert ran(engine.cuberun("run", f"--mlcube={root}", "--force")) == "A"
    assert f"{name}@{digest_a}" in engine.repo_digests(pinned)

    # the tag moves to image B (pushed): the digest still runs A; name:tag@digest is refused
    engine.cli("tag", f"cuberun-pin-b-{SESSION}:1", ref)
    digest_b = engine.push(ref)
    assert digest_b != digest_a
    assert ran(engine.cuberun("run", f"--mlcube={root}", "--force")) == "A"
    before = len(run_records(workspace))
    line = refused(engine.cuberun("run", f"--mlcube={root}", "--force", f"-Pdocker.image={ref}@{digest_a}"), ref, digest_a, "moved")
    assert "sha256:" in line.split(digest_a, 1)[0] or digest_b in line or engine.kind == "podman"  # the tag's actual digest is named
    assert len(run_records(workspace)) == before  # nothing ran, no record


def test_lock_verifies_and_relock_accepts(engine: Engine, registry: Registry, tmp_path: Path) -> None:
    ref, digest_a = publish(engine, registry, "lock", f"cuberun-pin-a-{SESSION}:1")
    root = cube(tmp_path / "cube", ref)
    workspace = root / "workspace"
    out = ok(engine.cuberun("lock", f"--mlcube={root}"))
    lock = json.loads((root / "cuberun.lock").read_text())
    assert lock["cuberun_lock"] == 1
    locked = lock["images"][ref]["digest"]
    assert locked in out.stdout
    if engine.kind == "docker":
        assert locked == digest_a  # podman lists the digest of its local copy for an image it built itself
    assert ran(engine.cuberun("run", f"--mlcube={root}")) == "A"
    assert last_image(workspace)["locked"]["digest"] == locked

    # the tag moves: refused with the one-line error; --no-lock runs; lock again accepts
    engine.cli("tag", f"cuberun-pin-b-{SESSION}:1", ref)
    engine.push(ref)
    before = len(run_records(workspace))
    refused(engine.cuberun("run", f"--mlcube={root}"), ref, locked, "moved", "cuberun lock")
    assert len(run_records(workspace)) == before
    assert ran(engine.cuberun("run", f"--mlcube={root}", "--no-lock")) == "B"
    ok(engine.cuberun("lock", f"--mlcube={root}"))
    relocked = json.loads((root / "cuberun.lock").read_text())["images"][ref]["digest"]
    assert relocked != locked
    assert ran(engine.cuberun("run", f"--mlcube={root}", "--force")) == "B"
    assert last_image(workspace)["locked"]["digest"] == relocked


def test_lock_of_a_local_image_and_a_missing_locked_image(engine: Engine, registry: Registry, tmp_path: Path) -> None:
    local = f"cuberun-pin-local-{engine.kind}-{SESSION}:1"
    engine.cli("tag", f"cuberun-pin-a-{SESSION}:1", local)
    engine.images.append(local)
    root = cube(tmp_path / "local", local)
    ok(engine.cuberun("lock", f"--mlcube={root}"))
    entry = json.loads((root / "cuberun.lock").read_text())["images"][local]
    if engine.kind == "docker":  # never pushed or pulled: no registry digest, its image id is locked
        image_id = engine.cli("image", "inspect", "--format", "{{.Id}}", local).stdout.strip()
        assert entry == {"id": image_id}
    assert ran(engine.cuberun("run", f"--mlcube={root}")) == "A"
    engine.cli("tag", f"cuberun-pin-b-{SESSION}:1", local)  # rebuilt (here: retagged) locally
    refused(engine.cuberun("run", f"--mlcube={root}"), local, "moved")

    # a locked image that is missing is pulled by its locked digest and tagged, never by its tag
    # (image C: built, pushed and removed here, then pulled by digest: only the registry's digest is listed)
    engine.build(f"cuberun-pin-c-{engine.kind}-{SESSION}:1", "C")
    ref, digest_c = publish(engine, registry, "missing", f"cuberun-pin-c-{engine.kind}-{SESSION}:1")
    name = ref.rsplit(":", 1)[0]
    image_c = engine.cli("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()
    engine.cli("rmi", "-f", image_c)
    engine.cli("pull", *engine.tls(), f"{name}@{digest_c}")
    engine.cli("tag", f"{name}@{digest_c}", ref)
    root = cube(tmp_path / "missing", ref)
    ok(engine.cuberun("lock", f"--mlcube={root}"))
    assert json.loads((root / "cuberun.lock").read_text())["images"][ref] == {"digest": digest_c}
    engine.cli("tag", f"cuberun-pin-b-{SESSION}:1", ref)
    engine.push(ref)  # the registry's tag now names B
    engine.cli("rmi", ref)  # as on another machine: neither B under that name nor C is present
    engine.cli("rmi", "-f", image_c)
    dry = ok(engine.cuberun("run", f"--mlcube={root}", "--dry-run")).stdout.splitlines()
    assert f"{engine.kind} pull {' '.join([*engine.tls(), ''])}{name}@{digest_c}" in dry
    assert f"{engine.kind} tag {name}@{digest_c} {ref}" in dry
    assert ran(engine.cuberun("run", f"--mlcube={root}")) == "C"
    assert f"{name}@{digest_c}" in engine.repo_digests(ref)
