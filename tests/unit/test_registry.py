"""The runner registry is the single source of runner names, platforms, sections and schemas."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cuberun import settings
from cuberun.errors import RunnerUnavailable, UsageError
from cuberun.runners import registry
from cuberun.spec import load

SRC = Path(__file__).resolve().parents[2] / "src" / "cuberun"


def test_every_builtin_runner_declares_what_the_registry_says() -> None:
    for name, info in registry.BUILTIN.items():
        cls = registry.get(name)
        assert cls.name == name
        assert cls.section == info.section, name
    assert set(registry.names()) >= set(registry.BUILTIN)


def test_settings_sweep_and_loader_ask_the_registry() -> None:
    assert settings.builtin_platforms() == registry.platforms()
    assert {"kubeflow", "backendai", "podman", "apptainer"} <= set(registry.platforms())
    sections = registry.cube_sections()
    assert {"kubeflow", "backendai", "k8s", "local", "docker"} <= set(sections)
    # built-in sections are known without scanning entry points; an installed plugin's section
    # (e.g. the htcondor plugin that scripts/test.sh installs) is known through sections_in
    assert set(registry.builtin_sections()) <= set(load.known_top_level())
    assert set(registry.sections_in(sections)) == set(sections)


def test_a_platform_name_is_not_a_runner() -> None:
    with pytest.raises(RunnerUnavailable, match="'podman' is a platform of runner 'docker'"):
        registry.get("podman")
    with pytest.raises(UsageError, match="unknown runner 'dokcer'"):
        registry.get("dokcer")


def test_no_other_module_lists_the_runners() -> None:
    """A literal list naming several runners exists only in the registry."""
    runner_names = [n for n in registry.BUILTIN if n != "local"]
    listing = re.compile(r"[\(\[\{]\s*(?:\"[a-z0-9]+\"\s*[:,].*){4,}")
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name == "registry.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            quoted = [n for n in runner_names if f'"{n}"' in line]
            if len(quoted) >= 4 and listing.search(line):
                offenders.append(f"{path.relative_to(SRC)}:{number}")
    assert offenders == []


def test_sweep_accepts_every_runner_section(tmp_path: Path) -> None:
    from cuberun.spec import load_cube
    from cuberun.sweep import parse_axes
    from tests.conftest import write_tree

    root = write_tree(tmp_path, {"mlcube.yaml": "name: x\ntasks:\n  t: {entrypoint: echo}\n"})
    cube = load_cube(root)
    for section in ("kubeflow", "backendai"):
        axes = parse_axes([f"P:{section}.image=a,b"], cube, cube.tasks["t"], {}, sections=None)
        assert axes[0].values == ("a", "b")
