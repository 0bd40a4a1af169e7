"""Moving a task's files: its inputs packed into one tar archive and uploaded to the vfolder
(one `vfolder upload`), its outputs archive downloaded and unpacked into the workspace (only the
declared outputs, never outside them)."""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path

from cuberun.console import say
from cuberun.runners.backendai.config import TRANSFER_TIMEOUT
from cuberun.runners.backendai.plan import BackendAIPlan
from cuberun.runners.backendai.session import SessionPlan, _last_line, safe_extract


class BackendAITransfer(BackendAIPlan):
    """The inputs up, the outputs down."""

    def _upload(self, plan: SessionPlan) -> None:
        if not plan.in_tar:
            return
        stage = self._staging(plan.task)
        stage.mkdir(parents=True, exist_ok=True)
        archive = stage / plan.in_tar
        try:
            with tarfile.open(archive, "w") as tar:
                for rel in plan.inputs:
                    tar.add(str(Path(plan.task.workspace) / rel), arcname=rel, recursive=True)
            size = archive.stat().st_size
            say(f"uploading {len(plan.inputs)} input(s) of task '{plan.task.name}' ({size} bytes) to vfolder {self.vfolder}")
            res = self._call("vfolder", "upload", self.vfolder, plan.in_tar, "-b", str(stage), timeout=TRANSFER_TIMEOUT)
            if res.returncode != 0:
                raise self._fail(f"vfolder upload {self.vfolder} {plan.in_tar}", res)
        finally:
            try:
                archive.unlink()
            except OSError:
                pass

    def _download(self, plan: SessionPlan, succeeded: bool) -> None:
        if not plan.out_tar:
            return
        stage = self._staging(plan.task)
        stage.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="download-", dir=str(stage)) as tmp:
            res = self._call("vfolder", "download", self.vfolder, plan.out_tar, "-b", tmp, timeout=TRANSFER_TIMEOUT)
            archive = Path(tmp) / plan.out_tar
            if res.returncode != 0 or not archive.is_file():
                if succeeded:
                    say(f"warning: no outputs came back from session {plan.name} ({_last_line(res.stdout + res.stderr) or 'no archive'}); "
                        "does the image have tar?")
                return
            written = safe_extract(archive, Path(plan.task.workspace), plan.outputs)
            say(f"downloaded {len(written)} output file(s) of task '{plan.task.name}' from vfolder {self.vfolder}")
        self._call("vfolder", "rm", self.vfolder, plan.out_tar, input="y\n")  # the client asks for confirmation
