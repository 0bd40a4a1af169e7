"""The charliecloud runner's pin and lock checks of a converted image used without a Docker
engine (runners/charliecloud/verify.py): against the image id and RepoDigests the conversion
recorded. tests/integration/test_charliecloud_pinning_real.py checks them with real engines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cuberun.execute import make_runner
from cuberun.resolve import resolve_task
from cuberun.runners.base import RunOptions
from cuberun.runners.charliecloud import CharliecloudRunner
from cuberun.runners.images import ImageMoved
from cuberun.spec.load import load_cube

NAME = "127.0.0.1:15000/team/model"
DIGEST_A, DIGEST_B = "sha256:" + "a" * 64, "sha256:" + "b" * 64
IMAGE_ID = "sha256:" + "1" * 64


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CUBERUN_SETTINGS", str(tmp_path / "no-settings.yaml"))
    monkeypatch.setenv("MLCUBE_SYSTEM_SETTINGS", str(tmp_path / "no-mlcube.yaml"))
    monkeypatch.setenv("CUBERUN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("USER", "alice")


def converted(tmp_path: Path, image: str, lock: dict[str, dict[str, str]] | None = None, options: RunOptions | None = None) -> CharliecloudRunner:
    """A runner for a cube of `image` whose conversion (from an image listed as NAME@DIGEST_A) is stored, with no engine."""
    root = tmp_path / "cube"
    root.mkdir(parents=True, exist_ok=True)
    (root / "mlcube.yaml").write_text(f"name: pin\ndocker: {{image: \"{image}\"}}\ntasks:\n  show:\n    entrypoint: env\n    parameters: {{}}\n")
    if lock is not None:
        (root / "cuberun.lock").write_text(json.dumps({"cuberun_lock": 1, "images": lock}))
    params = [f"charliecloud.docker={tmp_path / 'no-docker'}"]
    runner = make_runner(load_cube(root, overrides=params), "charliecloud", options or RunOptions(), params)
    assert isinstance(runner, CharliecloudRunner)
    (runner.store / "rootfs").mkdir(parents=True, exist_ok=True)
    (runner.store / "image.json").write_text(json.dumps({"format": 1, "image": image, "id": IMAGE_ID, "repo_digests": [f"{NAME}@{DIGEST_A}"],
                                                         "config": {"Env": ["PATH=/bin"]}}))
    return runner


def test_a_pinned_converted_image_is_checked_without_an_engine(tmp_path: Path) -> None:
    runner = converted(tmp_path, f"{NAME}@{DIGEST_A}")
    runner.configure()
    assert runner.image_identity() == {"ref": f"{NAME}@{DIGEST_A}", "id": IMAGE_ID, "digest": DIGEST_A,
                                       "repo_digests": [f"{NAME}@{DIGEST_A}"], "pinned": DIGEST_A}
    other = converted(tmp_path / "b", f"{NAME}@{DIGEST_B}")
    with pytest.raises(ImageMoved) as info:
        other.configure()
    assert info.value.lines() == [f"the converted image {other.rootfs} is {DIGEST_A}, not the pinned {DIGEST_B}; nothing ran. "
                                  "Hint: convert it again where the Docker engine runs (cuberun configure --platform=charliecloud) "
                                  "and share the images_dir"]
    assert info.value.exit_code == 2


def test_a_locked_converted_image_is_checked_without_an_engine(tmp_path: Path) -> None:
    ref = f"{NAME}:1"
    runner = converted(tmp_path, ref, {ref: {"digest": DIGEST_A}})
    runner.configure()
    assert runner.image_identity()["locked"] == {"file": str(tmp_path / "cube" / "cuberun.lock"), "digest": DIGEST_A}
    assert runner.fingerprint(resolve_task(runner.cube, "show"))["locked"] == DIGEST_A
    moved = converted(tmp_path / "b", ref, {ref: {"id": "sha256:" + "2" * 64}})
    with pytest.raises(ImageMoved) as info:
        moved.configure()
    (line,) = info.value.lines()
    assert line.startswith(f"image {ref} moved: {tmp_path / 'b' / 'cube' / 'cuberun.lock'} locks sha256:{'2' * 64}, "
                           f"the converted image {moved.rootfs} is {IMAGE_ID}; nothing ran. Hint: run `cuberun lock` again")
    unchecked = converted(tmp_path / "c", ref, {ref: {"digest": DIGEST_B}}, RunOptions(ignore_lock=True))
    unchecked.configure()  # --no-lock
    assert "locked" not in unchecked.image_identity()
