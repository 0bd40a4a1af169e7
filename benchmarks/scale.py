"""Scale benchmarks for run.py (issue 11): the task graph of 10,000 tasks, and the 4,000-task chain
that took 88 s before the graph became linear. Imported by run.py; each function registers itself."""

from __future__ import annotations

from pathlib import Path

from run import Context, Row, Stats, benchmark, measure, quick, run_checked

GRAPH_CODE = """\
import sys, time
from cuberun import graph
from cuberun.spec import load_cube
cube = load_cube(sys.argv[1])
for _ in range(int(sys.argv[2])):
    t = time.perf_counter()
    deps = graph.dependencies(cube)
    order = graph.order(cube, list(cube.tasks), deps=deps)
    graph.write_after(cube, order)
    print(time.perf_counter() - t)
"""


def _chain(n: int) -> str:
    """n tasks, each reading the folder the one before wrote: the longest dependency chain."""
    lines = ["name: chain", "local: {command: python3 -c pass}", "tasks:"]
    lines += [f"  t{i}: {{parameters: {{inputs: {{i: d{i}/}}, outputs: {{o: d{i + 1}/}}}}}}" for i in range(n)]
    return "\n".join(lines) + "\n"


def _fan(n: int) -> str:
    """n tasks reading one file and writing into one shared folder (every pair of writers overlaps)."""
    lines = ["name: fan", "local: {command: python3 -c pass}", "tasks:"]
    lines += [f"  t{i}: {{parameters: {{inputs: {{i: {{type: file, default: in.txt}}}}, outputs: {{o: logs/}}}}}}" for i in range(n)]
    return "\n".join(lines) + "\n"


def _cube(ctx: Context, name: str, text: str) -> Path:
    root = ctx.scratch / name
    (root / "workspace").mkdir(parents=True, exist_ok=True)
    (root / "mlcube.yaml").write_text(text)
    return root


@benchmark("graph", "task graph: 10,000 tasks (chain and fan), and `graph` on a 4,000-task chain")
def bench_graph(ctx: Context) -> list[Row]:
    env = ctx.env(CUBERUN_CACHE_DIR=str(ctx.scratch / "graph-cache"))
    rows: list[Row] = []
    for label, text in (("a chain of 10,000 tasks", _chain(10_000)), ("10,000 tasks writing one folder", _fan(10_000))):
        cube = _cube(ctx, label.split()[0] + "-10k", text)
        out = quick([ctx.python, "-c", GRAPH_CODE, str(cube), str(max(3, ctx.repeat))], env=env, timeout=1800)
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        inner = Stats([float(x) for x in out.stdout.split()])
        rows.append(Row("scale", f"graph of {label}: dependencies, order and write ordering, in-process", "s", inner,
                        target="well under 1 s", met=inner.median < 1.0))
        run_checked(ctx.cr("graph", f"--mlcube={cube}", env=env), timeout=1800)  # warms the parse cache
        m = measure({"graph": ctx.cr("graph", f"--mlcube={cube}", env=env), "validate": ctx.cr("validate", f"--mlcube={cube}", env=env)},
                    max(3, min(ctx.repeat, 5)), warmup=0)
        rows.append(Row("scale", f"`cuberun graph` of {label} (whole command)", "s", m["graph"], None, m["validate"],
                        "`cuberun validate` of the same cube (loading it)"))
    chain = _cube(ctx, "chain-4000", _chain(4000))
    run_checked(ctx.cr("graph", f"--mlcube={chain}", env=env), timeout=1800)
    m = measure({"graph": ctx.cr("graph", f"--mlcube={chain}", env=env)}, max(3, min(ctx.repeat, 5)), warmup=0)
    rows.append(Row("scale", "`cuberun graph` of a chain of 4,000 tasks", "s", m["graph"], target="was 88 s", met=m["graph"].median < 5.0,
                    note="88 s before the graph was made linear (issue 11)"))
    return rows
