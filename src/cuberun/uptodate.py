"""Incremental runs: is a task up to date, and if not, why?

After a task exits 0 its state is saved in <workspace>/.cuberun/state/<key>.json: the resolved
parameters, the exact command, the runner's fingerprint (code identity, environment variables,
working directory, interpreter and installed packages, image digest, build context...), and
content fingerprints of its inputs and outputs. The next run is skipped when all of these are
the same and the outputs are intact; otherwise every difference is named. A failed or
interrupted run never writes state.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

from cuberun.fingerprint import Fingerprint, HashCache, diff_summary, fingerprint
from cuberun.resolve import ResolvedTask, checkpoint_inputs
from cuberun.valueclass import dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

STATE_DIR = Path(".cuberun") / "state"
STATE_HINT = "remove it; cuberun rewrites it after each successful run"
VERSION = 2  # 2: the runner fingerprint covers code, env vars, interpreter and packages


@dataclass
class Decision:
    run: bool
    reasons: list[str]
    identity: dict[str, Any]
    inputs: dict[str, Fingerprint] = field(default_factory=dict)
    cache: HashCache = field(default_factory=HashCache)
    before: dict[str, dict[str, tuple[int, int, int]]] = field(default_factory=dict)  # output -> rel -> stat
    owned: dict[str, dict[str, str]] = field(default_factory=dict)  # output -> files the last run wrote
    far_end_before: Any = None  # the far end's identity the last run saw (runner.far_end), None if none
    far_end: Any = None  # ... and now (set by the caller), saved with the state

    def explain(self) -> str:
        return "; ".join(self.reasons)


def state_key(task: str, variant: str | None = None) -> str:
    raw = task if not variant else f"{task}@{variant}"
    return re.sub(r"[^A-Za-z0-9_.=@,-]+", "_", raw)[:120]


def state_path(workspace: Path, key: str) -> Path:
    return workspace / STATE_DIR / f"{key}.json"


def _excluded(rt: ResolvedTask) -> list[str]:
    """Paths never part of an input's fingerprint: our own bookkeeping and the task's outputs."""
    return [str(rt.workspace / ".cuberun")] + [str(p.host_path) for p in rt.params if p.io == "output"]


def identity_of(rt: ResolvedTask, command: list[list[str]], runner_fp: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": VERSION,
        "parameters": {p.name: [p.io, p.type, str(p.host_path)] for p in rt.params},
        "command": command,
        "runner": runner_fp,
    }


def load_state(path: Path) -> dict[str, Any] | None:
    """The state of the last successful run, or None (none, damaged, or of another format)."""
    data = read_state(path)
    return data if data is not None and data.get("version") == VERSION else None


def read_state(path: Path) -> dict[str, Any] | None:
    """A state file of any version, or None. A damaged state file (not JSON, the wrong shape, not
    a regular file) is ignored with a one-line warning: the task runs again, which is always safe."""
    from cuberun.errors import CuberunError
    from cuberun.safeio import read_regular

    try:
        data = json.loads(read_regular(path, 256 * 1024 * 1024, what="state file").decode("utf-8"))
    except CuberunError as exc:
        if "does not exist" not in exc.message:
            _damaged(path, exc.message.split(": ", 1)[-1])
        return None
    except (ValueError, UnicodeDecodeError):
        _damaged(path, "not valid JSON")
        return None
    problem = _state_problem(data)
    if problem:
        _damaged(path, problem)
        return None
    return data  # type: ignore[no-any-return]


def _no_state_reason(raw: dict[str, Any] | None) -> str:
    """Why there is no usable state: none, or one written by another version of cuberun."""
    if raw is None:
        return "no previous successful run"
    if raw["version"] < VERSION:
        return "the last run was recorded by an earlier cuberun version"
    return f"the last run was recorded by a newer cuberun version (state version {raw['version']}, this one reads {VERSION})"


def _damaged(path: Path, problem: str) -> None:
    from cuberun.console import warn

    warn(f"ignoring the damaged up-to-date state {path}: {problem}; the task runs again")


def _state_problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return f"expected a JSON object, found {type(data).__name__}"
    for key in ("identity", "inputs", "outputs"):
        if not isinstance(data.get(key, {}), dict):
            return f"'{key}' is {type(data[key]).__name__}, not an object"
    identity = data.get("identity", {})
    for key in ("parameters", "runner"):
        if not isinstance(identity.get(key, {}), dict):
            return f"'identity.{key}' is not an object"
    for group in ("inputs", "outputs"):
        for name, value in data.get(group, {}).items():
            if not isinstance(value, dict) or not isinstance(value.get("members", {}), dict):
                return f"'{group}.{name}' is not an object with 'members'"
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        return "'version' is missing or not a whole number"
    return None


def fingerprint_inputs(rt: ResolvedTask, cache: HashCache) -> dict[str, Fingerprint]:
    """The inputs' fingerprints; a FIFO, socket or device in an input is a one-line error."""
    from cuberun.errors import UsageError
    from cuberun.fingerprint import NotRegular

    exclude = _excluded(rt)
    result: dict[str, Fingerprint] = {}
    for p in rt.params:
        if p.io != "input":
            continue
        try:
            result[p.name] = fingerprint(str(p.host_path), cache, exclude, label=f"input {p.name} of task '{rt.name}'")
        except NotRegular as exc:
            raise UsageError(f"task '{rt.name}', input '{p.name}': {exc.describe()}: cuberun reads and fingerprints only regular files",
                             "move it out of the input (or point the parameter elsewhere)") from None
    return result


