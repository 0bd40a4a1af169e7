"""The Backend.AI runner on the BatchRunner loop: plan every session first (a chain's inputs
that an earlier task produces are not uploaded), upload, create each session `--depends` on the
one before, follow them in order; Ctrl-C and errors remove the sessions not finished."""

from __future__ import annotations

import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cuberun.console import say
from cuberun.runners.backendai.session import SessionPlan
from cuberun.runners.backendai.sessions import BackendAISessions

if TYPE_CHECKING:
    from cuberun.process import Outcome
    from cuberun.runners.base import TaskPlan


class BackendAIRunner(BackendAISessions):
    enforces_timeout = True  # cuberun terminates the session at the limit, counted from its start (limit.py)

    # -- the batch hooks (the loop is BatchRunner.run_batch) --------------------------------------
    def plan_batch(self, planned: Sequence[TaskPlan]) -> list[SessionPlan]:
        for flag in self._ignored_options():
            say(f"warning: {flag} does not apply to Backend.AI sessions (set backendai.resources instead); ignored")
        for task in (p.task for p in planned):
            if any(r.name == "network" and r.source == "runner" for r in self.policy(task).relaxations):
                say(f"warning: task '{task.name}': Backend.AI cannot run a session without a network (its API has no such option): "
                    "the session keeps the cluster's network (recorded in the run record's policy)")
                break
        if not self._configured:
            self.configure()
        plans: list[SessionPlan] = []
        produced: list[str] = []
        for item in planned:  # every config problem surfaces before anything is uploaded or created
            plan = self.session_plan(item.task, produced, plans[-1].name if plans else None, item.value("session"))
            produced += plan.outputs
            plans.append(plan)
        return plans

    def stage(self, plan: SessionPlan) -> None:
        self._upload(plan)

    def submit(self, plan: SessionPlan, after: SessionPlan | None) -> SessionPlan:
        self._create(plan, after.session_id or after.name if after is not None else None)
        return plan

    def follow(self, submission: SessionPlan, later: Sequence[SessionPlan], log_path: str, cancel: Any) -> Outcome:
        return self._follow(submission, log_path, cancel)

    def cancel(self, submissions: Sequence[SessionPlan], current: SessionPlan | None, outcome: Outcome | None) -> None:
        self._destroy([p for p in submissions if not p.finished])

    def interrupted(self, submitted: Sequence[SessionPlan], cancel: Any) -> Outcome:
        from cuberun.process import Outcome

        self._destroy([p for p in submitted if not p.finished])
        sig = cancel.received or signal.SIGINT
        return Outcome(128 + sig, 0.0, interrupted=True, received=sig, reason="interrupted before the sessions ran")
