"""Talking to the Slurm controller: one client call (bounded, shielded when it must not die
half-way), job lookups (scontrol, then sacct, then the jobcomp log once scontrol forgot a job),
the cluster config, scancel of the jobs this run submitted."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cuberun.process import shielded as _shielded
from cuberun.runners.batch import BatchRunner
from cuberun.runners.slurm.jobs import CLIENT_TIMEOUT, JobInfo, array_elements, parse_job_line, parse_sacct
from cuberun.runners.slurm.logs import _Job, _search_jobcomp

if TYPE_CHECKING:
    from cuberun.process import Captured
    from cuberun.resolve import ResolvedTask

_Plan = tuple["ResolvedTask", str, str, int]  # a task, its job script's path and content, its array elements (0: one job)


class SlurmClient(BatchRunner[_Plan, _Job]):
    """The Slurm client calls of a runner."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._accounting: bool | None = None
        self._jobcomp: str | bool | None = False  # False: not looked up yet

    def _slurm(self, argv: Sequence[str], *, timeout: float = CLIENT_TIMEOUT, env: Mapping[str, str] | None = None, shield: bool = False) -> Captured:
        """Run a Slurm client. `shield` for calls that must not die half-way (sbatch, scancel);
        queries stay interruptible, so Ctrl-C answers at once even when the controller hangs."""
        from cuberun.process import capture

        if not shield:
            return capture(argv, timeout=timeout, env=env)
        with _shielded():
            return capture(argv, timeout=timeout, env=env)

    @staticmethod
    def _controller_hint() -> str:
        conf = os.environ.get("SLURM_CONF") or "/etc/slurm/slurm.conf"
        return f"check that slurmctld is up (scontrol ping) and SLURM_CONF (now {conf})"

    def _partitions(self) -> list[str]:
        res = self._slurm(["sinfo", "-h", "-o", "%P"], timeout=30)
        if res.returncode != 0:
            return []
        return sorted({p.strip().rstrip("*") for p in res.stdout.split() if p.strip()})

    def _lookup_array(self, array_id: str, jobs: Sequence[_Job], misses: dict[int, int]) -> tuple[dict[int, JobInfo], str | None]:
        """({element index: what Slurm says}, a problem talking to the controller). An element
        missing from scontrol's answer (forgotten: MinJobAge) is looked up in sacct / the jobcomp log."""
        res = self._slurm(["scontrol", "show", "job", "-o", array_id], timeout=CLIENT_TIMEOUT)
        text = (res.stdout + "\n" + res.stderr).strip()
        forgotten = False
        if res.returncode == 0:
            infos = array_elements(res.stdout, array_id)
            if not infos:
                return {}, f"unexpected scontrol output: {_first_line(text)}"
        elif _forgotten(text):
            infos, forgotten = {}, True
        else:
            return {}, _first_line(text) or f"scontrol exited {res.returncode}"
        for job in jobs:
            index = job.array_task_id
            if index is None or index in infos:
                continue
            misses[index] = misses.get(index, 0) + 1
            if forgotten or misses[index] >= 3:  # an element is never missing for long while the array is known
                infos[index] = self._finished_job(job.job_id) or JobInfo(job.job_id, "UNKNOWN", source="none")
        return infos, None

    def _lookup(self, job_id: str) -> tuple[JobInfo | None, str | None]:
        """(what Slurm says about the job, a problem talking to the controller)."""
        res = self._slurm(["scontrol", "show", "job", "-o", job_id], timeout=CLIENT_TIMEOUT)
        text = (res.stdout + "\n" + res.stderr).strip()
        if res.returncode == 0:
            for line in res.stdout.splitlines():
                info = parse_job_line(line)
                if info is not None and info.job_id == job_id:
                    return info, None
            return None, f"unexpected scontrol output: {_first_line(text)}"
        if _forgotten(text):  # forgotten (MinJobAge) or the controller lost its state
            found = self._finished_job(job_id)
            if found is not None:
                return found, None
            return JobInfo(job_id, "UNKNOWN", source="none"), None
        return None, _first_line(text) or f"scontrol exited {res.returncode}"

    def _finished_job(self, job_id: str) -> JobInfo | None:
        if self._accounting is not False:
            res = self._slurm(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "State,ExitCode"], timeout=CLIENT_TIMEOUT)
            text = res.stdout + res.stderr
            if "accounting storage is disabled" in text.lower() or res.missing:
                self._accounting = False
            elif res.returncode == 0:
                self._accounting = True
                info = parse_sacct(res.stdout, job_id)
                if info is not None and info.finished:
                    return info
        path = self._jobcomp_file()
        if path:
            return _search_jobcomp(path, job_id)
        return None

    def _jobcomp_file(self) -> str | None:
        if self._jobcomp is False:
            config = self._slurm_config()
            self._jobcomp = config.get("JobCompLoc") if config.get("JobCompType") == "jobcomp/filetxt" else None
        return self._jobcomp if isinstance(self._jobcomp, str) else None

    def _slurm_config(self) -> dict[str, str]:
        res = self._slurm(["scontrol", "show", "config"], timeout=30)
        config: dict[str, str] = {}
        for line in res.stdout.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                config[key.strip()] = value.strip()
        return config

    def _scancel(self, jobs: Sequence[_Job], *extra: str) -> None:
        ids = [j.job_id for j in jobs]  # only jobs this run submitted
        if ids:
            self._slurm(["scancel", *extra, *ids], timeout=30, shield=True)

    def _cancel_quietly(self, jobs: Sequence[_Job]) -> None:
        try:
            self._scancel(jobs)
        except Exception:  # best effort while another error is on its way
            pass


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _forgotten(text: str) -> bool:
    """scontrol's answer for a job it does not know (any more)."""
    return "invalid job id" in text.lower() or re.search(r"\bjob \S+ not found", text, re.IGNORECASE) is not None
