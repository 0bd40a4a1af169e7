#!/usr/bin/env python3
"""cuberun benchmarks: cuberun side by side with the reference (mlcube 0.0.9) and the raw command.

    bash benchmarks/setup_reference.sh && python3 benchmarks/run.py [--repeat N] [--only NAME ...]

Writes benchmarks/results/latest.json and benchmarks/results/latest.md and prints the table.
Standard library only (Python 3.10+). Every command is started from an argv list (no shell),
timed with time.perf_counter() around start and os.wait4(), which also gives the child's peak
RSS. The variants of one measurement are interleaved (A B C, A B C, ...) after one untimed
warm-up each, so a noisy neighbour slows all of them alike.

Adding a measurement: write a function ``def bench_x(ctx: Context) -> list[Row]`` and decorate it
with ``@benchmark("x", "what it measures")``. Raise ``Skip("reason")`` when its backend is missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import itertools
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HELLO = REPO / "examples" / "hello_world"
DEFAULT_BENCH_DIR = "/tmp/cuberun-bench"
DEFAULT_STATE_DIR = "/tmp/cuberun-test-state"
BASE_IMAGE = "localhost/cuberun-base:bookworm"
BENCH_IMAGE = "cuberun-bench/hello_world:0.1"  # our own name: never touch images others use
FLOOR_WRAPPER = "import json, pathlib, subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"
NAME_VALUE = "Benchmark"


# --------------------------------------------------------------------------- data
@dataclasses.dataclass
class Stats:
    """Samples of one quantity (seconds or MiB)."""

    samples: list[float]
    # user+sys CPU seconds of the process and its reaped descendants, per sample (timed rows only)
    cpu: list[float] = dataclasses.field(default_factory=list)

    @property
    def cpu_median(self) -> float | None:
        return statistics.median(self.cpu) if self.cpu else None

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"median": self.median, "min": self.min, "max": self.max, "n": len(self.samples), "samples": self.samples}
        if self.cpu:
            d["cpu_median"] = self.cpu_median
            d["cpu_samples"] = self.cpu
        return d


@dataclasses.dataclass
class Row:
    """One line of the table. cuberun/reference/baseline are Stats in `unit`, or None."""

    group: str
    measurement: str
    unit: str  # "s" or "MiB"
    cuberun: Stats | None = None
    reference: Stats | None = None
    baseline: Stats | None = None
    baseline_label: str = ""
    target: str = ""  # e.g. "< 0.15 s", "overhead < 0.1 s", "ratio < 1.15"
    met: bool | None = None
    note: str = ""

    def ratio(self, other: Stats | None, of: str = "median") -> float | None:
        """cuberun / other, of the medians (or of the minima: of="min")."""
        if self.cuberun is None or other is None or getattr(other, of) <= 0:
            return None
        return float(getattr(self.cuberun, of) / getattr(other, of))

    def overhead(self, who: Stats | None, of: str = "median") -> float | None:
        """who - baseline, of the medians (or of the minima)."""
        if who is None or self.baseline is None:
            return None
        return float(getattr(who, of) - getattr(self.baseline, of))

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"group": self.group, "measurement": self.measurement, "unit": self.unit,
                             "baseline_label": self.baseline_label, "target": self.target, "met": self.met, "note": self.note}
        for key in ("cuberun", "reference", "baseline"):
            s = getattr(self, key)
            d[key] = s.to_json() if s is not None else None
        for of in ("median", "min"):
            d[f"cuberun_over_reference_{of}"] = self.ratio(self.reference, of)
            d[f"cuberun_over_baseline_{of}"] = self.ratio(self.baseline, of)
            d[f"cuberun_minus_baseline_{of}"] = self.overhead(self.cuberun, of)
            d[f"reference_minus_baseline_{of}"] = self.overhead(self.reference, of)
        return d


class Skip(Exception):
    """A benchmark cannot run here (backend missing); the reason goes into the report."""


class BenchError(Exception):
    """A measured command failed."""


@dataclasses.dataclass
class Cmd:
    argv: list[str]
    env: dict[str, str]
    cwd: str | None = None
    label: str = ""

    def show(self) -> str:
        return " ".join(self.argv)


@dataclasses.dataclass
class Sample:
    seconds: float
    cpu: float
    exit_code: int
    output: str


# --------------------------------------------------------------------------- registry
@dataclasses.dataclass
class Benchmark:
    name: str
    title: str
    func: Callable[[Context], list[Row]]


REGISTRY: list[Benchmark] = []


def benchmark(name: str, title: str) -> Callable[[Callable[[Context], list[Row]]], Callable[[Context], list[Row]]]:
    def register(func: Callable[[Context], list[Row]]) -> Callable[[Context], list[Row]]:
        REGISTRY.append(Benchmark(name, title, func))
        return func

    return register


# --------------------------------------------------------------------------- running commands
def run_once(cmd: Cmd, timeout: float = 600.0) -> Sample:
    """Run cmd once; wall time from just before the fork to the reaped exit (output to a temp file)."""
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd.argv, cwd=cmd.cwd, env=cmd.env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        timer = threading.Timer(timeout, proc.kill)  # a blocking wait4 keeps the measuring process idle
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # Ctrl-C or SIGTERM of the harness: leave no child behind
            proc.kill()
            proc.wait()
            raise
        finally:
            timer.cancel()
        seconds = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        proc.returncode = code  # already reaped; keep Popen from waiting again
        if seconds >= timeout:
            raise BenchError(f"timed out after {timeout:.0f}s: {cmd.show()}")
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    return Sample(seconds, usage.ru_utime + usage.ru_stime, code, text)


def run_checked(cmd: Cmd, timeout: float = 600.0) -> Sample:
    s = run_once(cmd, timeout)
    if s.exit_code != 0:
        tail = "\n".join(s.output.strip().splitlines()[-8:])
        raise BenchError(f"exit {s.exit_code}: {cmd.show()}\n{textwrap.indent(tail, '    ')}")
    return s


def measure(cmds: dict[str, Cmd], repeat: int, warmup: int = 1) -> dict[str, Stats]:
    """Interleaved runs of several commands. Returns {key: wall seconds (with CPU seconds)}."""
    for _ in range(warmup):
        for cmd in cmds.values():
            run_checked(cmd)
    times: dict[str, list[float]] = {k: [] for k in cmds}
    cpu: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(repeat):
        for key, cmd in cmds.items():
            sample = run_checked(cmd)
            times[key].append(sample.seconds)
            cpu[key].append(sample.cpu)
    return {k: Stats(times[k], cpu[k]) for k in cmds}


def quick(argv: Sequence[str], env: dict[str, str] | None = None, timeout: float = 60.0, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """A helper command (not measured). Never raises on a non-zero exit; FileNotFoundError -> rc 127."""
    try:
        return subprocess.run(list(argv), env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        return subprocess.CompletedProcess(list(argv), 127, "", str(exc))
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(list(argv), 124, "", f"timed out after {timeout:.0f}s")


# --------------------------------------------------------------------------- context
class Context:
    """Paths, environments and scratch space shared by the benchmarks."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.repeat: int = args.repeat
        self.bench_dir = Path(args.bench_dir)
        self.ref_venv = self.bench_dir / "ref-venv"
        self.cr_venv = self.bench_dir / "cuberun-venv"
        self.cuberun = str(self.cr_venv / "bin" / "cuberun")
        self.mlcube = str(self.ref_venv / "bin" / "mlcube")
        self.python = str(self.cr_venv / "bin" / "python")
        # cuberun at an earlier commit (setup_reference.sh with CUBERUN_BENCH_BASELINE=<rev>), when present
        base = self.bench_dir / "baseline-venv"
        marker = base / ".cuberun-bench-ready"
        self.baseline = str(base / "bin" / "cuberun") if marker.is_file() and os.access(base / "bin" / "cuberun", os.X_OK) else None
        self.baseline_rev = marker.read_text().split()[0][:10] if self.baseline else None
        self.scratch = Path(tempfile.mkdtemp(prefix="cuberun-bench-"))
        self.home = self.scratch / "home"
        self.home.mkdir()
        self.ref_settings = self.scratch / "ref-settings" / "mlcube.yaml"
        self.ref_settings.parent.mkdir()
        self.ref_settings.write_text("{}\n")
        self.notes: list[str] = []
        if args.src:
            self.notes.append(f"cuberun measured from --src {args.src} (PYTHONPATH), not the bench venv's install")
        self._cubes: dict[str, Path] = {}
        self._force: list[str] | None = None

    def check(self) -> None:
        missing = [p for p in (self.cuberun, self.mlcube, self.python) if not os.access(p, os.X_OK)]
        if missing:
            sys.exit(f"run.py: missing {', '.join(missing)}; run: bash benchmarks/setup_reference.sh")

    def cleanup(self) -> None:
        if not self.args.keep_scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of every measured command.

        A throw-away HOME (neither implementation sees or rewrites the user's settings),
        the reference's settings in their own file (so cuberun, which also reads the
        reference's ~/mlcube.yaml, does not see them), and PATH without pyenv shims so
        that `python3` in a task is a real interpreter for cuberun and the raw command alike.
        """
        keep = ("LANG", "LC_ALL", "TERM", "TZ", "USER", "LOGNAME", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "DOCKER_HOST")
        env = {k: os.environ[k] for k in keep if k in os.environ}
        path = [p for p in os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin").split(os.pathsep) if p and ".pyenv/shims" not in p]
        env.update(
            PATH=os.pathsep.join([str(self.cr_venv / "bin"), *path]),
            HOME=str(self.home),
            XDG_CONFIG_HOME=str(self.home / ".config"),
            XDG_CACHE_HOME=str(self.home / ".cache"),
            XDG_DATA_HOME=str(self.home / ".local" / "share"),
            MLCUBE_SYSTEM_SETTINGS=str(self.ref_settings),
            CUBERUN_SETTINGS=str(self.home / "cuberun-settings.yaml"),
        )
        if self.args.src:  # another checkout's package first (the venv's entry point imports it)
            env["PYTHONPATH"] = str(Path(self.args.src).resolve())
        env.update(extra)
        return env

    def cube(self, key: str, edit: Callable[[str], str] | None = None) -> Path:
        """A private copy of examples/hello_world (never write into the repository)."""
        if key not in self._cubes:
            dst = self.scratch / "cubes" / key
            shutil.copytree(HELLO, dst, ignore=shutil.ignore_patterns(".cuberun", "chats", "__pycache__"))
            if edit is not None:
                yaml_file = dst / "mlcube.yaml"
                yaml_file.write_text(edit(yaml_file.read_text()))
            self._cubes[key] = dst
        return self._cubes[key]

    def run_force(self) -> list[str]:
        """["--force"] when `cuberun run` skips up-to-date tasks (the timed runs must really run)."""
        if self._force is None:
            self._force = ["--force"] if "--force" in quick([self.cuberun, "run", "--help"], env=self.env()).stdout else []
        return self._force

    def cr(self, *args: str, env: dict[str, str] | None = None) -> Cmd:
        return Cmd([self.cuberun, *args], env or self.env(), label="cuberun " + " ".join(args))

    def ref(self, *args: str, env: dict[str, str] | None = None) -> Cmd:
        return Cmd([self.mlcube, *args], env or self.env(), label="mlcube " + " ".join(args))


def dry_run_steps(ctx: Context, args: Sequence[str], env: dict[str, str]) -> list[dict[str, Any]]:
    """`cuberun run ... --dry-run --json` -> its steps."""
    cp = quick([ctx.cuberun, "run", *args, *ctx.run_force(), "--dry-run", "--json"], env=env)
    if cp.returncode != 0:
        raise BenchError(f"cuberun run --dry-run failed (exit {cp.returncode}): {cp.stderr.strip()[-500:]}")
    data = json.loads(cp.stdout)
    steps = data.get("steps") if isinstance(data, dict) else None
    if not isinstance(steps, list):
        raise BenchError(f"unexpected --dry-run --json output: {cp.stdout[:300]}")
    return steps


def expect_lines(path: Path, expected: int, what: str) -> None:
    """Every measured run of hello appends one line: proof that no variant silently did nothing."""
    try:
        got = len(path.read_text().splitlines())
    except OSError:
        got = 0
    if got != expected:
        raise BenchError(f"{what}: {path.name} has {got} lines, expected {expected} (one per measured run)")


def run_step(steps: list[dict[str, Any]]) -> dict[str, Any]:
    found = [s for s in steps if s.get("purpose") == "run"]
    if len(found) != 1:
        raise BenchError(f"expected one 'run' step in the dry run, got {[s.get('purpose') for s in steps]}")
    return found[0]


# --------------------------------------------------------------------------- benchmarks
@benchmark("startup", "start-up: --help and describe vs the reference and python -c pass")
def bench_startup(ctx: Context) -> list[Row]:
    cube = str(ctx.cube("describe"))
    env = ctx.env()
    cmds = {
        "python": Cmd([ctx.python, "-c", "pass"], env, label="python -c pass"),
        "cr_help": ctx.cr("--help"),
        "ref_help": ctx.ref("--help"),
        "cr_describe": ctx.cr("describe", f"--mlcube={cube}"),
        "ref_describe": ctx.ref("describe", f"--mlcube={cube}"),
    }
    t = measure(cmds, ctx.repeat)
    n = min(ctx.repeat, 3)
    ref_python = str(ctx.ref_venv / "bin" / "python")
    r = {
        "python": peak_rss(ctx, ctx.python, [], env, repeat=n),
        "cr_describe": peak_rss(ctx, ctx.python, [ctx.cuberun, "describe", f"--mlcube={cube}"], env, repeat=n),
        "ref_describe": peak_rss(ctx, ref_python, [ctx.mlcube, "describe", f"--mlcube={cube}"], env, repeat=n),
    }
    rows = [
        Row("start-up", "`--help`", "s", t["cr_help"], t["ref_help"], t["python"], "`python -c pass`", "< 0.15 s"),
        Row("start-up", "`describe --mlcube=hello_world`", "s", t["cr_describe"], t["ref_describe"], t["python"], "`python -c pass`", "< 0.15 s"),
        Row("memory", "peak RSS of `describe`", "MiB", r["cr_describe"], r["ref_describe"], r["python"], "`python -c pass`"),
    ]
    for row in rows[:2]:
        row.met = row.cuberun is not None and row.cuberun.median < 0.15
    return rows


# Peak RSS of a Python program, read from its own /proc/self/status (VmHWM) at exit. Not
# ru_maxrss: the kernel carries the parent's RSS over an exec into the child's ru_maxrss, so
# every child of this (larger) harness would show at least the harness's own RSS.
RSS_PROBE = """\
import atexit, os, sys
def _report():
    hwm = ""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = line.split()[1]
    with open(os.environ["CUBERUN_BENCH_RSS_OUT"], "w") as f:
        f.write(hwm)
atexit.register(_report)
if len(sys.argv) > 1:
    import runpy
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
"""


def peak_rss(ctx: Context, python: str, script_argv: Sequence[str], env: dict[str, str], cwd: str | None = None,
             repeat: int = 3) -> Stats:
    """Peak RSS (MiB) of `python script args...` (or of a bare interpreter when script_argv is empty)."""
    out = ctx.scratch / "rss.txt"
    values = []
    for _ in range(repeat):
        out.unlink(missing_ok=True)
        run_checked(Cmd([python, "-c", RSS_PROBE, *script_argv], dict(env, CUBERUN_BENCH_RSS_OUT=str(out)), cwd=cwd))
        text = out.read_text().strip() if out.exists() else ""
        if not text:
            raise BenchError(f"no VmHWM reported by {python} {' '.join(script_argv)}")
        values.append(int(text) / 1024.0)
    return Stats(values)


@benchmark("local", "local runner: cuberun run --platform=local vs the same command run directly")
def bench_local(ctx: Context) -> list[Row]:
    cube = ctx.cube("local")
    env = ctx.env()
    args = [f"--mlcube={cube}", "--task=hello", "--platform=local"]
    step = run_step(dry_run_steps(ctx, args, env))
    raw_env = dict(env)
    raw_env.update({str(k): str(v) for k, v in (step.get("env") or {}).items()})
    raw_env.setdefault("PYTHONUNBUFFERED", "1")  # the local runner sets it for its task
    raw = Cmd([str(a) for a in step["argv"]], raw_env, cwd=step.get("cwd"), label="raw task command")
    ctx.notes.append("local runner, raw command: `" + " ".join(raw.argv).replace(str(ctx.scratch), "$SCRATCH") + "`")
    chat = cube / "workspace" / "chats" / "chat_with_alice.txt"
    force = ctx.run_force()
    cmds = {"raw": raw, "cr": ctx.cr("run", *args, *force, env=env)}
    if force:  # cuberun skips up-to-date tasks: time that check too, on a cube of its own
        fresh = ctx.cube("uptodate")
        cmds["uptodate"] = ctx.cr("run", f"--mlcube={fresh}", "--task=hello", "--platform=local", env=env)
    m = measure(cmds, ctx.repeat)
    expect_lines(chat, 2 * (ctx.repeat + 1), "local runner")
    row = Row("local runner", "`run --task=hello --platform=local" + (" --force`" if force else "`"), "s", m["cr"], None, m["raw"],
              "the task's command run directly", "overhead < 0.1 s", note="reference: no local runner")
    over = row.overhead(row.cuberun)
    row.met = over is not None and over < 0.1
    rows = [row]
    if "uptodate" in m:
        # the warm-up ran the task once; every timed run must have skipped it
        expect_lines(fresh / "workspace" / "chats" / "chat_with_alice.txt", 1, "up-to-date check")
        rows.append(Row("local runner", "`run --task=hello --platform=local` when up to date (skipped)", "s", m["uptodate"], None, m["raw"],
                        "the task's command run directly", note="reference: always re-runs the task"))
    n = min(ctx.repeat, 3)
    task_python = shutil.which(raw.argv[0], path=raw_env["PATH"]) if raw.argv else None
    if task_python and os.path.basename(raw.argv[0]).startswith("python") and len(raw.argv) > 1 and not raw.argv[1].startswith("-"):
        task_rss: Stats | None = peak_rss(ctx, task_python, raw.argv[1:], raw_env, cwd=raw.cwd, repeat=n)
    else:
        task_rss = None
    rows.append(Row("memory", "peak RSS of cuberun itself in `run --platform=local`", "MiB",
                    peak_rss(ctx, ctx.python, [ctx.cuberun, "run", *args, *force], env, repeat=n), None, task_rss, "the task process alone",
                    note="cuberun's own process; the task runs beside it as a child"))
    return rows


# ---- docker
def docker_host(ctx: Context) -> tuple[str | None, str]:
    """DOCKER_HOST from backends.json's docker entry, else the state dir's docker.host, else the environment."""
    state = Path(os.environ.get("CUBERUN_TEST_STATE") or DEFAULT_STATE_DIR)
    try:
        entry = json.loads((state / "backends.json").read_text()).get("docker") or {}
    except (OSError, ValueError, AttributeError):
        entry = {}
    host = (entry.get("env") or {}).get("DOCKER_HOST") or entry.get("docker_host")
    if host:
        return str(host), f"{state / 'backends.json'}"
    try:
        host = (state / "docker.host").read_text().strip()
    except OSError:
        host = ""
    if host:
        return host, f"{state / 'docker.host'}"
    return os.environ.get("DOCKER_HOST"), "environment"


def _docker_section_edit(text: str) -> str:
    """Our own image name and the local base image as a build argument."""
    old = "image: cuberun/hello_world:0.1"
    if old not in text:
        raise BenchError(f"examples/hello_world/mlcube.yaml no longer has '{old}'; update benchmarks/run.py")
    return text.replace(old, f"image: {BENCH_IMAGE}\n  build_args:\n    BASE_IMAGE: {BASE_IMAGE}", 1)


def reference_docker_settings() -> dict[str, Any]:
    """The reference's system settings: its docker platform, made to remove its container and use no network."""
    return {
        "runners": {"docker": {"pkg": "mlcube_docker"}},
        "platforms": {
            "docker": {
                "runner": "docker", "image": "${docker.image}", "docker": "docker", "env_args": {}, "gpu_args": "",
                # the reference never removes its containers and has no network option of its own in run: pass both
                "cpu_args": "--rm --network=none",
                "build_args": {}, "build_context": ".", "build_file": "Dockerfile",
                "build_strategy": "pull",  # the image exists locally, so run never pulls
                "--network": None, "--security-opt": None, "--gpus": None, "--memory": None, "--cpuset-cpus": None,
            }
        },
        "storage": {},
    }


def our_containers(env: dict[str, str]) -> list[str]:
    cp = quick(["docker", "ps", "-aq", "--filter", f"ancestor={BENCH_IMAGE}"], env=env)
    return cp.stdout.split() if cp.returncode == 0 else []


@benchmark("docker", "docker runner: cuberun vs raw docker run vs the reference's mlcube run; configure no-op")
def bench_docker(ctx: Context) -> list[Row]:
    host, source = docker_host(ctx)
    if shutil.which("docker") is None:
        raise Skip("no docker client on PATH")
    env = ctx.env(**({"DOCKER_HOST": host} if host else {}))
    info = quick(["docker", "info", "--format", "{{.ServerVersion}}"], env=env, timeout=20)
    if info.returncode != 0:
        raise Skip(f"no docker engine answers (DOCKER_HOST={host or 'default'} from {source}): {info.stderr.strip()[:200]}")
    ctx.notes.append(f"docker engine {info.stdout.strip()} at {host or 'default socket'}")
    if quick(["docker", "image", "inspect", BASE_IMAGE], env=env).returncode != 0:
        raise Skip(f"base image {BASE_IMAGE} missing; run `bash scripts/backends/docker.sh up`")

    cube = ctx.cube("docker", _docker_section_edit)
    run_args = [f"--mlcube={cube}", "--task=hello", "--platform=docker"]
    probe = quick([ctx.cuberun, "run", *run_args, "--network=none", "--dry-run", "--json"], env=env)
    if probe.returncode != 0:
        raise Skip(f"docker runner not available: {probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else probe.returncode}")

    # Build (or rebuild) the image once through cuberun itself, so it carries cuberun's context label.
    conf_args = [f"--mlcube={cube}", "--platform=docker", "-Pdocker.build_strategy=auto"]
    built = quick([ctx.cuberun, "configure", *conf_args], env=env, timeout=900)
    if built.returncode != 0:
        raise BenchError(f"cuberun configure (first build) failed: {built.stderr.strip()[-600:]}")
    if quick(["docker", "image", "inspect", BENCH_IMAGE], env=env).returncode != 0:
        raise BenchError(f"cuberun configure did not produce {BENCH_IMAGE}")

    # The raw run: exactly what cuberun runs, from its own dry run.
    step = run_step(dry_run_steps(ctx, [*run_args, "--network=none"], env))
    argv = [str(a) for a in step["argv"]]
    if "--network=none" not in argv and not any(a == "--network" and b == "none" for a, b in itertools.pairwise(argv)):
        raise BenchError(f"cuberun's docker command has no --network none: {argv}")
    if "--rm" not in argv:
        argv.insert(argv.index("run") + 1, "--rm")
        ctx.notes.append("raw docker run: added --rm (cuberun removes its container another way)")
    raw_env = dict(env)
    raw_env.update({str(k): str(v) for k, v in (step.get("env") or {}).items()})
    raw = Cmd(argv, raw_env, cwd=step.get("cwd"), label="raw docker run")
    ctx.notes.append("docker, raw command: `" + " ".join(argv).replace(str(ctx.scratch), "$SCRATCH") + "`")

    ref_settings = ctx.scratch / "ref-docker-settings.yaml"
    ref_settings.write_text(json.dumps(reference_docker_settings(), indent=2) + "\n")  # JSON is YAML
    ref_env = dict(env, MLCUBE_SYSTEM_SETTINGS=str(ref_settings))
    cmds = {
        "raw": raw,
        "cr": ctx.cr("run", *run_args, "--network=none", *ctx.run_force(), env=env),
        "ref": ctx.ref("run", f"--mlcube={cube}", "--task=hello", "--platform=docker", env=ref_env),
        "configure": ctx.cr("configure", *conf_args, env=env),
        # the floor of any Python front end: the venv's interpreter, the three standard modules a
        # tool that keeps JSON records of its runs needs, and one subprocess call of the same command
        "floor": Cmd([ctx.python, "-c", FLOOR_WRAPPER, *argv], raw_env, cwd=step.get("cwd"), label="python wrapper"),
    }
    before = set(our_containers(env))
    chat = cube / "workspace" / "chats" / "chat_with_alice.txt"
    chat.unlink(missing_ok=True)
    try:
        m = measure(cmds, ctx.repeat)
        expect_lines(chat, 4 * (ctx.repeat + 1), "docker")  # raw, cuberun, reference, floor
    finally:
        left = [c for c in our_containers(env) if c not in before]
        if left:
            quick(["docker", "rm", "-f", *left], env=env)
            ctx.notes.append(f"WARNING: {len(left)} container(s) of {BENCH_IMAGE} were left behind and have been removed")
    if ctx.args.remove_images:
        quick(["docker", "image", "rm", BENCH_IMAGE], env=env)
    run_row = Row("docker", "`run --task=hello --platform=docker`", "s", m["cr"], m["ref"], m["raw"], "`docker run --rm --network none` of the same command",
                  "overhead < 0.1 s, ratio < 1.15")
    over, ratio = run_row.overhead(run_row.cuberun), run_row.ratio(run_row.baseline)
    run_row.met = over is not None and ratio is not None and over < 0.1 and ratio < 1.15
    floor_row = Row("docker", "floor: the raw `docker run` started by `python -c 'import json, pathlib, subprocess; subprocess.call(argv)'`",
                    "s", m["floor"], None, m["raw"], "`docker run --rm --network none` of the same command", "",
                    note="the least any Python front end adds (interpreter start-up and three standard modules): "
                         "cuberun's own work is the cuberun row minus this one")
    conf_row = Row("docker", "`configure --platform=docker` (unchanged cube, build_strategy auto)", "s", m["configure"], None, None, "",
                   "< 0.5 s", note="reference: configure always pulls or rebuilds")
    conf_row.met = conf_row.cuberun is not None and conf_row.cuberun.median < 0.5
    return [run_row, floor_row, conf_row]


# --------------------------------------------------------------------------- machine and report
def machine(ctx: Context) -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    venv_py = quick([ctx.python, "-c", "import platform; print(platform.python_version())"]).stdout.strip()
    cuberun_version = quick([ctx.cuberun, "--version"], env=ctx.env()).stdout.strip()
    ref_version = quick([str(ctx.ref_venv / "bin" / "python"), "-c",
                         "from importlib.metadata import version as v; print('mlcube', v('mlcube'), '+ mlcube-docker', v('mlcube-docker'))"]).stdout.strip()
    commit = quick(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]).stdout.strip()
    dirty = quick(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"]).stdout.strip()
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu or platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": mem_gib,
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": venv_py,
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "cuberun": cuberun_version,
        "reference": ref_version,
        "commit": commit + ("+dirty" if dirty else ""),
    }


