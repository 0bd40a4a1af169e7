"""The progress of the ssh runner's transfers: rsync's --info=progress2 lines parsed as they
stream. The samples are real output of rsync 3.2.7 (protocol 32), captured with
`rsync -a --info=progress2 --no-inc-recursive --stats [--bwlimit=20000] SRC/ DEST/` on local
directories (30 MB of random data at 20000 KiB/s; one 3000-byte file); one more test runs the
local rsync itself."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from cuberun.runners.ssh.sync import RsyncProgress, RsyncSink, rsync_progress, rsync_stats

MiB = 1 << 20

BIG = (
    b"\r         32,768   0%    0.00kB/s    0:00:00  \r     20,709,376  69%   19.48MB/s    0:00:00  \r"
    b"     30,000,000  99%   19.52MB/s    0:00:01 (xfr#1, to-chk=1/3)\r     30,005,000 100%   19.52MB/s    0:00:01 (xfr#2, to-chk=0/3)\r"
    b"     30,005,000 100%   19.51MB/s    0:00:01 (xfr#2, to-chk=0/3)\n\n"
    b"Number of files: 3 (reg: 2, dir: 1)\nNumber of created files: 3 (reg: 2, dir: 1)\nNumber of deleted files: 0\n"
    b"Number of regular files transferred: 2\nTotal file size: 30,005,000 bytes\nTotal transferred file size: 30,005,000 bytes\n"
    b"Literal data: 30,005,000 bytes\nMatched data: 0 bytes\n"
)
SMALL = (
    b"\r          3,000 100%    0.00kB/s    0:00:00  \r          3,000 100%    0.00kB/s    0:00:00 (xfr#1, to-chk=0/2)\r"
    b"          3,000 100%    0.00kB/s    0:00:00 (xfr#1, to-chk=0/2)\n\nNumber of files: 2 (reg: 1, dir: 1)\n"
    b"Number of regular files transferred: 1\nTotal file size: 3,000 bytes\nTotal transferred file size: 3,000 bytes\n"
    b"Total bytes sent: 3,113\nTotal bytes received: 38\n\nsent 3,113 bytes  received 38 bytes  6,302.00 bytes/sec\n"
    b"total size is 3,000  speedup is 0.95\n"
)


def test_one_progress_line() -> None:
    p = rsync_progress("     20,709,376  69%   19.48MB/s    0:00:00  ")
    assert p == RsyncProgress(20709376, 69, 19.48 * MiB)
    assert p is not None and p.total() == round(20709376 * 100 / 69)
    q = rsync_progress("30,005,000 100%   19.52MB/s    0:00:01 (xfr#2, to-chk=0/3)")
    assert q is not None and q.total() == 30005000 and q.rate == pytest.approx(19.52 * MiB)
    assert rsync_progress("32,768   0%    0.00kB/s    0:00:00") == RsyncProgress(32768, 0, 0.0)
    low = rsync_progress("32,768   5%    1.00kB/s    0:00:00")
    assert low is not None and low.total() is None and low.rate == 1024  # too early to estimate a total


@pytest.mark.parametrize("line", [
    "Number of files: 3 (reg: 2, dir: 1)", "Total file size: 30,005,000 bytes", "sent 3,113 bytes  received 38 bytes  6,302.00 bytes/sec",
    "total size is 3,000  speedup is 0.95", "rsync error: some files/attrs were not transferred (code 23) at main.c(1338)", "",
])
def test_other_lines_are_not_progress(line: str) -> None:
    assert rsync_progress(line) is None


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 7, 4096])
def test_sink_splits_progress_from_the_rest_whatever_the_chunks(size: int) -> None:
    seen: list[RsyncProgress] = []
    sink = RsyncSink(seen.append)
    for chunk in chunks(BIG, size):
        sink.write(chunk)
    assert [(p.done, p.percent) for p in seen] == [(32768, 0), (20709376, 69), (30000000, 99), (30005000, 100), (30005000, 100)]
    text = sink.text()
    assert "%" not in text and "kB/s" not in text  # the kept text (stats, errors) holds no progress
    assert rsync_stats(text) == {"files": 2, "transferred_bytes": 30005000}


def test_an_error_right_after_a_progress_line_is_kept() -> None:
    """stderr shares the pipe: rsync's error message can follow a progress line before its \\r
    (seen on the fault test's full remote disk); the message must reach the error mapping."""
    seen: list[RsyncProgress] = []
    sink = RsyncSink(seen.append)
    sink.write(b"\r         32,768   0%    0.00kB/s    0:00:00  rsync: [receiver] write failed on \"/r/x\": No space left on device (28)\n"
               b"rsync error: error in file IO (code 11) at receiver.c(401) [receiver=3.2.7]\n")
    assert [p.done for p in seen] == [32768]
    assert "No space left on device (28)" in sink.text() and "code 11" in sink.text()


def test_sink_of_a_small_transfer() -> None:
    seen: list[RsyncProgress] = []
    sink = RsyncSink(seen.append)
    sink.write(SMALL)
    assert {(p.done, p.total()) for p in seen} == {(3000, 3000)}
    assert rsync_stats(sink.text()) == {"files": 1, "transferred_bytes": 3000, "bytes_sent": 3113, "bytes_received": 38}
    assert sink.text().rstrip().endswith("speedup is 0.95")


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")
def test_the_local_rsync_speaks_this_format(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"\1" * (3 * MiB))
    (src / "b.txt").write_text("b\n")
    proc = subprocess.run(["rsync", "-a", "--stats", "--info=progress2", "--no-inc-recursive", f"{src}/", f"{tmp_path / 'dest'}/"],
                          capture_output=True, check=True)
    seen: list[RsyncProgress] = []
    sink = RsyncSink(seen.append)
    sink.write(proc.stdout)
    assert seen and seen[-1].percent == 100 and seen[-1].total() == 3 * MiB + 2
    assert rsync_stats(sink.text())["transferred_bytes"] == 3 * MiB + 2
