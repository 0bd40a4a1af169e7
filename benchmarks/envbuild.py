"""The newcomer's first run, measured (issue 16): README command 1 and the managed env build.

    python benchmarks/envbuild.py [--repeat N] [--skip-install] [--json FILE]

Side by side, in one run, on private copies of examples/digits and empty caches:
  * env build: `cuberun configure` (the managed env of digits: venv + pip install -r, with the
    progress display and the log) vs the plain `python -m venv D && D/bin/pip install -r
    requirements.txt` of the same file; the two alternate, N times each; ratio of the medians.
  * reuse: a second cube whose requirements differ only in comments and order configures with
    the env the first one built (normalised key): time of that `cuberun configure`.
  * README command 1: `python -m venv V && V/bin/pip install -e REPO` then `cuberun run
    --mlcube=digits` with an empty env cache (first run), and the second run (three skips).
It uses the cuberun of the interpreter that runs it (an editable install of this checkout),
and the package index that pip is configured with. No timed assertion anywhere: numbers only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "examples" / "digits"


CPU: dict[str, list[float]] = {}  # user+sys seconds of each timed command and its children, by name


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list[str], env: dict[str, str], cwd: Path | None = None, name: str = "") -> float:
    """Wall seconds of argv (its CPU seconds, which other load on the machine changes far less,
    go to CPU[name])."""
    cpu = _children_cpu()
    start = time.monotonic()
    got = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=1800, check=False)
    took = time.monotonic() - start
    if got.returncode != 0:
        sys.exit(f"envbuild.py: {' '.join(argv)} exited {got.returncode}:\n{got.stderr[-2000:]}")
    if name:
        CPU.setdefault(name, []).append(_children_cpu() - cpu)
    return took


def copy_digits(dst: Path, requirements: str | None = None) -> Path:
    shutil.copytree(DIGITS, dst, ignore=shutil.ignore_patterns(".cuberun", "data", "model", "logs", "report.json", "__pycache__"))
    if requirements is not None:
        (dst / "requirements.txt").write_text(requirements, encoding="utf-8")
    return dst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=2, help="env builds of each kind (default 2)")
    p.add_argument("--skip-install", action="store_true", help="leave out README command 1's pip install -e of cuberun")
    p.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    args = p.parse_args(argv)

    scratch = Path(tempfile.mkdtemp(prefix="cuberun-envbuild-"))
    env = dict(os.environ)
    env.pop("CUBERUN_PROGRESS", None)
    env.update(CUBERUN_SETTINGS=str(scratch / "settings.yaml"), MLCUBE_SYSTEM_SETTINGS=str(scratch / "none.yaml"), PIP_DISABLE_PIP_VERSION_CHECK="1")
    cuberun = [sys.executable, "-m", "cuberun"]
    results: dict[str, list[float]] = {"cuberun_env_build": [], "plain_venv_pip": [], "reuse_second_cube": []}
    try:
        cube = copy_digits(scratch / "digits")
        reqs = (cube / "requirements.txt").read_text(encoding="utf-8")
        shuffled = "# the same set, written differently\n" + "\n".join(reversed(reqs.split())) + "\n\n"
        other = copy_digits(scratch / "digits-copy", shuffled)
        for i in range(args.repeat):
            cache = scratch / f"cache-{i}"
            build_env = {**env, "CUBERUN_CACHE_DIR": str(cache)}
            pair = [("cuberun_env_build", [*cuberun, "configure", f"--mlcube={cube}"]),
                    ("plain_venv_pip", ["sh", "-c", 'set -e; "$1" -m venv "$2"; "$2/bin/pip" install -q -r "$3"', "sh", sys.executable,
                                        str(scratch / f"plain-{i}"), str(cube / "requirements.txt")])]
            for name, cmd in pair if i % 2 == 0 else reversed(pair):  # alternate who goes first (page cache, load)
                results[name].append(timed(cmd, build_env, name=name))
                print(f"{name}: {results[name][-1]:.1f} s, CPU {CPU[name][-1]:.1f} s", file=sys.stderr)
            results["reuse_second_cube"].append(timed([*cuberun, "configure", f"--mlcube={other}"], build_env))
            envs = [d for d in (cache / "envs").iterdir() if d.is_dir()]
            assert len(envs) == 1, f"the second cube built another env: {envs}"
            shutil.rmtree(cache, ignore_errors=True)
            shutil.rmtree(scratch / f"plain-{i}", ignore_errors=True)

        first_env = {**env, "CUBERUN_CACHE_DIR": str(scratch / "cache-readme")}
        readme: dict[str, float] = {}
        if not args.skip_install:
            venv = scratch / "readme-venv"
            readme["install"] = timed(["sh", "-c", 'set -e; "$1" -m venv "$2"; "$2/bin/pip" install -q -e "$3"', "sh", sys.executable, str(venv),
                                       str(REPO)], env)
        run_cube = copy_digits(scratch / "digits-readme")
        readme["first_run"] = timed([*cuberun, "run", f"--mlcube={run_cube}"], first_env)
        readme["second_run"] = timed([*cuberun, "run", f"--mlcube={run_cube}"], first_env)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in results.items() if v}
    ratio = med["cuberun_env_build"] / med["plain_venv_pip"]
    cpu = {k: statistics.median(v) for k, v in CPU.items() if v}
    cpu_ratio = cpu["cuberun_env_build"] / cpu["plain_venv_pip"]
    rows = [
        ("env build of digits: cuberun configure", med["cuberun_env_build"],
         f"{ratio:.2f}x plain venv + pip (target 1.1x); CPU {cpu['cuberun_env_build']:.1f} s, {cpu_ratio:.2f}x"),
        ("env build of digits: python -m venv + pip install -r", med["plain_venv_pip"], f"1.00x; CPU {cpu['plain_venv_pip']:.1f} s"),
        ("second cube, same requirements written differently: configure", med["reuse_second_cube"], "reuses the env (target < 1 s)"),
    ]
    if "install" in readme:
        rows.append(("README command 1: venv + pip install -e . (cuberun itself)", readme["install"], ""))
    rows.append(("README command 1: cuberun run digits, empty env cache", readme["first_run"], "env build + 3 tasks"))
    rows.append(("README command 1 again: cuberun run digits (3 skips)", readme["second_run"],
                 f"{readme['first_run'] / readme['second_run']:.0f}x faster than the first"))
    if "install" in readme:
        rows.append(("README command 1 in all (install + first run)", readme["install"] + readme["first_run"], ""))
    print(f"| measurement (median of {args.repeat} for the env builds) | seconds | ratio / note |")
    print("|---|---:|---|")
    for what, secs, note in rows:
        print(f"| {what} | {secs:.1f} | {note} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"samples": results, "cpu_samples": CPU, "readme_command_1": readme, "ratio_env_build": ratio,
                                               "cpu_ratio_env_build": cpu_ratio}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