def fmt_value(s: Stats | None, unit: str) -> str:
    if s is None:
        return "–"
    if unit == "s":
        return f"{s.median:.3f} s ({s.min:.3f})"
    return f"{s.median:.1f} MiB"


def fmt_ratio(row: Row, other: Stats | None) -> str:
    x = row.ratio(other)
    if x is None:
        return "–"
    if row.unit != "s":
        return f"{x:.2f}×"
    return f"{x:.2f}× ({row.ratio(other, 'min'):.2f}×)"


def fmt_delta(row: Row, who: Stats | None) -> str:
    x = row.overhead(who)
    if x is None:
        return "–"
    if row.unit != "s":
        return f"{x:+.1f} MiB"
    return f"{x:+.3f} s ({row.overhead(who, 'min'):+.3f})"


def fmt_cpu(row: Row) -> str:
    """Median user+sys CPU seconds: steadier than wall time when other work shares the machine."""
    values = [s.cpu_median if s is not None else None for s in (row.cuberun, row.reference, row.baseline)]
    if all(v is None for v in values):
        return "–"
    return " · ".join("–" if v is None else f"{v:.3f}" for v in values)


def markdown(rows: list[Row], mach: dict[str, Any], skipped: list[tuple[str, str]], notes: list[str], repeat: int) -> str:
    head = ["Measurement", "cuberun", "reference", "baseline", "cuberun ÷ ref", "cuberun ÷ baseline", "cuberun − baseline",
            "ref − baseline", "target", "CPU s: cuberun · ref · baseline"]
    lines = [
        f"Machine: {mach['cpu']}, {mach['cores']} cores, {mach['memory_gib']} GiB, Linux {mach['kernel']}, Python {mach['python']}; "
        f"{mach['date']}; 1-minute load average {mach['load_avg_at_start'][0]} at start, {mach.get('load_avg_at_end', ['?'])[0]} at end.",
        f"cuberun: {mach['cuberun']} ({mach['commit']}); reference: {mach['reference']}.",
        f"Times: wall clock, median of {repeat} runs (in parentheses: the minimum, and ratios/differences of the minima, "
        "the steadier figure on a busy machine); targets are checked against the medians. CPU: median user+sys seconds of the "
        "command and its children (for docker: the client only). Memory: peak RSS (VmHWM).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(head) - 3) + ["---", "---:"]) + "|",
    ]
    baselines: list[str] = []
    for r in rows:
        mark = "" if r.met is None else (" ✅" if r.met else " ❌")
        base = fmt_value(r.baseline, r.unit)
        if r.baseline is not None and r.baseline_label:
            if r.baseline_label not in baselines:
                baselines.append(r.baseline_label)
            base += f" [{baselines.index(r.baseline_label) + 1}]"
        ref = fmt_value(r.reference, r.unit) if r.reference is not None else (r.note.split(":", 1)[1].strip() if r.note.startswith("reference:") else "–")
        lines.append("| " + " | ".join([
            r.measurement, fmt_value(r.cuberun, r.unit), ref, base, fmt_ratio(r, r.reference), fmt_ratio(r, r.baseline),
            fmt_delta(r, r.cuberun), fmt_delta(r, r.reference), (r.target + mark).strip() or "–", fmt_cpu(r),
        ]) + " |")
    lines.append("")
    for i, b in enumerate(baselines, 1):
        lines.append(f"[{i}] baseline: {b}.  ")
    for r in rows:
        if r.note and not r.note.startswith("reference:"):
            lines.append(f"- {r.measurement}: {r.note}.")
    for name, reason in skipped:
        lines.append(f"- **{name}** {reason}")
    for n in notes:
        lines.append(f"- {n}")
    return "\n".join(lines).rstrip() + "\n"