def check(rt: ResolvedTask, identity: dict[str, Any], key: str, *, force: bool = False) -> Decision:
    from cuberun.safeio import target_of

    path = state_path(rt.workspace, key)
    target_of(path, what="up-to-date state", hint=STATE_HINT)  # before the task runs: it is written after
    raw = read_state(path)
    state = raw if raw is not None and raw.get("version") == VERSION else None
    cache = HashCache.from_json(state.get("hash_cache") if state else None)
    inputs = fingerprint_inputs(rt, cache)
    decision = Decision(True, [], identity, inputs, cache)
    decision.before = {p.name: _stats(str(p.host_path), [str(rt.workspace / ".cuberun")]) for p in rt.params if p.io == "output"}
    if force:
        decision.reasons.append("--force")
        return decision
    if state is None:
        decision.reasons.append(_no_state_reason(raw))
        return decision
    old = state.get("identity", {})
    decision.far_end_before = state.get("far_end")
    reasons = decision.reasons
    old_params = old.get("parameters", {})
    for name, value in identity["parameters"].items():
        if old_params.get(name) != value:
            reasons.append(f"parameter {name} changed" if name in old_params else f"parameter {name} is new")
    if old.get("command") != identity["command"]:
        reasons.append("command changed")
    old_runner, new_runner = old.get("runner", {}), identity["runner"]
    reasons.extend(runner_reasons(old_runner if isinstance(old_runner, dict) else {}, new_runner, rt.workspace))
    old_inputs = state.get("inputs", {})
    for name, fp in inputs.items():
        prev = old_inputs.get(name)
        if prev is None:
            reasons.append(f"input {name} is new")
        elif prev.get("sha256") != fp.sha256:
            what = diff_summary(prev.get("members", {}), fp.members) if fp.type == "directory" else "content differs"
            reasons.append(f"input {name} changed: {what}")
    old_outputs = state.get("outputs", {})
    for p in rt.params:
        if p.io != "output":
            continue
        owned = (old_outputs.get(p.name) or {}).get("members", {})
        decision.owned[p.name] = dict(owned)
        if not p.host_path.exists():
            reasons.append(f"output {p.name} is missing")
            continue
        changed = _check_owned(str(p.host_path), p.type, owned, cache)
        if changed:
            reasons.append(f"output {p.name} changed since the last run: {changed}")
    decision.run = bool(reasons)
    if not reasons:
        reasons.append("up to date: code, environment, inputs, parameters and command unchanged, outputs intact")
        resumed = [p.name for p in checkpoint_inputs(rt)]
        if resumed:
            reasons[-1] += f" (input {', '.join(resumed)} is the task's own output, as its last run left it: --force runs it again from there)"
    return decision


CODE_KEYS = ("code", "build_context")  # code identities (codeid.py): what changed is named


