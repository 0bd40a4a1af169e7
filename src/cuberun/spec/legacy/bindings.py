"""Parameter bindings of the legacy files (parameter sets, invoke files, pre-2.0 tasks) and the
platform pieces config 1.0 spreads over files."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any

from cuberun.errors import Issue
from cuberun.hints import did_you_mean
from cuberun.spec.legacy.base import strip_workspace
from cuberun.spec.legacy.formats import (
    INVOKE_SCHEMAS,
)
from cuberun.yamlio import Document, KeyPath


# -- bindings and parameter sets ------------------------------------------------------------------
def _bindings(doc: Document, base: KeyPath, declared: Sequence[str] | None, task: str, issues: list[Issue]) -> dict[str, str]:
    """A mapping of parameter name -> path; unknown names and non-string paths are issues."""
    node = doc.data
    for part in base:
        node = node.get(part) if isinstance(node, dict) else None
    if node is None:
        return {}
    if not isinstance(node, dict):
        issues.append(doc.issue(base, "must be a mapping of parameter name to path", value=True))
        return {}
    result: dict[str, str] = {}
    for name, value in node.items():
        path: KeyPath = (*base, name)
        if declared is not None and name not in declared:
            issues.append(doc.issue(path, f"task '{task}' has no parameter '{name}'", did_you_mean(name, declared, "parameter")))
            continue
        if isinstance(value, dict) and isinstance(value.get("path"), str):  # the k8s variant: {path, k8s: {pvc}}
            value = value["path"]
        if not isinstance(value, str) or not value.strip():
            issues.append(doc.issue(path, f"must be a path string, not {type(value).__name__} {value!r}", "quote the value", value=True))
            continue
        result[name] = strip_workspace(value)
    return result


def _invoke_bindings(doc: Document, declared: Sequence[str] | None, issues: list[Issue], task: str = "") -> dict[str, str]:
    schema = doc.data.get("schema_type")
    if schema is not None and schema not in INVOKE_SCHEMAS:
        issues.append(doc.issue(("schema_type",), f"schema_type '{schema}' is not an invoke schema", "expected mlcube_invoke or mlbox_invoke", value=True))
    task = task or str(doc.data.get("task_name") or "")
    result = _bindings(doc, ("input_binding",), declared, task, issues)
    result.update(_bindings(doc, ("output_binding",), declared, task, issues))
    return result


def _pre2_bindings(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): strip_workspace(v) for k, v in value.items() if isinstance(v, str)}


def _v1_image(data: dict[str, Any]) -> str | None:
    for section in ("container", "configuration"):
        node = data.get(section)
        if isinstance(node, dict) and isinstance(node.get("image"), str):
            return str(node["image"])
    if isinstance(data.get("image"), str):
        return str(data["image"])
    for cfg in data.get("runner_configs") or []:
        image = cfg.get("exec", {}).get("container", {}).get("image") if isinstance(cfg, dict) else None
        if isinstance(image, str):
            return image
    return None


def _ssh_entry(data: Mapping[str, Any]) -> dict[str, Any]:
    """A cuberun settings platform entry for a legacy ssh platform file."""
    entry: dict[str, Any] = {"runner": "ssh", "host": data.get("host") or "HOST"}
    if data.get("user"):
        entry["user"] = data["user"]
    auth = data.get("authentication")
    if isinstance(auth, dict) and auth:
        entry["authentication"] = auth
    remote = data.get("platform")
    entry["platform"] = PurePath(str(remote)).stem if isinstance(remote, str) and remote else "docker"
    return entry
