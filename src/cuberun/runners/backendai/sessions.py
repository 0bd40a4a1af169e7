"""Batch sessions on the manager: `session create`, `session watch` until the session ends
(while `session logs` is polled and copied), `session info` when the watch cannot be trusted
(bounded; a manager that refuses every call is lost), `session rm`. The exit-code rules are the
table of the package docstring."""

from __future__ import annotations

import io
import json
import re
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any

from cuberun.console import say
from cuberun.errors import BackendError
from cuberun.runners.backendai.config import CLIENT_TIMEOUT, EXIT_BACKEND, EXIT_STOPPED_WAITING, INFO_GRACE, LOG_GRACE, MANAGER_GRACE
from cuberun.runners.backendai.limit import SessionClock, poll_start, timed_out
from cuberun.runners.backendai.session import (
    WAITING_STATES,
    SessionPlan,
    Verdict,
    _last_line,
    _strip,
    info_verdict,
    parse_watch_output,
    session_status,
    watch_state,
    watch_verdict,
)
from cuberun.runners.backendai.transfer import BackendAITransfer

if TYPE_CHECKING:
    from cuberun.process import Outcome

# what the client prints when it cannot reach the manager at all (not an API error)
_UNREACHABLE = re.compile(r"Request to the API endpoint has failed|ClientConnectorError|ServerDisconnectedError|Connection refused|"
                          r"Connect call failed|ClientOSError")
_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.IGNORECASE)