def runner_reasons(old: dict[str, Any], new: dict[str, Any], workspace: Path) -> list[str]:
    """Why the runner fingerprints differ, one reason per difference, code first."""
    keys = sorted(set(old) | set(new), key=lambda k: (k not in CODE_KEYS, k))
    labels = _identity_labels(new.get("runner") or old.get("runner"))
    reasons: list[str] = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        if k in CODE_KEYS:
            reasons.append(_code_reason(a, b, workspace))
        elif k == "env" and isinstance(a, dict) and isinstance(b, dict):
            reasons.extend(_env_reasons(a, b))
        elif k == "program" and isinstance(a, dict) and isinstance(b, dict):
            reasons.extend(_program_reasons(a, b))
        elif k in labels:
            reasons.append(f"{labels[k]} changed")
        elif k == "cwd":
            reasons.append(f"working directory changed: {a} -> {b}")
        elif k == "command":
            reasons.append("command changed")
        else:
            reasons.append(f"runner {k} changed")
    return reasons


def _identity_labels(runner: Any) -> Mapping[str, str]:
    """What the runner named in a fingerprint says its own keys are (Runner.identity_labels)."""
    from cuberun.errors import CuberunError
    from cuberun.runners import registry

    if not isinstance(runner, str):
        return {}
    try:
        return registry.get(runner).identity_labels
    except CuberunError:
        return {}


def _code_reason(old: Any, new: Any, workspace: Path) -> str:
    from cuberun import codeid

    if not isinstance(new, dict):
        return "code no longer part of the identity"
    if not isinstance(old, dict):
        return "code not recorded by the last run"
    detail = codeid.explain(workspace, str(old.get("sha256")), str(new.get("sha256")))
    return f"code changed: {detail}" if detail else f"code changed ({new.get('files')} files now; the earlier listing is not kept)"