def wait_idle(deadline: float, threshold: float) -> None:
    """Wait (until the monotonic `deadline`, polling every 5 s) for the 1-minute load average to fall below threshold."""
    load = os.getloadavg()[0]
    while load >= threshold and time.monotonic() < deadline:
        print(f"run.py: load average {load:.2f} >= {threshold:.2f}; waiting", file=sys.stderr, flush=True)
        time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        load = os.getloadavg()[0]
    if load >= threshold:
        print(f"run.py: still busy (load average {load:.2f}); measuring anyway", file=sys.stderr)


def _register_more() -> None:
    """benchmarks/more.py registers the reproducibility, SSH and Slurm benchmarks; scale.py the task graph."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.modules.setdefault("run", sys.modules[__name__])
    import more  # noqa: F401
    import scale  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    _register_more()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=10, help="timed runs per command (default 10; median and min reported)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks (see --list)")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    p.add_argument("--bench-dir", default=os.environ.get("CUBERUN_BENCH_DIR", DEFAULT_BENCH_DIR), help="where setup_reference.sh put the venvs")
    p.add_argument("--output-dir", default=str(REPO / "benchmarks" / "results"), help="where latest.json and latest.md go")
    p.add_argument("--no-write", action="store_true", help="print the table only")
    p.add_argument("--keep-scratch", action="store_true", help="keep the temporary cubes and HOME for inspection")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                   help="before each benchmark wait for the 1-minute load average to drop below --idle-load; SECONDS bounds all waits together")
    p.add_argument("--idle-load", type=float, default=None, metavar="LOAD", help="idle threshold for --wait-idle (default: half the cores)")
    p.add_argument("--src", metavar="DIR", help="measure the cuberun package in DIR (e.g. a worktree's src) instead of the bench venv's install")
    p.add_argument("--remove-images", action="store_true", help=f"remove {BENCH_IMAGE} afterwards (default: keep it for the next run)")
    args = p.parse_args(argv)
    if args.list:
        for b in REGISTRY:
            print(f"{b.name:10} {b.title}")
        return 0
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    known = {b.name for b in REGISTRY}
    unknown = set(args.only or []) - known
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")

    # SIGTERM unwinds like Ctrl-C, so the scratch directory and running children are cleaned up
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    ctx = Context(args)
    ctx.check()
    mach = machine(ctx)
    rows: list[Row] = []
    skipped: list[tuple[str, str]] = []
    failed = False
    started = time.perf_counter()
    idle_deadline = time.monotonic() + args.wait_idle
    try:
        for b in REGISTRY:
            if args.only and b.name not in args.only:
                continue
            if args.wait_idle > 0:
                wait_idle(idle_deadline, args.idle_load if args.idle_load is not None else (os.cpu_count() or 2) / 2)
            t0 = time.perf_counter()
            print(f"run.py: {b.name}: {b.title} ...", file=sys.stderr, flush=True)
            try:
                rows.extend(b.func(ctx))
            except Skip as exc:
                skipped.append((b.name, f"skipped: {exc}"))
                print(f"run.py: {b.name}: skipped: {exc}", file=sys.stderr)
                continue
            except BenchError as exc:
                failed = True
                skipped.append((b.name, f"FAILED: {str(exc).splitlines()[0]}"))
                print(f"run.py: {b.name}: FAILED: {exc}", file=sys.stderr)
                continue
            print(f"run.py: {b.name}: done in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    finally:
        ctx.cleanup()
    mach["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    table = markdown(rows, mach, skipped, ctx.notes, args.repeat)
    print(table)
    if not args.no_write:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        report = {"machine": mach, "repeat": args.repeat, "seconds": round(time.perf_counter() - started, 1),
                  "rows": [r.to_json() for r in rows], "skipped": [{"benchmark": n, "reason": r} for n, r in skipped], "notes": ctx.notes}
        (out / "latest.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        (out / "latest.md").write_text("# cuberun benchmarks (latest run)\n\n" + table)
        print(f"run.py: wrote {out / 'latest.md'} and {out / 'latest.json'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
