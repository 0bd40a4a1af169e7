"""The project's habits are configured, not remembered: strict pytest, a broad ruff rule set and a
pre-commit config that runs ruff and mypy from the project's own venv (no network)."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_pytest_is_strict() -> None:
    options = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "--strict-markers" in options["addopts"] and "--strict-config" in options["addopts"]
    assert options["xfail_strict"] is True and options["filterwarnings"][0] == "error"


def test_ruff_rule_set_is_broad() -> None:
    lint = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]
    assert {"E", "F", "W", "I", "B", "UP", "SIM", "RUF", "C4"} <= set(lint["select"])


def test_pre_commit_runs_ruff_and_mypy_locally() -> None:
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    hooks = {h["id"]: h for repo in config["repos"] for h in repo["hooks"]}
    assert all(repo["repo"] == "local" for repo in config["repos"])  # nothing fetched
    assert hooks["ruff"]["entry"].startswith("ruff check") and hooks["mypy"]["entry"] == "mypy"
    assert {h["language"] for h in hooks.values()} == {"system"}
