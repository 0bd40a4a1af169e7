"""Incremental runs, the task graph, locks and sweeps through the real CLI on the local runner."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI, EXAMPLES, run_records, write_tree


def mnist_cube(tmp_path: Path) -> Path:
    np = pytest.importorskip("numpy")
    cube = tmp_path / "mnist"
    shutil.copytree(EXAMPLES / "mnist", cube, ignore=shutil.ignore_patterns(".cuberun", "data", "logs", "model"))
    rng = np.random.default_rng(3)

    def split(n: int) -> tuple[Any, Any]:
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        images = rng.integers(0, 50, size=(n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            images[i, 2 + (k // 5) * 12 : 8 + (k // 5) * 12, 1 + (k % 5) * 5 : 7 + (k % 5) * 5] = 255
        return images, labels

    npz = tmp_path / "mnist.npz"
    x_train, y_train = split(200)
    x_test, y_test = split(50)
    np.savez_compressed(npz, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    ws = cube / "workspace"
    (ws / "data.yaml").write_text(f"uri: file://{npz}\nhash: '{hashlib.sha256(npz.read_bytes()).hexdigest()}'\n")
    (ws / "train.yaml").write_text("optimizer: adam\ntrain_epochs: 1\nbatch_size: 32\nlearning_rate: 0.01\nhidden_units: 16\nseed: 0\n")
    return cube


def runs(ws: Path) -> list[dict[str, Any]]:
    return run_records(ws)


def notes(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(("cuberun: skipping", "cuberun: task '"))]


def test_mnist_second_run_skips_and_edit_reruns_train_only(cli: CLI, tmp_path: Path) -> None:
    cube = mnist_cube(tmp_path)
    ws = cube / "workspace"
    first = cli("run", f"--mlcube={cube}")
    assert first.returncode == 0, first.stderr
    assert [r["task"] for r in runs(ws)] == ["download", "train", "evaluate"]
    second = cli("run", f"--mlcube={cube}")
    assert second.returncode == 0, second.stderr
    up = "up to date: code, environment, inputs, parameters and command unchanged, outputs intact"
    assert notes(second.stderr) == [f"cuberun: skipping task '{t}': {up}" for t in ("download", "train", "evaluate")]
    assert len(runs(ws)) == 3, "a skipped task writes no run record"
    # the prerequisites of a task run first when out of date, and are skipped when not
    (ws / "train.yaml").write_text((ws / "train.yaml").read_text().replace("batch_size: 32", "batch_size: 16"))
    third = cli("run", f"--mlcube={cube}", "--task=train")
    assert third.returncode == 0, third.stderr
    assert notes(third.stderr) == [
        f"cuberun: skipping task 'download': {up}",
        "cuberun: task 'train' will run: input train_config changed: content differs",
    ]
    record = runs(ws)[-1]
    assert record["task"] == "train" and record["inputs"]["train_config"]["sha256"] == hashlib.sha256((ws / "train.yaml").read_bytes()).hexdigest()
    assert set(record["outputs"]) == {"log_dir", "model_dir"} and record["outputs"]["model_dir"]["files"] == 1
    # evaluate's input (the model) changed, so a full run re-runs evaluate only
    fourth = cli("run", f"--mlcube={cube}")
    assert notes(fourth.stderr)[-1].startswith("cuberun: task 'evaluate' will run: input model_dir changed: 1 file (1 changed)")
    forced = cli("run", f"--mlcube={cube}", "--task=download", "--force")
    assert notes(forced.stderr) == ["cuberun: task 'download' will run: --force"]


def test_no_deps_and_failed_runs_never_count(cli: CLI, tmp_path: Path) -> None:
    cube = mnist_cube(tmp_path)
    ws = cube / "workspace"
    lone = cli("run", f"--mlcube={cube}", "--task=train", "--no-deps")
    assert lone.returncode == 2 and "input 'data_dir'" in lone.stderr
    assert cli("run", f"--mlcube={cube}", "--task=train").returncode == 0
    state = json.loads((ws / ".cuberun" / "state" / "train.json").read_text())
    good_run = state["run_id"]
    (ws / "train.yaml").write_text("optimizer: nesterov\ntrain_epochs: 1\n")  # the program rejects it
    bad = cli("run", f"--mlcube={cube}", "--task=train")
    assert bad.returncode == 1
    assert runs(ws)[-1]["status"] == "failed"
    assert json.loads((ws / ".cuberun" / "state" / "train.json").read_text())["run_id"] == good_run
    again = cli("run", f"--mlcube={cube}", "--task=train")
    assert "cuberun: task 'train' will run: input train_config changed" in again.stderr


def test_crash_mid_task_keeps_previous_complete_outputs_recorded(cli: CLI, tmp_path: Path) -> None:
    write_tree(tmp_path, {
        "mlcube.yaml": "name: c\nlocal: {command: python3 t.py, env: current}\ntasks:\n  t:\n    parameters:\n      outputs: {out: out/}\n",
        "t.py": ("import os, sys\nout = sys.argv[2].split('=', 1)[1]\nos.makedirs(out, exist_ok=True)\n"
                 "open(os.path.join(out, 'part.txt'), 'w').write('partial' if os.environ.get('CRASH') else 'complete')\n"
                 "sys.exit(9 if os.environ.get('CRASH') else 0)\n"),
    })
    assert cli("run").returncode == 0
    ws = tmp_path / "workspace"
    before = json.loads((ws / ".cuberun" / "state" / "t.json").read_text())
    crash = cli("run", "--force", env={"CRASH": "1"})
    assert crash.returncode == 9
    assert json.loads((ws / ".cuberun" / "state" / "t.json").read_text()) == before
    assert runs(ws)[-1]["status"] == "failed" and "outputs" not in runs(ws)[-1]
    rerun = cli("run")
    assert "cuberun: task 't' will run: output out changed since the last run" in rerun.stderr
    assert (ws / "out" / "part.txt").read_text() == "complete"


def test_two_runs_on_one_workspace_do_not_collide(cli: CLI, cli_env: dict[str, str], tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    write_tree(tmp_path, {
        "mlcube.yaml": "name: c\nlocal: {command: python3 t.py, env: current}\ntasks:\n  t:\n    parameters:\n      outputs: {out: out/}\n",
        "t.py": (f"import os, sys, time\nprint('READY', flush=True)\ndeadline = time.time() + 60\n"
                 f"while not os.path.exists({str(gate)!r}) and time.time() < deadline:\n    time.sleep(0.05)\n"),
    })
    first = subprocess.Popen([sys.executable, "-m", "cuberun", "run"], cwd=tmp_path, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert first.stdout is not None
        line = first.stdout.readline()  # blocks until the task prints (bounded by the task's own deadline)
        assert line.strip() == b"READY"
        second = cli("run", "--force")
        assert second.returncode == 75
        assert second.stderr.splitlines()[-1].startswith(f"cuberun: error: output {tmp_path}/workspace/out is in use by another cuberun run (task 't'")
    finally:
        gate.write_text("go")
        first.communicate(timeout=60)  # waits, and reads and closes both pipes
    assert first.returncode == 0


def test_sweep_runs_variants_in_parallel_with_own_outputs_and_records(cli: CLI, tmp_path: Path) -> None:
    write_tree(tmp_path, {
        "mlcube.yaml": ("name: s\nlocal: {command: python3 t.py, env: current}\ntasks:\n  train:\n    parameters:\n"
                        "      inputs: {config: train.yaml}\n      outputs: {model: model/, score: {type: file, default: score.txt}}\n"),
        "t.py": ("import os, sys, time, yaml\nargs = dict(a[2:].split('=', 1) for a in sys.argv[2:])\ncfg = yaml.safe_load(open(args['config']))\n"
                 "os.makedirs(args['model'], exist_ok=True)\nopen(os.path.join(args['model'], 'm.txt'), 'w').write(str(cfg))\n"
                 "open(args['score'], 'w').write(str(cfg['batch_size'] * cfg['opt']['lr']))\n"),
        "workspace/train.yaml": "batch_size: 8\nopt: {lr: 1}\n",
    })
    got = cli("run", "--task=train", "--sweep", "batch_size=16,32", "--sweep", "opt.lr=2,3", "--jobs", "2")
    assert got.returncode == 0, got.stderr
    ws = tmp_path / "workspace"
    labels = sorted(p.name for p in (ws / "sweeps").iterdir())
    assert labels == ["batch_size=16,opt.lr=2", "batch_size=16,opt.lr=3", "batch_size=32,opt.lr=2", "batch_size=32,opt.lr=3"]
    assert (ws / "sweeps" / "batch_size=32,opt.lr=3" / "score.txt").read_text() == "96"
    records = runs(ws)
    assert sorted(json.dumps(r["sweep"], sort_keys=True) for r in records) == sorted(
        json.dumps({"batch_size": b, "opt.lr": lr}, sort_keys=True) for b in ("16", "32") for lr in ("2", "3"))
    assert len({r["invocation_id"] for r in records}) == 1
    assert not (ws / "model").exists(), "variants never write the unswept outputs"
    again = cli("run", "--task=train", "--sweep", "batch_size=16,32", "--sweep", "opt.lr=2,3", "--jobs", "2")
    assert again.stderr.count("cuberun: skipping task 'train [") == 4
    bad = cli("run", "--task=train", "--sweep", "epochs=1,2")
    assert bad.returncode == 2 and "no YAML input of task 'train' has the key 'epochs'" in bad.stderr


def test_cycle_and_graph_command(cli: CLI, tmp_path: Path) -> None:
    write_tree(tmp_path, {"mlcube.yaml": ("name: x\nlocal: {command: python3 t.py}\ntasks:\n"
                                          "  a:\n    parameters: {inputs: {i: y/}, outputs: {o: x/}}\n"
                                          "  b:\n    parameters: {inputs: {i: x/}, outputs: {o: y/}}\n")})
    got = cli("run", "--task=a", "--dry-run")
    assert got.returncode == 2
    assert got.stderr.strip() == ("cuberun: error: the tasks form a cycle: a -> b -> a. "
                                  "Hint: a task's inputs must not come from its own later outputs; check the paths or cuberun.depends_on")
    dot = cli("graph", f"--mlcube={EXAMPLES / 'mnist'}", "--format=dot")
    assert dot.returncode == 0 and '"train" -> "evaluate";' in dot.stdout


def test_independent_tasks_run_in_parallel_in_graph_order(cli: CLI, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    # a diamond: a -> (b, c) -> d, plus e independent; each task logs start/end times. The
    # independent `a` and `e` meet at a rendezvous: each leaves a marker and waits (bounded) for
    # the other's, so both can only succeed when cuberun ran them at the same time
    spec = {"a": ([], "a/"), "b": (["a/"], "b/"), "c": (["a/"], "c/"), "d": (["b/", "c/"], "d/"), "e": ([], "e/")}
    meet = tmp_path_factory.mktemp("rendezvous")  # outside the cube: the markers are not code
    tasks = ""
    for name, (ins, out) in spec.items():
        inputs = ", ".join(f"i{k}: {p}" for k, p in enumerate(ins))
        tasks += f"  {name}:\n    parameters:\n      inputs: {{{inputs}}}\n      outputs: {{out: {out}}}\n"
    write_tree(tmp_path, {
        "mlcube.yaml": "name: p\nlocal: {command: python3 t.py, env: current}\ntasks:\n" + tasks,
        "t.py": ("import os, sys, time\nargs = dict(a[2:].split('=', 1) for a in sys.argv[2:])\nstart = time.time()\n"
                 f"meet, task = {str(meet)!r}, sys.argv[1]\nother = {{'a': 'e', 'e': 'a'}}.get(task)\n"
                 "if other:\n"
                 "    open(os.path.join(meet, task), 'w').close()\n"
                 "    deadline = time.time() + 60\n"
                 "    while not os.path.exists(os.path.join(meet, other)) and time.time() < deadline:\n"
                 "        time.sleep(0.05)\n"
                 "    if not os.path.exists(os.path.join(meet, other)):\n"
                 "        sys.exit(f'rendezvous: task {task} waited 60 s for task {other}: they did not run at the same time')\n"
                 "os.makedirs(args['out'], exist_ok=True)\nopen(os.path.join(args['out'], 't.txt'), 'w').write(f'{start} {time.time()}')\n"),
    })
    got = cli("run", "--jobs", "2")
    assert got.returncode == 0, f"with --jobs 2 the independent tasks a and e run at the same time: {got.stderr}"
    assert sorted(p.name for p in meet.iterdir()) == ["a", "e"]
    ws = tmp_path / "workspace"
    times = {n: tuple(map(float, (ws / n / "t.txt").read_text().split())) for n in spec}
    for name, (ins, _) in spec.items():
        for dep in ins:
            assert times[dep.rstrip("/")][1] <= times[name][0], f"{name} started before {dep} finished"
    again = cli("run", "--jobs", "2")
    assert again.stderr.count("cuberun: skipping task") == 5


def test_parallel_graph_stops_scheduling_after_a_failure(cli: CLI, tmp_path: Path) -> None:
    write_tree(tmp_path, {
        "mlcube.yaml": ("name: p\nlocal: {command: python3 t.py, env: current}\ntasks:\n"
                        "  bad:\n    parameters: {outputs: {out: bad/}}\n"
                        "  after:\n    parameters: {inputs: {i: bad/}, outputs: {out: after/}}\n"),
        "t.py": "import sys\nsys.exit(4 if sys.argv[1] == 'bad' else 0)\n",
    })
    got = cli("run", "--jobs", "2")
    assert got.returncode == 4
    assert [r["task"] for r in runs(tmp_path / "workspace")] == ["bad"]
