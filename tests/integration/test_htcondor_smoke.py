"""The HTCondor test pool (scripts/backends/htcondor.sh) runs a vanilla-universe job submitted by
a non-root user: the backend itself, without cuberun (the runner plugin's tests are in
test_htcondor_runner.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.backends import backend_env, require_backend

pytestmark = pytest.mark.htcondor


def test_vanilla_job_completes_as_the_submit_user() -> None:
    details = require_backend("htcondor")
    env = {**os.environ, **backend_env("htcondor")}
    # the submit user cannot enter pytest's private tmp dirs: the pool's world-writable jobs dir
    jobs = Path(tempfile.mkdtemp(prefix="smoke-", dir=Path(details["condor_config"]).parent / "jobs"))
    os.chmod(jobs, 0o1777)
    (jobs / "job.sub").write_text(
        "universe = vanilla\n"
        "executable = /bin/sh\n"
        'arguments = "-c \'echo hello from condor; id -un; exit 0\'"\n'
        f"output = {jobs}/out.txt\nerror = {jobs}/err.txt\nlog = {jobs}/job.log\n"
        "should_transfer_files = NO\nqueue\n"
    )
    tool = details["tool"]
    user = details["submit_user"]
    submit = subprocess.run([tool, "runuser", "-u", user, "--", "/usr/bin/condor_submit", str(jobs / "job.sub")], env=env,
                            capture_output=True, text=True, timeout=120, check=False, cwd=jobs)
    assert submit.returncode == 0, submit.stdout + submit.stderr
    cluster = submit.stdout.split("submitted to cluster ", 1)[1].split(".")[0]
    done = subprocess.run([tool, "runuser", "-u", user, "--", "/usr/bin/condor_wait", "-wait", "170", str(jobs / "job.log")], env=env,
                          capture_output=True, text=True, timeout=200, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (jobs / "out.txt").read_text().split() == ["hello", "from", "condor", user]
    history = subprocess.run([tool, "condor_history", cluster, "-limit", "1", "-af", "Owner", "ExitCode", "JobStatus"], env=env,
                             capture_output=True, text=True, timeout=120, check=False)
    assert history.stdout.split() == [user, "0", "4"], history.stdout + history.stderr  # 4 = Completed
    shutil.rmtree(jobs, ignore_errors=True)