class BackendAISessions(BackendAITransfer):
    """Sessions, from creation to their end."""

    def _create(self, plan: SessionPlan, after: str | None) -> None:
        if after:
            real, shown = self._create_argv(plan.task, plan.name, plan.startup, after)
            plan.real_create_argv, plan.create_argv = real, shown
        res = self._call(*plan.real_create_argv[len(self.client) :], shield=True)
        text = _strip(res.stdout + "\n" + res.stderr)
        if res.returncode != 0 or "has an error during scheduling" in text:
            raise self._fail(f"session create {self.image} (task '{plan.task.name}')", res,
                             f"check that the image {self.image} is registered (backend.ai admin image list), the resources and the vfolder")
        match = _UUID.search(text)
        plan.session_id = match.group(0) if match else None
        plan.details = {"session": plan.name, "session_id": plan.session_id, "image": self.image, "vfolder": self.vfolder,
                        "endpoint": self.endpoint()}
        wait = f", after {after}" if after else ""
        say(f"created batch session {plan.name}{f' ({plan.session_id})' if plan.session_id else ''} for task '{plan.task.name}'{wait}")

    def _waiting(self, plan: SessionPlan) -> Any:
        """The progress display of the session's wait before its task runs (queued, preparing, pulling)."""
        from cuberun.progress import Waiting

        return Waiting(f"Backend.AI session {plan.name} (task '{plan.task.name}') waits to start", WAITING_STATES)

    def _follow(self, plan: SessionPlan, log_path: str, cancel: Any) -> Outcome:
        from cuberun import progress
        from cuberun.process import EXIT_TIMEOUT, Outcome, stream
        from cuberun.retry import limits

        start = time.monotonic()
        max_wait = self._max_wait()
        buffer = io.BytesIO()
        stop = threading.Event()
        limit = limits(self.options, plan.task.task).timeout
        clock = SessionClock(limit) if limit is not None else None  # the task's time limit, from the session's start
        removed: list[bool] = []

        def stop_session() -> None:  # Ctrl-C and SIGTERM (quietly), the time limit (said: nothing else tells of it yet)
            removed.append(self._destroy([plan], quiet=clock is None or not clock.fired))

        with open(log_path, "ab") as log:
            sinks: list[IO[bytes] | None] = [getattr(sys.stdout, "buffer", None), log]
            # by ID: Backend.AI 26.x answers `session logs NAME` with 404 once the session has ended,
            # so the final fetch (which carries the task's last lines) must use the session ID
            logs = _LogFollower(self, plan.session_id or plan.name, sinks, self._seconds("log_interval", 10.0))
            poller = threading.Thread(target=logs.loop, args=(stop,), daemon=True)
            poller.start()
            waiting = self._waiting(plan)

            def event(line: str) -> None:  # the session's events as they come: the wait is shown until it starts
                found = watch_state(line)
                if found is not None:
                    waiting.state(*found)
                    if found[0] == "RUNNING":
                        logs.ran = True
                    if clock is not None:
                        clock.event(found[0])

            starter: threading.Thread | None = None
            if clock is not None:  # the watch may have missed the start (a session already running): ask the manager
                starter = threading.Thread(target=poll_start, args=(lambda: self._status(plan), clock, stop), daemon=True)
                starter.start()
            try:
                watch = [*self.client, "session", "watch", plan.name, "--output", "json", "--max-wait", str(int(max_wait))]
                outcome = stream(watch, env=self.client_env(), log=buffer, echo=progress.line_sink(event), on_cancel=stop_session,
                                 expired=clock.expired if clock is not None else None)
            finally:
                waiting.close()
                stop.set()
                poller.join(timeout=CLIENT_TIMEOUT + 5)
                if starter is not None:
                    starter.join(timeout=CLIENT_TIMEOUT + 5)
            if outcome.interrupted:
                self._destroy([plan])
                return Outcome(outcome.exit_code, time.monotonic() - start, interrupted=True, received=outcome.received,
                               reason="interrupted; the session was terminated", details=plan.details)
            events, no_match = parse_watch_output(buffer.getvalue().decode("utf-8", "replace"))
            verdict = watch_verdict(events, outcome.exit_code, no_match)
            if clock is not None and limit is not None and clock.fired and verdict.kind != "success":
                # (a success event came before the stop reached the task: its result stands; a failure is the stop's own)
                logs.ran = True  # (the clock starts when the task runs)
                logs.fetch_last(plan.name, cancel)
                reason, stopped = timed_out(limit, plan.name, all(removed))
                return Outcome(EXIT_TIMEOUT, time.monotonic() - start, reason=reason, details={**plan.details, **stopped})
            if verdict.kind == "timeout":
                self._destroy([plan])
                logs.fetch_last(plan.name, cancel)
                return Outcome(EXIT_STOPPED_WAITING, time.monotonic() - start, reason=f"session {plan.name} gave no result within {int(max_wait)} s; "
                               "it was terminated", details=plan.details)
            if verdict.kind in ("ended", "unknown"):
                confirmed = self._confirm(plan, cancel)
                if confirmed is None:
                    if cancel.requested:
                        logs.fetch_once()
                        self._destroy([plan])
                        sig = cancel.received or signal.SIGINT
                        return Outcome(128 + sig, time.monotonic() - start, interrupted=True, received=sig, details=plan.details)
                    logs.fetch_once()
                    return Outcome(EXIT_BACKEND, time.monotonic() - start, details=plan.details,
                                   reason=f"the outcome of session {plan.name} could not be established ({verdict.reason})")
                verdict = confirmed
            plan.finished = True
            logs.ran = logs.ran or verdict.exit_code is not None
            logs.fetch_last(plan.name, cancel)
        self._download(plan, verdict.kind == "success")
        code = verdict.exit_code if verdict.exit_code is not None else (0 if verdict.kind == "success" else 1)
        return Outcome(code, time.monotonic() - start, reason=None if code == 0 else f"failed: {verdict.reason} (session {plan.name})",
                       details=plan.details)

    def _confirm(self, plan: SessionPlan, cancel: Any) -> Verdict | None:
        """Poll `session info` until the session has ended (bounded by INFO_GRACE); a manager that
        refuses every call for MANAGER_GRACE is gone: ManagerLost names the session left behind."""
        if not plan.session_id:
            return None
        deadline = time.monotonic() + INFO_GRACE
        interval = 0.5
        lost_since: float | None = None
        waiting = self._waiting(plan)  # a session `session watch` missed may still wait to start
        try:
            while time.monotonic() < deadline and not cancel.requested:
                res = self._call("--output", "json", "session", "info", plan.session_id)
                if res.returncode != 0 and _UNREACHABLE.search(res.stdout + res.stderr):
                    lost_since = lost_since or time.monotonic()
                    if time.monotonic() - lost_since >= MANAGER_GRACE:
                        raise ManagerLost(
                            f"lost contact with the Backend.AI manager at {self.endpoint() or 'BACKEND_ENDPOINT'} while session {plan.name} "
                            f"({plan.session_id}, task '{plan.task.name}') ran: it refused every call for {int(MANAGER_GRACE)} s",
                            f"the session may still run on its agent: backend.ai session rm {plan.session_id} once the manager is back",
                        )
                else:
                    lost_since = None
                if res.returncode == 0:
                    try:
                        data = json.loads(res.stdout)
                        items = data.get("items") or []
                    except (ValueError, AttributeError):
                        items = []
                    if items and isinstance(items[0], dict):
                        waiting.state(session_status(items[0]), str(items[0].get("status_info") or ""))
                        verdict = info_verdict(items[0])
                        if verdict is not None:
                            return verdict
                time.sleep(interval)
                interval = min(interval * 2, 10.0)
            return None
        finally:
            waiting.close()

    def _status(self, plan: SessionPlan) -> str | None:
        """The session's status (`session info`), None when the manager does not tell."""
        res = self._call("--output", "json", "session", "info", plan.session_id or plan.name)
        if res.returncode != 0:
            return None
        try:
            items = json.loads(res.stdout).get("items") or []
        except (ValueError, AttributeError):
            return None
        return session_status(items[0]) if items and isinstance(items[0], dict) else None

    def _destroy(self, plans: Sequence[SessionPlan], quiet: bool = False) -> bool:
        """`session rm` of the sessions not finished; False when the manager refused."""
        names = [p.name for p in plans if not p.finished]
        if not names:
            return True
        res = self._call("session", "rm", *names, shield=True)
        for p in plans:
            p.finished = True
        if not quiet:
            if res.returncode == 0:
                say(f"terminated session(s) {', '.join(names)}")
            else:
                text = res.stdout + res.stderr
                why = f"the manager at {self.endpoint() or 'BACKEND_ENDPOINT'} does not answer" if _UNREACHABLE.search(text) else _last_line(text)
                say(f"warning: could not terminate session(s) {', '.join(names)}: {why}; check with: backend.ai ps")
        return res.returncode == 0


