"""The ssh runner (the Runner contract): configure, dry-run steps, run, far-end identity, inspect.
The layers below: config.py < commands.py < connection.py < install.py (see the package docstring)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar, cast

from cuberun.errors import BackendError, CuberunError
from cuberun.runners import nested
from cuberun.runners.base import Step, TaskPlan
from cuberun.runners.ssh.config import SCHEMA
from cuberun.runners.ssh.install import SSHInstall
from cuberun.runners.ssh.sync import Plan, _last_line, _Sink, ssh_problem
from cuberun.schema import Field

if TYPE_CHECKING:
    from cuberun.process import Outcome
    from cuberun.resolve import ResolvedTask

# -- the runner ------------------------------------------------------------------------------
def _far_identity(fp: Mapping[str, Any]) -> dict[str, Any]:
    """A remote runner fingerprint as the far end's identity: without the remote copy of the code
    (this side's code identity covers it; the copy lags until the next upload)."""
    return {k: v for k, v in fp.items() if k != "code"}


def _hostname(record: Mapping[str, Any] | None) -> str | None:
    """The host name the remote cuberun recorded (what the ssh alias resolves to, in effect)."""
    if record is None:
        return None
    env = record.get("environment")
    host = record.get("host") or (env.get("host") if isinstance(env, dict) else None)
    return str(host) if host else None


def _timed_out(record: Mapping[str, Any] | None, exit_code: int) -> float | None:
    """The seconds of the time limit at which the remote cuberun stopped the task (exit 124 and its
    record says `timed_out`), else None."""
    from cuberun.process import EXIT_TIMEOUT

    details = record.get("details") if record is not None else None
    if exit_code != EXIT_TIMEOUT or not isinstance(details, dict) or details.get("timed_out") is not True:
        return None
    seconds = details.get("timeout")
    return float(seconds) if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) else None


