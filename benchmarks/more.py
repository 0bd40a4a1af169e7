"""More benchmarks for run.py: the up-to-date check and hashing (issue 6), SSH re-sync and Slurm
per-task overhead (issue 8). Imported by run.py; each function registers itself."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from run import Cmd, Context, Row, Skip, Stats, benchmark, expect_lines, measure, quick, run_checked

STATE = Path(os.environ.get("CUBERUN_TEST_STATE", "/tmp/cuberun-test-state"))
N_FILES = int(os.environ.get("CUBERUN_BENCH_FILES", "10000"))
TOTAL_BYTES = int(os.environ.get("CUBERUN_BENCH_BYTES", str(2 << 30)))


def _dataset(root: Path) -> list[Path]:
    """N_FILES files of TOTAL_BYTES in all, in 100 directories (written once, kept in scratch)."""
    size = TOTAL_BYTES // N_FILES
    block = os.urandom(1 << 20)
    files = []
    for i in range(N_FILES):
        path = root / f"d{i % 100:02d}" / f"f{i:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            left = size
            seed = i.to_bytes(8, "little")
            fh.write(seed)
            left -= 8
            while left > 0:
                fh.write(block[: min(left, len(block))])
                left -= min(left, len(block))
        files.append(path)
    return files


def _backends() -> dict[str, Any]:
    try:
        return dict(json.loads((STATE / "backends.json").read_text()))
    except (OSError, ValueError):
        return {}


@benchmark("uptodate", f"up-to-date check and hashing: {N_FILES} files / {TOTAL_BYTES >> 20} MiB input")
def bench_uptodate(ctx: Context) -> list[Row]:
    root = ctx.scratch / "uptodate-cube"
    data = root / "workspace" / "data"
    files = _dataset(data)
    (root / "mlcube.yaml").write_text("name: big\nlocal: {command: python3 t.py}\ntasks:\n  t:\n    parameters:\n"
                                      "      inputs: {data: data/}\n      outputs: {out: {type: file, default: out.txt}}\n")
    (root / "t.py").write_text("import sys\nopen(sys.argv[-1].split('=', 1)[1], 'w').write('done')\n")
    env = ctx.env()
    # hashing throughput: cuberun's fingerprint (no cache) vs sha256sum, both on a warm page cache
    chunks = [[str(p) for p in files[i : i + 500]] for i in range(0, len(files), 500)]
    for argv in chunks:  # warm the page cache
        subprocess.run(["cat", *argv], stdout=subprocess.DEVNULL, check=True)
    code = ("import sys, time\nfrom cuberun.fingerprint import HashCache, fingerprint\nt = time.perf_counter()\n"
            "fp = fingerprint(sys.argv[1], HashCache())\nprint(time.perf_counter() - t, fp.bytes)")
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(max(2, min(ctx.repeat, 3))):
        out = quick([ctx.python, "-c", code, str(data)], env=env, timeout=1800).stdout.split()
        ours.append(float(out[0]))
        start = time.perf_counter()
        for argv in chunks:
            subprocess.run(["sha256sum", *argv], stdout=subprocess.DEVNULL, check=True)
        theirs.append(time.perf_counter() - start)
    total_mib = sum(p.stat().st_size for p in files) / (1 << 20)
    hashing = Row("reproducibility", f"hashing {len(files)} files, {total_mib:.0f} MiB (throughput ratio = sha256sum time / cuberun time)", "s",
                  Stats(ours), None, Stats(theirs), "sha256sum of the same files", "throughput >= 0.8x sha256sum")
    hashing.met = min(theirs) / min(ours) >= 0.8
    # the up-to-date check: the first run hashes everything; later runs take the size+mtime fast path
    first = run_checked(ctx.cr("run", f"--mlcube={root}", env=env), timeout=3600)
    warm = measure({"check": ctx.cr("run", f"--mlcube={root}", env=env)}, ctx.repeat, warmup=0)["check"]
    # progress lines: the same hashing with the progress display on from the first byte, and with none at all
    prog = ("import sys, time\nfrom cuberun import progress\nfrom cuberun.fingerprint import HashCache, fingerprint\n"
            "class Quiet:\n    def __init__(self, *a, **k): pass\n    def add(self, n): pass\n    def close(self): pass\n"
            "real = progress.Progress\nout = []\nfor mode in sys.argv[2:]:\n"
            "    progress.Progress = (lambda *a, **k: real(*a, **{**k, 'delay': 0.0})) if mode == 'on' else Quiet\n"
            "    t = time.perf_counter(); fingerprint(sys.argv[1], HashCache()); out.append(time.perf_counter() - t)\n"
            "print(*out)")
    with_lines: list[float] = []
    without: list[float] = []
    for i in range(max(2, min(ctx.repeat, 3))):
        modes = ["on", "off"] if i % 2 == 0 else ["off", "on"]
        got = [float(x) for x in quick([ctx.python, "-c", prog, str(data), *modes], env=env, timeout=1800).stdout.split()]
        times = dict(zip(modes, got, strict=True))
        with_lines.append(times["on"])
        without.append(times["off"])
    progress_row = Row("reproducibility", f"hashing {len(files)} files with progress lines from the first byte (baseline: no progress at all)", "s",
                       Stats(with_lines), None, Stats(without), "the same hashing without progress", "ratio < 1.05")
    progress_row.met = statistics.median(with_lines) / statistics.median(without) < 1.05
    rows = [hashing, progress_row,
            Row("reproducibility", "first run: hash the input and run the task", "s", Stats([first.seconds])),
            Row("reproducibility", "second run: up-to-date check (fast path) and skip", "s", warm, target="< 1 s warm",
                met=warm.median < 1.0)]
    return rows


CODE_FILES = int(os.environ.get("CUBERUN_BENCH_CODE_FILES", "5000"))


@benchmark("code", f"up-to-date check of a cube whose code folder holds {CODE_FILES} files vs the same check without them")
def bench_code(ctx: Context) -> list[Row]:
    """Two copies of hello_world with CODE_FILES small source files in vendor/: in one they are
    code (hashed once, then checked by stat on every run), in the other .cuberunignore leaves
    them out, so its check is the check without code hashing of those files."""
    env = ctx.env()
    cubes = {}
    for key in ("code", "nocode"):
        root = ctx.cube(f"code-{key}")
        body = "x = 1\n" * 300  # ~2 KiB each, 10 MB in all
        for i in range(CODE_FILES):
            path = root / "vendor" / f"pkg{i % 50:02d}" / f"mod{i:05d}.py"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"# module {i}\n{body}")
        if key == "nocode":
            (root / ".cuberunignore").write_text("vendor/\n")
        cubes[key] = root
    if ctx.baseline:  # today's cuberun (no code hashing) on a copy of the same cube: its own state
        today = ctx.scratch / "cubes" / "code-today"
        shutil.copytree(cubes["code"], today, ignore=shutil.ignore_patterns(".cuberun", "chats"))
        cubes["today"] = today
    first = {}
    checks = {}
    for k, root in cubes.items():
        cmd = ctx.cr("run", f"--mlcube={root}", "--task=hello", "--platform=local", env=env)
        if k == "today":
            cmd = Cmd([str(ctx.baseline), *cmd.argv[1:]], env, label="cuberun at " + str(ctx.baseline_rev))
        first[k] = run_checked(cmd)
        checks[k] = cmd
    m = measure(checks, ctx.repeat, warmup=2)  # the second run also settles the stat record after the first run's reads
    for k, root in cubes.items():  # the first run ran the task; every measured run must have skipped it
        expect_lines(root / "workspace" / "chats" / "chat_with_alice.txt", 1, f"code check ({k})")
    row = Row("code identity", f"up-to-date check (skip) of hello_world with {CODE_FILES} code files", "s", m["code"], None, m["nocode"],
              f"the same check with the {CODE_FILES} files left out (.cuberunignore)", "ratio <= 1.2")
    ratio = row.ratio(row.baseline)
    row.met = ratio is not None and ratio <= 1.2
    rows = [row]
    if "today" in m:
        today_row = Row("code identity", f"the same check vs cuberun {ctx.baseline_rev} (before code hashing) on the same cube", "s", m["code"],
                        None, m["today"], f"cuberun {ctx.baseline_rev}, no code hashing", "ratio <= 1.2")
        today_ratio = today_row.ratio(today_row.baseline)
        today_row.met = today_ratio is not None and today_ratio <= 1.2
        rows.append(today_row)
    return [*rows,
            Row("code identity", f"first run: hash the {CODE_FILES} code files and run the task", "s", Stats([first["code"].seconds]), None,
                Stats([first["nocode"].seconds]), "the same first run without them")]


def _ssh_platform(ctx: Context, info: dict[str, Any]) -> dict[str, str]:
    settings = ctx.home / "ssh-settings.yaml"
    remote = ctx.scratch / "ssh-remote"
    settings.write_text(json.dumps({"platforms": {"bench-ssh": {
        "runner": "ssh", "host": "cuberun-local", "ssh_config": info["ssh_config"], "cuberun": "venv",
        "remote_root": str(remote), "remote_env": {"PIP_INDEX_URL": os.environ.get("PIP_INDEX_URL", "")} if os.environ.get("PIP_INDEX_URL") else {},
    }}}))
    return ctx.env(CUBERUN_SETTINGS=str(settings))


@benchmark("ssh", "SSH runner: second run with an unchanged 200 MB input")
def bench_ssh(ctx: Context) -> list[Row]:
    info = _backends().get("ssh") or {}
    if not info.get("ok"):
        raise Skip("the test sshd is not up (scripts/backends/up.sh ssh)")
    cube = ctx.scratch / "ssh-cube"
    shutil.copytree(ctx.cube("ssh-src"), cube)
    big = cube / "workspace" / "names" / "big.bin"
    with open(big, "wb") as fh:
        for _ in range(200):
            fh.write(os.urandom(1 << 20))
    (cube / "mlcube.yaml").write_text((cube / "mlcube.yaml").read_text())
    env = _ssh_platform(ctx, info)
    args = ["run", f"--mlcube={cube}", "--task=hello", "--platform=bench-ssh", "--force"]
    first = run_checked(ctx.cr(*args, env=env), timeout=1800)
    again = measure({"again": ctx.cr(*args, env=env)}, min(ctx.repeat, 5), warmup=0)["again"]
    local = measure({"local": ctx.cr("run", f"--mlcube={cube}", "--task=hello", "--platform=local", "--force", env=env)}, min(ctx.repeat, 5), warmup=0)["local"]
    records = sorted((json.loads(p.read_text()) for p in (cube / "workspace" / ".cuberun" / "runs").glob("*/record.json")),
                     key=lambda r: str(r.get("start")))
    stats = [((r.get("details") or {}).get("remote") or {}).get("upload") for r in records if r.get("platform") == "bench-ssh"][1:]
    uploads = [float(u["seconds"]) for u in stats if u]
    sent = [int(u.get("bytes_sent", -1)) for u in stats if u]
    sync = Row("ssh", f"re-sync of the unchanged 200 MB input before the task (bytes sent: {min(sent) if sent else '?'}-{max(sent) if sent else '?'})",
               "s", Stats(uploads) if uploads else None, target="< 1 s")
    sync.met = bool(uploads) and statistics.median(uploads) < 1.0
    return [sync,
            Row("ssh", "`run --platform=ssh` first run (install, sync 200 MB, run, fetch)", "s", Stats([first.seconds])),
            Row("ssh", "`run --platform=ssh` again, input unchanged (whole run: re-sync, remote cuberun, fetch)", "s", again, None, local,
                "the same run on the local platform", note="the target (< 1 s) is for the re-sync alone: the ssh integration test counts its bytes")]


@benchmark("slurm", "Slurm runner: per-task overhead vs sbatch --wait of the raw command")
def bench_slurm(ctx: Context) -> list[Row]:
    info = _backends().get("slurm") or {}
    if not info.get("ok") or shutil.which("sbatch") is None:
        raise Skip("the test Slurm cluster is not up (scripts/backends/up.sh slurm)")
    cube = ctx.cube("slurm")
    settings = ctx.home / "slurm-settings.yaml"
    settings.write_text(json.dumps({"platforms": {"bench-slurm": {"runner": "slurm", "partition": info.get("partition", "debug"), "time": "00:05:00"}}}))
    env = ctx.env(CUBERUN_SETTINGS=str(settings), SLURM_CONF=str(info.get("slurm_conf", "")))
    step = json.loads(quick([ctx.cuberun, "run", f"--mlcube={cube}", "--task=hello", "--platform=local", "--dry-run", "--json"], env=env).stdout)["steps"][-1]
    raw = Cmd(["sbatch", "--wait", "--quiet", f"--partition={info.get('partition', 'debug')}", f"--chdir={step.get('cwd') or cube}",
               "--output=/dev/null", "--wrap", " ".join(step["argv"])], env, label="sbatch --wait")
    m = measure({"raw": raw, "cr": ctx.cr("run", f"--mlcube={cube}", "--task=hello", "--platform=bench-slurm", "--force", env=env)},
                min(ctx.repeat, 5))
    return [Row("slurm", "`run --platform=slurm` of one task", "s", m["cr"], None, m["raw"], "sbatch --wait of the raw command")]