class ManagerLost(BackendError):
    """The manager stopped answering while a session ran: the session could not be removed."""


class _LogFollower:
    """Copies new container log text of a session (`session logs NAME`) to our sinks."""

    def __init__(self, runner: BackendAISessions, name: str, sinks: Sequence[IO[bytes] | None], interval: float) -> None:
        self.runner = runner
        self.name = name
        self.sinks = sinks
        self.interval = interval
        self.seen = ""
        self.error = ""
        self.ran = False  # the session's kernel ran (a started event, a log, an exit code): it has a log to wait for
        self.lock = threading.Lock()

    def fetch_once(self) -> bool:
        """Copy the text not shown yet; False when the manager gave no log (the call failed) or
        one that does not begin with what was already shown."""
        res = self.runner._call("session", "logs", self.name)
        if res.returncode != 0:
            self.error = _last_line(res.stdout + res.stderr) or f"exit {res.returncode}"
            return False
        text = res.stdout
        with self.lock:
            self.ran = True
            whole = text.startswith(self.seen)
            new = text[len(self.seen) :] if whole else text  # the log was cut or rotated: show it again from the start
            self.seen = text
        if new:
            data = new.encode("utf-8", "replace")
            for sink in self.sinks:
                if sink is None:
                    continue
                try:
                    sink.write(data)
                    sink.flush()
                except (BrokenPipeError, ValueError):
                    pass
        return whole

    def fetch_last(self, session: str, cancel: Any) -> None:
        """The session has ended: fetch its log until the manager has it whole. Between the session's
        end and the moment the manager stores the kernel's log, Backend.AI 26.x answers `session
        logs` with 500 (it asks the agent for a container that is gone). Bounded by LOG_GRACE; when
        the log never comes, say so (its last lines were not shown) instead of staying silent. A
        session whose kernel never ran has no log: one try."""
        if not self.ran:
            self.fetch_once()
            return
        deadline = time.monotonic() + LOG_GRACE
        interval = 0.25
        while not self.fetch_once():
            if cancel.requested:
                return
            if time.monotonic() >= deadline:
                say(f"warning: the last log lines of session {session} could not be fetched within {int(LOG_GRACE)} s "
                    f"({self.error or 'the log did not match what was shown'}); see: backend.ai session logs {self.name}")
                return
            time.sleep(interval)
            interval = min(interval * 2, 4.0)

    def loop(self, stop: threading.Event) -> None:
        if self.interval <= 0:
            return
        while not stop.wait(self.interval):
            self.fetch_once()
