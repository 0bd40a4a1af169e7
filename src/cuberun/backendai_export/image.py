"""What an image says about itself: its labels, base distro and python (the only part that runs the engine)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from cuberun.backendai_export.labels import _PY_PROBE, PROBE_TIMEOUT, parse_os_release
from cuberun.valueclass import dataclass, field


@dataclass
class ImageFacts:
    """What `probe_image` learned about an image (all None when it is not present locally)."""

    image: str
    present: bool = False
    image_id: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    workdir: str | None = None
    base_distro: str | None = None
    runtime_path: str | None = None
    notes: list[str] = field(default_factory=list)


def _engine_extra(engine: Sequence[str]) -> list[str]:
    import os

    return ["--pull=never"] if any(os.path.basename(t) == "podman" for t in engine) else []


def inspect_image(engine: Sequence[str], image: str, *, timeout: float = 30.0) -> ImageFacts:
    """`docker image inspect`: presence, labels, ENTRYPOINT, CMD, WORKDIR (nothing is run)."""
    from cuberun.process import capture

    facts = ImageFacts(image)
    res = capture([*engine, "image", "inspect", image], timeout=timeout)
    if res.missing:
        facts.notes.append(f"{engine[0]} is not installed, so the image could not be inspected")
        return facts
    if res.returncode != 0:
        return facts
    try:
        data = json.loads(res.stdout)
        entry = data[0] if isinstance(data, list) else data
    except (ValueError, IndexError, KeyError):
        facts.notes.append(f"cannot parse the output of {engine[0]} image inspect {image}")
        return facts
    config = entry.get("Config") or {}
    facts.present = True
    facts.image_id = entry.get("Id")
    labels = config.get("Labels") or {}
    facts.labels = {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}
    ep = config.get("Entrypoint")
    facts.entrypoint = [str(t) for t in ep] if isinstance(ep, list) else None
    cmd = config.get("Cmd")
    facts.cmd = [str(t) for t in cmd] if isinstance(cmd, list) else None
    facts.workdir = str(config.get("WorkingDir") or "") or None
    return facts


def probe_image(engine: Sequence[str], image: str) -> ImageFacts:
    """Inspect the image, then run it once (`--rm --network none`, ENTRYPOINT replaced) to read
    its Python's path and `/etc/os-release`: with `python3`, else `python`, else `cat`."""
    from cuberun.process import capture

    facts = inspect_image(engine, image)
    if not facts.present:
        return facts
    base = [*engine, "run", "--rm", "--network", "none", *_engine_extra(engine)]
    for exe in ("python3", "python"):
        res = capture([*base, "--entrypoint", exe, image, "-c", _PY_PROBE], timeout=PROBE_TIMEOUT)
        if res.returncode == 0 and "--os-release--" in res.stdout:
            head, _, release = res.stdout.partition("--os-release--")
            path = head.strip().splitlines()[-1].strip() if head.strip() else ""
            facts.runtime_path = path if path.startswith("/") else None
            facts.base_distro = parse_os_release(release)
            break
    if facts.runtime_path is None:
        facts.notes.append(f"no python3 or python runs in {image}")
    if facts.base_distro is None:
        res = capture([*base, "--entrypoint", "cat", image, "/etc/os-release"], timeout=PROBE_TIMEOUT)
        if res.returncode == 0:
            facts.base_distro = parse_os_release(res.stdout)
        if facts.base_distro is None:
            facts.notes.append(f"cannot read /etc/os-release of {image}")
    return facts
