#!/usr/bin/env python3
"""A stand-in for the `backend.ai` client (backend.ai-client 23.9) that talks to no manager.

It records every call (argv and the client environment) in ``$FAKE_BAI_STATE/calls.jsonl``,
keeps vfolders as directories under ``$FAKE_BAI_STATE/vfolders/<name>`` and sessions in
``sessions.json``, and *runs* a batch session's startup command with ``/bin/sh -c`` when the
session is watched, so the tests check the real startup command (quoting, archives, exit codes).
The vfolder must be mounted at its directory (the tests set ``mount_point`` to it).

It imitates the client's observable behaviour that cuberun relies on: option parsing that
rejects unknown options (exit 2), ``session create`` printing "Session ID <uuid> is enqueued"
on stderr, ``session watch --output json`` echoing event dicts in Python repr and exiting with
the event's exitCode (0 after ``session_terminated``/``kernel_cancelled``, 1 on "No matching
items", 3 on --max-wait), ``session info`` JSON, ``vfolder download`` refusing to overwrite,
``vfolder rm`` asking for confirmation on stdin.

``$FAKE_BAI_STATE/scenario.json`` changes the behaviour: ``{"watch": "normal" | "no-match" |
"terminated-only" | "timeout" | "hang", "create_fail": "message"}``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

STATE = Path(os.environ.get("FAKE_BAI_STATE", "/nonexistent"))


def _load(name: str, default: Any) -> Any:
    try:
        return json.loads((STATE / name).read_text())
    except (OSError, ValueError):
        return default


def _save(name: str, data: Any) -> None:
    tmp = STATE / f".{name}.tmp"
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, STATE / name)


def _record(argv: list[str]) -> None:
    entry = {
        "argv": argv,
        "endpoint": os.environ.get("BACKEND_ENDPOINT"),
        "access_key": os.environ.get("BACKEND_ACCESS_KEY"),
        "secret_key_set": bool(os.environ.get("BACKEND_SECRET_KEY")),
        "stdin_tty": sys.stdin.isatty() if sys.stdin else False,
    }
    with open(STATE / "calls.jsonl", "a") as fh:
        fh.write(json.dumps(entry) + "\n")


def _usage(message: str) -> int:
    sys.stderr.write(f"Usage: backend.ai ...\nError: {message}\n")
    return 2


def _fail(message: str) -> int:
    sys.stderr.write(f"\u2717 {message}\n")
    return 1


def _parse(args: list[str], spec: dict[str, str]) -> tuple[dict[str, list[str]], list[str]] | None:
    """spec: option -> 'flag' | 'value'; repeated values accumulate. Unknown options -> None."""
    opts: dict[str, list[str]] = {}
    pos: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("-") and a != "-":
            key, eq, val = a.partition("=")
            if key not in spec:
                sys.stderr.write(f"Error: No such option: {key}\n")
                return None
            if spec[key] == "flag":
                opts.setdefault(key, []).append("1")
            else:
                if not eq:
                    i += 1
                    if i >= len(args):
                        sys.stderr.write(f"Error: Option '{key}' requires an argument.\n")
                        return None
                    val = args[i]
                opts.setdefault(key, []).append(val)
        else:
            pos.append(a)
        i += 1
    return opts, pos


def _vfolder_dir(name: str) -> Path:
    return STATE / "vfolders" / name


CREATE_SPEC = dict.fromkeys(("-t", "--name", "-c", "--startup-command", "-m", "--mount", "-v", "-r", "--resources", "-e", "--env", "--depends", "--type", "-g", "--group", "--scaling-group", "--resource-opts", "--max-wait", "--tag"), "value")
CREATE_SPEC["--enqueue-only"] = "flag"


def session_create(args: list[str]) -> int:
    parsed = _parse(args, CREATE_SPEC)
    if parsed is None:
        return 2
    opts, pos = parsed
    if len(pos) != 1:
        return _usage("IMAGE is required (exactly one)")
    scenario = _load("scenario.json", {})
    if scenario.get("create_fail"):
        return _fail(f"BackendAPIError: 400 Bad Request\n{scenario['create_fail']}")
    name = (opts.get("-t") or opts.get("--name") or [None])[-1]
    if not name:
        return _usage("fake: -t NAME is required by the tests")
    mounts = opts.get("-m", []) + opts.get("--mount", []) + opts.get("-v", [])
    sessions = _load("sessions.json", {})
    sid = str(uuid.uuid4())
    sessions[name] = {
        "id": sid, "name": name, "image": pos[0], "type": (opts.get("--type") or ["interactive"])[-1], "status": "PENDING",
        "startup": (opts.get("-c") or opts.get("--startup-command") or [""])[-1], "mounts": mounts,
        "env": dict(e.split("=", 1) for e in opts.get("-e", []) + opts.get("--env", [])),
        "resources": opts.get("-r", []) + opts.get("--resources", []), "depends": opts.get("--depends", []),
        "enqueue_only": "--enqueue-only" in opts, "result": "UNDEFINED", "exit_code": None, "log": "",
    }
    _save("sessions.json", sessions)
    sys.stderr.write(f"\x1b[2K\x1b[36m\u2219\x1b[0m Session ID {sid} is enqueued for scheduling.\n")
    return 0


def _find(sessions: dict[str, Any], ref: str) -> dict[str, Any] | None:
    for s in sessions.values():
        if s["name"] == ref or s["id"] == ref:
            return s
    return None


def _run_session(sessions: dict[str, Any], s: dict[str, Any]) -> None:
    for dep in s["depends"]:
        d = _find(sessions, dep)
        if d is None or d["result"] != "SUCCESS":
            s["status"], s["status_info"], s["result"] = "CANCELLED", "dependency-failed", "FAILURE"
            return
    for mount in s["mounts"]:
        vf, _, target = mount.partition(":")
        if target and os.path.realpath(target) != os.path.realpath(_vfolder_dir(vf)):
            s["status"], s["status_info"], s["result"] = "ERROR", f"fake: mount {mount} is not the vfolder directory", "FAILURE"
            return
    home = STATE / "home" / s["name"]
    home.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8", **s["env"]}
    proc = subprocess.run(["/bin/sh", "-c", s["startup"]], cwd=str(home), env=env, capture_output=True, text=True, timeout=120)
    s["log"] = "binding to tcp://*:2000\n" + proc.stdout + proc.stderr
    s["exit_code"] = proc.returncode
    s["status"] = "TERMINATED"
    s["result"] = "SUCCESS" if proc.returncode == 0 else "FAILURE"
    s["status_data"] = {"kernel": {"exit_code": proc.returncode}, "session": {"status": "terminating"}}


def session_watch(args: list[str]) -> int:
    parsed = _parse(args, {"--output": "value", "--max-wait": "value", "--scope": "value", "-o": "value", "--owner": "value"})
    if parsed is None:
        return 2
    opts, pos = parsed
    if (opts.get("--output") or ["console"])[-1] != "json":
        return _usage("fake: the tests expect --output json")
    scenario = _load("scenario.json", {})
    sessions = _load("sessions.json", {})
    active = [s for s in sessions.values() if s["status"] in ("PENDING", "RUNNING")]
    match = next((s for s in active if pos and s["name"].startswith(pos[0])), None)
    mode = scenario.get("watch", "normal")
    if match is None or mode == "no-match":
        if match is not None:  # it ran and ended before the watch could see it
            _run_session(sessions, match)
            _save("sessions.json", sessions)
        sys.stderr.write(json.dumps({"ok": False, "reason": "No matching items."}) + "\n")
        return 1
    if mode == "timeout":
        match["status"] = "RUNNING"
        _save("sessions.json", sessions)
        return 3
    if mode == "hang":
        match["status"] = "RUNNING"
        _save("sessions.json", sessions)
        (STATE / "watch-started").write_text(str(os.getpid()))
        signal.signal(signal.SIGINT, lambda *a: sys.exit(1))
        time.sleep(60)
        return 3
    print({"sessionId": match["id"], "event": "session_enqueued"}, flush=True)
    _run_session(sessions, match)
    _save("sessions.json", sessions)
    sid = match["id"]
    if match["status"] == "CANCELLED":
        print({"sessionId": sid, "reason": match.get("status_info"), "event": "session_cancelled"})
        return 0
    if match["status"] == "ERROR":
        print({"sessionId": sid, "reason": match.get("status_info"), "event": "kernel_cancelled"})
        return 0
    print({"sessionId": sid, "event": "session_started"})
    if mode == "terminated-only":
        print({"sessionId": sid, "reason": "user-requested", "event": "session_terminated"})
        return 0
    code = match["exit_code"]
    if code == 0:
        print({"sessionId": sid, "exitCode": 0, "event": "session_success"})
        return 0
    print({"sessionId": sid, "exitCode": code, "event": "session_failure"})
    return code if 0 < code < 256 else 1


def session_info(args: list[str], output: str) -> int:
    if output != "json" or len(args) != 1:
        return _usage("fake: session info --output json UUID")
    try:
        uuid.UUID(args[0])
    except ValueError:
        return _fail("In API v5 or later, the session ID must be given in the UUID format.")
    s = _find(_load("sessions.json", {}), args[0])
    if s is None:
        print(json.dumps({"error": "There is no such compute session."}))
        return 1
    item = {"name": s["name"], "session_id": s["id"], "image": s["image"], "status": s["status"], "status_info": s.get("status_info"),
            "status_data": json.dumps(s.get("status_data") or {}), "result": s["result"]}
    print(json.dumps({"count": 1, "total_count": 1, "items": [item]}, indent=2))
    return 0


def session_logs(args: list[str]) -> int:
    if len(args) != 1:
        return _usage("SESSID is required")
    s = _find(_load("sessions.json", {}), args[0])
    if s is None:
        return _fail("BackendAPIError: 404 Not Found")
    sys.stderr.write("\u22ef Retrieving live container logs...\n")
    print(s["log"])
    sys.stderr.write("\u2713 End of logs.\n")
    return 0


def session_rm(args: list[str]) -> int:
    parsed = _parse(args, {"-f": "flag", "--forced": "flag", "-r": "flag", "--recursive": "flag", "-s": "flag", "-o": "value"})
    if parsed is None:
        return 2
    _, names = parsed
    sessions = _load("sessions.json", {})
    failed = False
    for name in names:
        s = _find(sessions, name)
        if s is None:
            failed = True
            continue
        if s["status"] in ("PENDING", "RUNNING"):
            s["status"], s["result"], s["status_info"] = "CANCELLED" if s["status"] == "PENDING" else "TERMINATED", "FAILURE", "user-requested"
    _save("sessions.json", sessions)
    return 1 if failed else 0


def vfolder(args: list[str]) -> int:
    if not args:
        return _usage("missing command")
    cmd, rest = args[0], args[1:]
    if cmd == "info":
        if len(rest) != 1:
            return _usage("NAME")
        if not _vfolder_dir(rest[0]).is_dir():
            return _fail(f'BackendAPIError: 404 Not Found\nVirtual folder "{rest[0]}" not found.')
        print(f'Virtual folder "{rest[0]}" (ID: fake)')
        return 0
    if cmd == "create":
        if not 1 <= len(rest) <= 2:
            return _usage("NAME [HOST]")
        if _vfolder_dir(rest[0]).exists():
            return _fail("BackendAPIError: 400 Bad Request\nThe virtual folder already exists with the same name.")
        _vfolder_dir(rest[0]).mkdir(parents=True)
        print(f'Virtual folder "{rest[0]}" is created.')
        return 0
    if cmd in ("upload", "download"):
        parsed = _parse(rest, {"-b": "value", "--base-dir": "value", "-r": "flag", "--recursive": "flag", "--chunk-size": "value"})
        if parsed is None:
            return 2
        opts, pos = parsed
        if len(pos) < 2:
            return _usage("NAME FILENAMES...")
        base = Path((opts.get("-b") or opts.get("--base-dir") or [os.getcwd()])[-1])
        vf = _vfolder_dir(pos[0])
        if not vf.is_dir():
            return _fail("BackendAPIError: 404 Not Found")
        for rel in pos[1:]:
            if cmd == "upload":
                src = base / rel
                if src.is_dir():
                    return _fail(f"Failed to upload {src}. Use recursive option to upload directories.")
                (vf / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, vf / rel)
            else:
                if (base / rel).exists():
                    return _fail(f"('The target file already exists', '{Path(rel).name}')")
                if not (vf / rel).is_file():
                    return _fail("BackendAPIError: 404 Not Found\nFile not found")
                (base / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(vf / rel, base / rel)
        print("Done.")
        return 0
    if cmd == "rm":
        if len(rest) < 2:
            return _usage("NAME FILENAMES...")
        answer = sys.stdin.readline().strip().lower() if sys.stdin else ""
        if answer not in ("y", "yes", ""):
            print("Cancelled")
            return 1
        if answer == "":
            return _fail("EOFError")
        for rel in rest[1:]:
            target = _vfolder_dir(rest[0]) / rel
            if target.is_file():
                target.unlink()
        return 0
    return _usage(f"No such command '{cmd}'.")


def main(argv: list[str]) -> int:
    STATE.mkdir(parents=True, exist_ok=True)
    _record(argv)
    output = "console"
    args = list(argv)
    while args and args[0].startswith("--"):
        if args[0] == "--output" and len(args) > 1:
            output = args[1]
            args = args[2:]
        elif args[0] == "--skip-sslcert-validation":
            args = args[1:]
        else:
            return _usage(f"No such option: {args[0]}")
    if not args:
        return _usage("missing command")
    if args[0] == "session" and len(args) > 1:
        cmd, rest = args[1], args[2:]
        if cmd in ("create", "start"):
            return session_create(rest)
        if cmd == "watch":
            return session_watch(rest)
        if cmd == "info":
            return session_info(rest, output)
        if cmd == "logs":
            return session_logs(rest)
        if cmd in ("rm", "destroy", "kill"):
            return session_rm(rest)
        return _usage(f"No such command '{cmd}'.")
    if args[0] == "vfolder":
        return vfolder(args[1:])
    return _usage(f"No such command '{args[0]}'.")


def install(bin_dir: Path, state: Path) -> Path:
    """Write a `backend.ai` executable into bin_dir that runs this fake with state dir `state`."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    state.mkdir(parents=True, exist_ok=True)
    exe = bin_dir / "backend.ai"
    exe.write_text(f"#!/bin/sh\nFAKE_BAI_STATE={_sh(str(state))} exec {_sh(sys.executable)} {_sh(str(Path(__file__).resolve()))} \"$@\"\n")
    exe.chmod(0o755)
    return exe


def _sh(text: str) -> str:
    import shlex

    return shlex.quote(text)


def calls(state: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in (state / "calls.jsonl").read_text().splitlines() if line.strip()]
    except OSError:
        return []


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
