"""The RO-Crate vocabulary (context, profiles, types) and the small helpers that read a run record."""

from __future__ import annotations

import mimetypes
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

Entity = dict[str, Any]

RO_CRATE = "https://w3id.org/ro/crate/1.1"
CONTEXT = ["https://w3id.org/ro/crate/1.1/context", "https://w3id.org/ro/terms/workflow-run/context"]
PROCESS_PROFILE = "https://w3id.org/ro/wfrun/process/0.5"
WORKFLOW_PROFILE = "https://w3id.org/ro/wfrun/workflow/0.5"
PROVENANCE_PROFILE = "https://w3id.org/ro/wfrun/provenance/0.5"
WORKFLOW_RO_CRATE = "https://w3id.org/workflowhub/workflow-ro-crate/1.0"
PROFILE_NAMES = {
    PROCESS_PROFILE: ("Process Run Crate", "0.5"),
    WORKFLOW_PROFILE: ("Workflow Run Crate", "0.5"),
    PROVENANCE_PROFILE: ("Provenance Run Crate", "0.5"),
    WORKFLOW_RO_CRATE: ("Workflow RO-Crate", "1.0"),
}
MLCUBE_LANGUAGE = "#mlcube"
SCHEMA = "http://schema.org/"
STATUS = {"succeeded": "CompletedActionStatus", "running": "ActiveActionStatus"}  # anything else: FailedActionStatus
EXTRA_TYPES = {
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".jsonl": "application/jsonl",
    ".log": "text/plain",
    ".md": "text/markdown",
}
NOT_SPECIFIED_LICENSE = "#license-not-specified"


def _ref(entity: Entity) -> dict[str, str]:
    return {"@id": str(entity["@id"])}


def _prune(entity: Entity) -> Entity:
    """Drop empty properties (None, [], {}) so that no entity claims what the record did not say."""
    return {k: v for k, v in entity.items() if v is not None and v != [] and v != {}}


def _flat(entity: Entity) -> Entity:
    """RO-Crate 1.1 recommends a single value over a one-item list."""
    return {k: v[0] if isinstance(v, list) and len(v) == 1 else v for k, v in entity.items()}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text) or "_"


def _time(value: Any) -> str | None:
    """ISO 8601 with a numeric UTC offset ("...T11:27:58.581+00:00"), the form the profiles' validators expect."""
    if not value:
        return None
    text = str(value)
    try:
        when = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        return text
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.isoformat(timespec="milliseconds" if when.microsecond else "seconds")


def _media_type(path: str) -> str:
    suffix = PurePosixPath(path).suffix.lower()
    return EXTRA_TYPES.get(suffix) or mimetypes.guess_type(path)[0] or "application/octet-stream"


def _file_uri(path: str) -> str:
    p = Path(path)
    if not p.is_absolute():
        p = p.absolute()
    return p.as_uri()


def _env(record: dict[str, Any], key: str) -> Any:
    env = record.get("environment")
    return env.get(key) if isinstance(env, dict) else None


def _failure(record: dict[str, Any]) -> str:
    """'<status> (exit code N): <last line of the task's log>'."""
    status = record.get("status") or "unknown"
    code = record.get("exit_code")
    text = f"{status} (exit code {code})" if code is not None else str(status)
    log = _log_path(record)
    if log is not None:
        from cuberun.safeio import read_tail

        data = read_tail(log, 4096) or b""
        tail = [line.strip() for line in data.decode("utf-8", errors="replace").splitlines() if line.strip()]
        if tail:
            text += f": {tail[-1][:300]}"
    return text


def _values(record: dict[str, Any]) -> list[tuple[str, str]]:
    """Sweep values and overrides that are not parameter paths (those are data entities already)."""
    params = _dict(record.get("parameters"))
    out: dict[str, str] = {}
    for field in ("overrides", "sweep"):
        value = record.get(field)
        items = value.items() if isinstance(value, dict) else (str(v).partition("=")[::2] for v in _list(value))
        out.update({str(k): str(v) for k, v in items if k not in params})
    return sorted(out.items())


def _log_path(record: dict[str, Any]) -> Path | None:
    candidates = []
    if record.get("log"):
        candidates.append(Path(str(record["log"])))
    if record.get("workspace") and record.get("run_id"):
        candidates.append(Path(str(record["workspace"])) / ".cuberun" / "runs" / str(record["run_id"]) / "output.log")
    from cuberun.safeio import is_regular

    return next((c for c in candidates if is_regular(c)), None)