def _env_reasons(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = [f"env var {k} changed" for k in sorted(old.keys() & new.keys()) if old[k] != new[k]]
    out += [f"env var {k} is new" for k in sorted(new.keys() - old.keys())]
    out += [f"env var {k} removed" for k in sorted(old.keys() - new.keys())]
    return out


def _program_reasons(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    from cuberun.pyidentity import describe_packages

    def who(p: dict[str, Any]) -> str:
        return f"{p.get('real') or p.get('path')}" + (f" ({p['version']})" if p.get("version") else "")

    out = []
    rest = {k for k in set(old) | set(new) if old.get(k) != new.get(k)} - {"packages"}
    if rest == {"path"} and old.get("version"):
        rest = set()  # the same interpreter reached another way (the command says how)
    if rest:
        what = "interpreter" if old.get("version") or new.get("version") else "program"
        out.append(f"{what} changed: {who(old)} -> {who(new)}" if who(old) != who(new) else f"{what} {who(new)} changed")
    a, b = old.get("packages"), new.get("packages")
    if a != b:
        detail = describe_packages(a, b) if isinstance(a, dict) and isinstance(b, dict) else ""
        out.append(f"package set changed: {detail}" if detail else "package set changed")
    return out


def far_end_reasons(decision: Decision, now: dict[str, Any] | None) -> list[str]:
    """Why the far end makes an otherwise up-to-date task run (none when it is unchanged)."""
    before = decision.far_end_before
    if now is None and before is None:
        return []
    if now is None or "unknown" in now:
        why = now.get("unknown") if isinstance(now, dict) else "not asked"
        return [f"the far end cannot be checked ({why})"]
    if not isinstance(before, dict):
        return ["the far end was not recorded by the last run"]
    if before == now:
        return []
    return ["far end: " + r for r in runner_reasons(before, now, Path("/nonexistent"))] or ["far end changed"]


def _members(fp: Fingerprint) -> dict[str, str]:
    return fp.members if fp.type == "directory" and len(fp.members) <= 20000 else {}


def refresh_inputs(rt: ResolvedTask, decision: Decision) -> None:
    """Fingerprint the inputs again after the task ran (in a chain submitted at once, earlier
    tasks produce them while this one waits), so the saved state matches what it consumed."""
    decision.inputs = fingerprint_inputs(rt, decision.cache)


def _stats(path: str, exclude: list[str]) -> dict[str, tuple[int, int, int]]:
    from cuberun.fingerprint import _walk

    if os.path.isfile(path):
        st = os.stat(path)
        return {os.path.basename(path): (st.st_size, st.st_mtime_ns, st.st_ino)}
    if not os.path.isdir(path):
        return {}
    found = {}
    for rel, full in _walk(path, exclude):
        try:
            st = os.stat(full)
        except OSError:
            continue
        found[rel] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return found


def _check_owned(path: str, ptype: str, owned: dict[str, str], cache: HashCache) -> str:
    """'' when every file the last run wrote is still there unchanged, else a summary. Files
    other tasks added to a shared output directory (mnist's logs/) do not count."""
    import stat

    from cuberun.fingerprint import NotRegular, file_sha256

    missing = changed = 0
    for rel, digest in owned.items():
        if ptype != "file" and (os.path.isabs(rel) or ".." in rel.split(os.sep)):
            changed += 1  # not a file of this output (a damaged state): never looked at
            continue
        full = path if ptype == "file" else os.path.join(path, rel)
        try:
            st = os.stat(full)
        except (OSError, ValueError):
            missing += 1
            continue
        if not stat.S_ISREG(st.st_mode):
            changed += 1  # no longer a regular file: never opened (a FIFO would block)
            continue
        key = (st.st_size, st.st_mtime_ns, st.st_ino)
        known = cache.entries.get(full)
        try:
            current = known[1] if known is not None and known[0] == key else file_sha256(full)
        except (OSError, NotRegular):
            changed += 1  # unreadable, or replaced by a FIFO/socket/device: not what the last run wrote
            continue
        cache.entries[full] = (key, current)
        if current != digest:
            changed += 1
    parts = [f"{n} {w}" for n, w in ((missing, "missing"), (changed, "changed")) if n]
    return f"{missing + changed} file{'s' if missing + changed != 1 else ''} ({', '.join(parts)})" if parts else ""


def save(rt: ResolvedTask, key: str, decision: Decision, run_id: str | None) -> dict[str, Any]:
    """Record a successful run; returns the output fingerprints (for the run record). An output's
    `members` are the files this run wrote (new or modified since the check), plus files earlier
    runs of the task wrote that still exist: what the next check verifies."""
    from cuberun.digests import sha256

    cache = decision.cache
    bookkeeping = [str(rt.workspace / ".cuberun")]
    for p in checkpoint_inputs(rt):  # what the next run resumes from is what this run left
        decision.inputs[p.name] = fingerprint(str(p.host_path), cache, _excluded(rt))
    recorded: dict[str, Any] = {}
    result: dict[str, Any] = {}
    for p in rt.params:
        if p.io != "output":
            continue
        fp = fingerprint(str(p.host_path), cache, bookkeeping, special="skip", label=f"output {p.name} of task '{rt.name}'")
        before = decision.before.get(p.name, {})
        after = _stats(str(p.host_path), bookkeeping)
        owned = {rel: fp.members[rel] for rel in fp.members if before.get(rel) != after.get(rel)}
        owned.update({rel: fp.members[rel] for rel in decision.owned.get(p.name, {}) if rel in fp.members})
        if p.type == "file" and fp.type == "file":
            owned = dict(fp.members)
        if len(owned) > 50000:
            owned = {}
        h = sha256("".join(f"{k}\0{v}\n" for k, v in sorted(owned.items())).encode("utf-8", "surrogateescape"))
        recorded[p.name] = {**fp.to_json(), "owned_sha256": h.hexdigest(), "members": owned}
        result[p.name] = fp.to_json()
    state = {
        "version": VERSION,
        "run_id": run_id,
        "identity": decision.identity,
        "inputs": {n: {**fp.to_json(), "members": _members(fp)} for n, fp in decision.inputs.items()},
        "outputs": recorded,
        **({"far_end": decision.far_end} if decision.far_end is not None else {}),
        "hash_cache": _prune(cache, rt),
    }
    from cuberun.safeio import write_file

    _save_code_snapshots(rt.workspace, decision.identity.get("runner"))
    write_file(state_path(rt.workspace, key), json.dumps(state), what="up-to-date state", hint=STATE_HINT)
    return result


def _save_code_snapshots(workspace: Path, runner_fp: Any) -> None:
    for k in CODE_KEYS:
        code = runner_fp.get(k) if isinstance(runner_fp, dict) else None
        if isinstance(code, dict) and isinstance(code.get("sha256"), str):
            from cuberun import codeid  # here: a run without a code identity (docker, pull) does not load it

            codeid.save_snapshot(workspace, code["sha256"])


def _prune(cache: HashCache, rt: ResolvedTask) -> dict[str, Any]:
    roots = tuple(str(p.host_path) for p in rt.params)
    kept = {k: v for k, v in cache.entries.items() if k.startswith(roots)}
    return HashCache(kept).to_json()
