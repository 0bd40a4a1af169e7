"""The BatchRunner loop with hooks that only record what they are asked (the real batch runners
are tested against Slurm, the Backend.AI API and the k8s API)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from cuberun.errors import BackendError
from cuberun.process import Outcome
from cuberun.runners.base import RunOptions, Step
from cuberun.runners.batch import BatchRunner, poll_interval


class Lost(BackendError):
    pass


class Recorder(BatchRunner[str, str]):
    name = "recorder"
    leave_running = (Lost,)

    def __init__(self, codes: dict[str, int], raise_in: str | None = None, error: type[Exception] = BackendError) -> None:
        super().__init__(None, {}, "recorder", RunOptions())  # type: ignore[arg-type]
        self.codes, self.raise_in, self.error = codes, raise_in, error
        self.calls: list[tuple[str, ...]] = []
        self.finished: set[str] = set()

    def run_steps(self, task: Any) -> list[Step]:
        return []

    def plan_batch(self, tasks: Sequence[Any]) -> list[str]:
        self.calls.append(("plan", *tasks))
        return list(tasks)

    def stage(self, plan: str) -> None:
        self.calls.append(("stage", plan))

    def submit(self, plan: str, after: str | None) -> str:
        self.calls.append(("submit", plan, after or "-"))
        return f"job-{plan}"

    def follow(self, submission: str, later: Sequence[str], log_path: str, cancel: Any) -> Outcome:
        self.calls.append(("follow", submission, log_path))
        if submission == self.raise_in:
            raise self.error("boom")
        self.finished.add(submission)
        return Outcome(self.codes.get(submission, 0), 0.0)

    def cancel(self, submissions: Sequence[str], current: str | None, outcome: Outcome | None) -> None:
        self.calls.append(("cancel", *[s for s in submissions if s not in self.finished]))

    def interrupted(self, submitted: Sequence[str], cancel: Any) -> Outcome:
        self.calls.append(("interrupted", *submitted))
        return Outcome(130, 0.0, interrupted=True)


def test_a_chain_is_planned_staged_submitted_in_order_and_followed() -> None:
    r = Recorder({})
    outcomes = r.run_chain(["a", "b"], ["la", "lb"])  # type: ignore[list-item]
    assert [o.exit_code for o in outcomes] == [0, 0]
    assert r.calls == [("plan", "a", "b"), ("stage", "a"), ("stage", "b"), ("submit", "a", "-"), ("submit", "b", "job-a"),
                       ("follow", "job-a", "la"), ("follow", "job-b", "lb")]


def test_the_first_failure_ends_the_chain_and_cancels_the_rest() -> None:
    r = Recorder({"job-a": 3})
    outcomes = r.run_chain(["a", "b", "c"], ["la", "lb", "lc"])  # type: ignore[list-item]
    assert [o.exit_code for o in outcomes] == [3]
    assert r.calls[-1] == ("cancel", "job-b", "job-c")


def test_an_error_cancels_what_was_submitted_unless_the_backend_is_lost() -> None:
    r = Recorder({}, raise_in="job-b")
    with pytest.raises(BackendError, match="boom"):
        r.run_chain(["a", "b", "c"], ["la", "lb", "lc"])  # type: ignore[list-item]
    assert r.calls[-1] == ("cancel", "job-b", "job-c")
    lost = Recorder({}, raise_in="job-a", error=Lost)
    with pytest.raises(Lost, match="boom"):
        lost.run(["a"][0], "la")  # type: ignore[arg-type]
    assert not [c for c in lost.calls if c[0] == "cancel"]


def test_the_poll_interval_starts_fast_and_backs_off_within_bounds() -> None:
    assert poll_interval(0, 0.5) == pytest.approx(0.1)
    assert poll_interval(8, 0.5) == 0.5
    assert poll_interval(300, 0.5) == 2.0 and poll_interval(3000, 0.5) == 5.0 and poll_interval(3000, 30.0) == 30.0


class Grouped(Recorder):
    """Submissions of several tasks (a job array, a pipeline): plan "ab" runs tasks a and b."""

    supports_array = True

    def plan_batch(self, tasks: Sequence[Any]) -> list[str]:
        self.calls.append(("plan", *tasks))
        return ["".join(tasks[:2]), *tasks[2:]]

    def plan_array(self, tasks: Sequence[Any]) -> list[str]:
        self.calls.append(("plan-array", *tasks))
        return list(tasks)

    def tasks_in(self, plan: str) -> int:
        return len(plan)

    def follow_all(self, submission: str, later: Sequence[str], log_paths: Sequence[str], cancel: Any) -> list[Outcome]:
        self.calls.append(("follow-all", submission, *log_paths))
        self.finished.add(submission)
        return [Outcome(self.codes.get(f"{submission}/{path}", 0), 0.0) for path in log_paths]


def test_a_submission_of_several_tasks_gets_their_logs_and_gives_their_outcomes() -> None:
    r = Grouped({})
    outcomes = r.run_chain(["a", "b", "c"], ["la", "lb", "lc"])  # type: ignore[list-item]
    assert [o.exit_code for o in outcomes] == [0, 0, 0]
    assert [c for c in r.calls if c[0] in ("submit", "follow-all")] == [
        ("submit", "ab", "-"), ("submit", "c", "job-ab"), ("follow-all", "job-ab", "la", "lb"), ("follow-all", "job-c", "lc")]
    failing = Grouped({"job-ab/lb": 2})
    outcomes = failing.run_chain(["a", "b", "c"], ["la", "lb", "lc"])  # type: ignore[list-item]
    assert [o.exit_code for o in outcomes] == [0, 2]  # the chain ends at the failed task's group
    assert failing.calls[-1] == ("cancel", "job-c")


def test_an_array_submits_independently_and_follows_every_submission_to_its_end() -> None:
    r = Grouped({"job-a/la": 3})
    outcomes = r.run_array(["a", "b"], ["la", "lb"])  # type: ignore[list-item]
    assert [o.exit_code for o in outcomes] == [3, 0]  # a failed variant does not stop the others
    assert ("submit", "b", "-") in r.calls  # no dependency between variants
    assert not [c for c in r.calls if c[0] == "cancel"]


class InterruptedWhileSubmitting(Grouped):
    """Ctrl-C arrives while the first submission is made (the signal is sent to this process)."""

    def submit(self, plan: str, after: str | None) -> str:
        import os
        import signal

        os.kill(os.getpid(), signal.SIGINT)
        return super().submit(plan, after)

    def follow_all(self, submission: str, later: Sequence[str], log_paths: Sequence[str], cancel: Any) -> list[Outcome]:
        self.calls.append(("follow-all", submission, *log_paths))
        return [Outcome(130 if cancel.requested else 0, 0.0, interrupted=cancel.requested) for _ in log_paths]


def test_ctrl_c_during_the_submission_of_an_array_gives_every_task_its_interrupted_outcome() -> None:
    r = InterruptedWhileSubmitting({})
    r.plan_array = lambda tasks: ["".join(tasks)]  # type: ignore[method-assign]  # one submission of both
    outcomes = r.run_array(["a", "b"], ["la", "lb"])  # type: ignore[list-item]
    assert [(o.exit_code, o.interrupted) for o in outcomes] == [(130, True), (130, True)]
    assert ("follow-all", "job-ab", "la", "lb") in r.calls  # followed: its follower answered the Ctrl-C
    chain = InterruptedWhileSubmitting({})
    outcomes = chain.run_chain(["a", "b", "c"], ["la", "lb", "lc"])  # type: ignore[list-item]
    assert [(o.exit_code, o.interrupted) for o in outcomes] == [(130, True)]  # a chain: `interrupted`
    assert chain.calls[-1] == ("interrupted", "job-ab")