class SSHRunner(SSHInstall):
    name = "ssh"
    section = None  # the platform entry configures it; the cube carries no host names
    schema: ClassVar[dict[str, Field]] = SCHEMA

    # -- Runner interface --------------------------------------------------------------------
    def unavailable_reason(self) -> str | None:
        from cuberun.process import which

        for tool in ("ssh", "rsync"):
            if which(tool) is None:
                return f"{tool} is not installed on this machine (the ssh runner uses OpenSSH and rsync). Hint: install it, e.g. apt-get install {'openssh-client' if tool == 'ssh' else 'rsync'}"
        return None

    def _configure_needed(self, plan: Plan) -> bool:
        state = self._read_state(self._cube_state(plan))
        return state.get("sources") != self.sources_fingerprint(plan) or state.get("signature") != self._configure_signature(plan)

    def configure_steps(self) -> list[Step]:
        steps: list[Step] = []
        state = self._read_state(self._install_state())
        if self.mode == "venv" and (state.get("install"), state.get("sources")) != (self._install_signature(), self._source_signature()):
            steps += self.install_steps()
        plan = self.remote_plan()
        if self._configure_needed(plan):
            steps += [Step(tuple(a), "sync") for a in self.upload_argvs(plan, items=False)]
            steps.append(Step(tuple(self.ssh_argv(self.remote_configure_argv(plan, redact=True))), "configure"))
        return steps

    def configure(self) -> None:
        """Make the remote ready: cuberun there (cuberun: venv), the cube sources, then the
        remote platform's own configure (image build/pull, env). Quiet, and without a round trip,
        when neither the sources nor the platform changed since the last time."""
        self._ensure_connection()
        self._ensure_cuberun()
        plan = self.remote_plan()
        if not self._configure_needed(plan):
            return
        fingerprint = self.sources_fingerprint(plan)
        interrupted, _ = self._transfer(self.upload_argvs(plan, items=False), "upload",
                                        f"uploading the sources of cube '{self.cube.name}' to {self.target.host}")
        if interrupted is not None:
            raise KeyboardInterrupt
        print(f"cuberun: configuring cube '{self.cube.name}' on {self.target.host} (remote platform {self.remote_platform})",
              file=sys.stderr, flush=True)
        for attempt in (1, 2):
            code, text = self._remote(self.remote_configure_argv(plan))
            if code == 0:
                break
            if self._cuberun_missing_after(code):
                if self.mode != "venv" or attempt == 2:
                    raise self._missing_error()
                self._ensure_cuberun(force=True)
                continue
            raise self._remote_error(code, text, "the remote configure", "see its output above")
        self._write_state(self._cube_state(plan), {"sources": fingerprint, "signature": self._configure_signature(plan), "rcube": plan.rcube})

    def run_steps(self, task: ResolvedTask) -> list[Step]:
        plan = self.remote_plan(task)
        steps = [Step(tuple(a), "sync") for a in self.upload_argvs(plan)]
        steps.append(Step(tuple(self.ssh_argv(self.remote_run_argv(task, plan, redact=True))), "run"))
        steps += [Step(tuple(a), "fetch") for a in self.fetch_argvs(plan, task)]
        return steps

    def sections(self) -> list[str] | None:
        return None  # the remote platform reads what its runner reads: not known on this side

    def far_end(self, task: ResolvedTask) -> dict[str, Any] | None:
        """The remote cuberun's identity of the task on its platform (`run --explain --json`):
        its interpreter and packages, image digest, environment... The code is left out: this
        side's code identity covers what is sent. {"unknown": why} when it cannot be asked."""
        from cuberun.errors import CuberunError

        try:
            self._ensure_connection()
            self._ensure_cuberun()
            plan = self.remote_plan(task)
            argv = [*self._env_prefix(False), *self.cuberun_argv(), "run", f"--mlcube={plan.rcube}", f"--task={task.name}",
                    f"--platform={self.remote_platform}", f"--workspace={plan.rws}", "--no-deps", "--explain", "--json",
                    "--allow-missing-inputs"]
            argv += [f"-P{value}" for value in self.options.config_overrides if not value.startswith("runner.")]
            argv += [f"{item.name}={item.value}" for item in plan.items]
            res = self._capture(self.ssh_argv(argv))
        except CuberunError as exc:
            return {"unknown": exc.lines()[0]}
        if res.returncode != 0:
            return {"unknown": f"the remote cuberun said: {_last_line(res.stderr) or 'exit ' + str(res.returncode)}"}
        try:
            report = json.loads(res.stdout)
            runner = report[-1]["identity"]["runner"]
        except (ValueError, LookupError, TypeError):
            return {"unknown": "the remote cuberun gave no identity (an older version?)"}
        return _far_identity(runner)

    def far_end_of(self, details: Mapping[str, Any]) -> dict[str, Any] | None:
        remote = details.get("remote") if isinstance(details, Mapping) else None
        record = remote.get("record") if isinstance(remote, Mapping) else None
        if not isinstance(record, str):
            return None
        from cuberun.safeio import read_json

        try:
            data = read_json(Path(record, "record.json"))
        except (CuberunError, ValueError, RecursionError):
            return None
        fp = data.get("runner_fingerprint") if isinstance(data, dict) else None
        return _far_identity(fp) if isinstance(fp, dict) else None

    def fingerprint(self, task: ResolvedTask) -> dict[str, Any]:
        """The remote command and where it runs (not the sync commands: their ssh options, such as
        the control socket path, do not change the result)."""
        t = self.target
        plan = self.remote_plan(task)
        return {"runner": self.name, "command": [self.remote_run_argv(task, plan, redact=True)], "host": t.host, "user": t.user,
                "port": t.port, "ssh_config": t.ssh_config, "remote_platform": self.remote_platform,
                "code": self.cube_code().to_json()}

    def run(self, planned: TaskPlan, log_path: str) -> Outcome:
        from cuberun.process import STDIN_OPEN, Outcome, stream

        task = planned.task

        started = time.monotonic()
        self._ensure_connection()
        self._ensure_cuberun()
        plan = self.remote_plan(task)
        t = self.target
        details: dict[str, Any] = {
            "host": t.host, "user": t.user, "port": t.port, "remote_platform": self.remote_platform,
            "cube_dir": plan.rcube, "workspace": plan.rws,
        }
        interrupted, up = self._transfer(self.upload_argvs(plan), "upload", f"uploading inputs of task '{task.name}' to {t.host}")
        details["upload"] = up
        if interrupted is not None:
            return Outcome(interrupted.exit_code, time.monotonic() - started, True, received=interrupted.received,
                           details={"remote": details})
        remote = self.remote_run_argv(task, plan)
        cancel = self.cancel_argv(plan, task)

        def on_cancel() -> None:
            from cuberun.process import capture

            capture(cancel, timeout=15)

        out = getattr(sys.stdout, "buffer", None)
        with open(log_path, "ab") as log:
            for attempt in (1, 2):
                shown, logged = nested.HandshakeFilter(out), nested.HandshakeFilter(log)  # the remote cuberun's events are for us
                sink = _Sink(cast("IO[bytes]", shown))
                # stdin stays open (nothing is written): its end tells the remote cuberun we are gone
                outcome = stream(self.ssh_argv(remote), log=cast("IO[bytes]", logged), echo=sink.io(), on_cancel=on_cancel, stdin=STDIN_OPEN)
                shown.close()
                logged.close()
                if outcome.interrupted or outcome.exit_code not in (126, 127) or not self._cuberun_missing_after(outcome.exit_code):
                    break
                if self.mode != "venv" or attempt == 2:
                    raise self._missing_error()
                self._ensure_cuberun(force=True)
        if outcome.exit_code == 255 and not outcome.interrupted:
            problem = ssh_problem("\n".join(sink.text().splitlines()[-3:]), t.where(), self.test_command())
            if problem is not None:
                raise BackendError(problem.message, problem.hint)
            self._check_still_connected(task)
        last = nested.events(bytes(sink.tail))
        remote_run_id = nested.events(bytes(sink.head)).run_id or last.run_id
        if remote_run_id is None and outcome.exit_code != 0 and not outcome.interrupted:
            # the remote cuberun failed before it started the task (its handshake names the run when it does)
            mismatch = nested.mismatch(last, sink.text(), f"on {t.host}")
            if mismatch is not None:
                raise BackendError(mismatch, nested.MISMATCH_HINT, exit_code=outcome.exit_code)
            why = last.error or _last_line(sink.text())
            raise BackendError(f"the remote cuberun on {t.host} stopped before task '{task.name}' ran (exit {outcome.exit_code}): {why}",
                               exit_code=outcome.exit_code)
        details["run_id"] = remote_run_id
        details["exit_code"] = outcome.exit_code
        details["remote_seconds"] = round(outcome.elapsed, 3)
        stopped: float | None = None  # the remote cuberun stopped the task at its time limit (seconds)
        if not outcome.interrupted:
            fetch_interrupted, down = self._transfer(self.fetch_argvs(plan, task, remote_run_id), "download",
                                                        f"downloading outputs of task '{task.name}' from {t.host}")
            details["download"] = down
            if fetch_interrupted is not None:
                outcome = fetch_interrupted
            elif remote_run_id:
                details["record"] = record = self._adopt_record(plan, remote_run_id, log_path)
                far = self._remote_record(record)
                details["hostname"] = _hostname(far)
                stopped = _timed_out(far, outcome.exit_code)
        reason = None
        if outcome.exit_code != 0 and not outcome.interrupted:
            # a time limit the remote cuberun enforced is worded (and recorded) as the other runners' (retry.py reads `timed_out`)
            what = f"timed out after {stopped:g} s (--timeout) and was stopped" if stopped is not None else f"failed with exit code {outcome.exit_code}"
            reason = f"{what} on {t.host} (remote run {remote_run_id or '?'}; log {log_path})"
        extra = {"timed_out": True, "timeout": stopped} if stopped is not None else {}
        return Outcome(outcome.exit_code, time.monotonic() - started, outcome.interrupted, outcome.signal, outcome.received, reason,
                       {"remote": details, **extra})

    def _check_still_connected(self, task: ResolvedTask) -> None:
        """ssh exited 255 without saying why: the task's own exit code, or the connection broke
        mid-run (sshd killed, network down)? Reconnecting tells them apart."""
        t = self.target
        probe = self._capture([*self.ssh_base(control=False), "--", t.host, "true"], timeout=(t.connect_timeout or 30) + 15)
        if probe.returncode == 0:
            return
        problem = ssh_problem(probe.stderr, t.where(), self.test_command())
        now = problem.message if problem is not None else _last_line(probe.stderr)
        raise BackendError(
            f"lost the connection to {t.where()} while task '{task.name}' was running (ssh exit 255; reconnecting: {now})",
            f"the remote cuberun stops the task when its session ends; check sshd and the network there, then run again; try: {self.test_command()}",
        )

    @staticmethod
    def _adopt_record(plan: Plan, remote_run_id: str, log_path: str) -> str | None:
        """Move the fetched remote run record next to the local one (<run dir>/remote/; the attempts
        after the first of a retried task (retry.py) share the run dir: theirs go to remote-<remote run id>/)."""
        fetched = os.path.join(plan.ws, ".cuberun", "runs", remote_run_id)
        target = os.path.join(os.path.dirname(log_path), "remote")
        if not os.path.isdir(fetched):
            return None
        if os.path.lexists(target):
            target = f"{target}-{remote_run_id}"
        try:
            if os.path.exists(target):
                import shutil

                shutil.rmtree(target)
            os.replace(fetched, target)
        except OSError:
            return fetched
        return target

    @staticmethod
    def _remote_record(record_dir: str | None) -> dict[str, Any] | None:
        """The run record of the remote cuberun (fetched and adopted), None when unreadable."""
        if not record_dir:
            return None
        from cuberun.safeio import read_json

        try:
            data = read_json(Path(record_dir, "record.json"))
        except (CuberunError, ValueError, RecursionError):
            return None
        return data if isinstance(data, dict) else None

    def inspect(self) -> dict[str, Any]:
        from cuberun.process import capture

        t = self.target
        plan = self.remote_plan()
        info: dict[str, Any] = {
            "runner": self.name, "platform": self.platform, "host": t.host, "remote_platform": self.remote_platform,
            "remote_dir": plan.rcube, "remote_workspace": plan.rws,
            "cuberun": {"mode": self.mode, "command": self.cuberun_argv(), **({"venv": self.venv} if self.mode == "venv" else {})},
        }
        resolved = capture([*self.ssh_base(control=False), "-G", "--", t.host], timeout=10)
        if resolved.returncode == 0:
            conf = dict(line.split(" ", 1) for line in resolved.stdout.splitlines() if " " in line)
            info["connection"] = {"hostname": conf.get("hostname"), "user": conf.get("user"), "port": int(conf.get("port") or 22)}
        self._ensure_connection()
        version = self._capture(self.ssh_argv(["/bin/sh", "-c", '"$@" --version', "sh", *self.cuberun_argv()]))
        if version.returncode == 255:
            raise self._fail(version.stderr, f"cannot reach {t.where()}")
        info["cuberun"]["version"] = version.stdout.strip().split()[-1] if version.returncode == 0 and version.stdout.strip() else None
        if version.returncode != 0:
            info["cuberun"]["error"] = _last_line(version.stderr or version.stdout)
        return info

    def describe_config(self) -> dict[str, Any]:
        return dict(self.config)
