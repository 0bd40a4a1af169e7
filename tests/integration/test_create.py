"""`cuberun create`: every name it accepts gives a cube that runs (local platform, real
processes); names it cannot serve are refused; a broken result is never handed over."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cuberun import scaffold
from cuberun.errors import CuberunError, UsageError
from tests.conftest import CLI

# (cube name, --task): names that collided with the program's own before (main, sys, json, a
# keyword), YAML words (null, on, yes), dashes, capitals and the longest names accepted
NAMES = [
    ("my_cube", None),
    ("c-main", "main"),
    ("c-class", "class"),
    ("c-sys", "sys"),
    ("c-json", "json"),
    ("c-argparse", "argparse"),
    ("c-print", "print"),
    ("c-tasks", "TASKS"),
    ("c-prefixed", "task_main"),
    ("c-dash", "my-task"),
    ("c-under", "_private"),
    ("null", "null"),
    ("yes", "on"),
    ("class", "Train"),
    ("Upper-Case", "Evaluate2"),
    ("c" * 64, "t" * 64),
]


@pytest.mark.parametrize("name, task", NAMES, ids=[f"{n[:12]}:{t}" for n, t in NAMES])
def test_created_cube_runs(cli: CLI, tmp_path: Path, name: str, task: str | None) -> None:
    args = ["create", name, f"--dir={tmp_path}"] + ([f"--task={task}"] if task else [])
    made = cli(*args)
    assert made.returncode == 0, made.stderr
    cube = tmp_path / name
    run = cli("run", f"--mlcube={cube}", "--platform=local")
    assert run.returncode == 0, run.stderr
    result = json.loads((cube / "workspace" / "output" / "result.json").read_text())
    assert result == {"task": task or "main", "parameters": "# parameters of the " + (task or "main") + " task\nlearning_rate: 0.01\n",
                      "status": "ok"}
    if name in ("null", "c" * 64):  # the cube file keeps such names as names (validate, describe: the same loader)
        assert cli("validate", f"--mlcube={cube}").returncode == 0
        described = json.loads(cli("describe", f"--mlcube={cube}", "--json").stdout)
        assert described["name"] == name and list(described["tasks"]) == [task or "main"]


def test_pipeline_template_trains_then_evaluates(cli: CLI, tmp_path: Path) -> None:
    made = cli("create", "line-fit", f"--dir={tmp_path}", "--template=pipeline", "--description=Fits: a line # not a comment")
    assert made.returncode == 0, made.stderr
    cube = tmp_path / "line-fit"
    assert sorted(p.name for p in cube.iterdir()) == [".dockerignore", "Dockerfile", "README.md", "line_fit.py", "mlcube.yaml",
                                                      "requirements.txt", "workspace"]
    run = cli("run", f"--mlcube={cube}", "--task=evaluate")  # train runs first: evaluate reads its model
    assert run.returncode == 0, run.stderr
    assert "task 'train' will run" in run.stderr and "task 'evaluate' will run" in run.stderr
    model = json.loads((cube / "workspace" / "model" / "model.json").read_text())
    assert abs(model["slope"] - 3.0) < 0.1 and abs(model["intercept"] - 2.0) < 0.1
    metrics = json.loads((cube / "workspace" / "metrics.json").read_text())
    assert metrics["evaluated_on"] == 200 and metrics["mse"] < 0.05  # noise 0.1: mse about 0.01
    again = cli("run", f"--mlcube={cube}")
    assert again.returncode == 0 and again.stderr.count("skipping task") == 2, again.stderr
    assert json.loads(cli("describe", f"--mlcube={cube}", "--json").stdout)["description"] == "Fits: a line # not a comment"


@pytest.mark.parametrize("args, message", [
    (["json"], "cube name 'json' would name the program json.py, which hides Python's own 'json' module. Hint: choose another name, e.g. 'json_cube'"),
    (["sys"], "cube name 'sys' would name the program sys.py"),
    (["1cube"], "'1cube' is not a valid cube name"),
    (["c" * 65], "is not a valid cube name"),
    (["ok", "--task=1bad"], "'1bad' is not a valid task name"),
    (["ok", "--task=a.b"], "'a.b' is not a valid task name"),
    (["ok", "--task=-x"], "'-x' is not a valid task name"),
    (["ok", "--task=" + "t" * 65], "is not a valid task name"),
    (["ok", "--template=pipline"], "unknown template 'pipline'. Hint: did you mean 'pipeline'?"),
    (["ok", "--template=pipeline", "--task=x"], "--task applies to the single-task template, not to 'pipeline'"),
])
def test_names_that_cannot_work_are_refused(cli: CLI, tmp_path: Path, args: list[str], message: str) -> None:
    got = cli("create", *args, f"--dir={tmp_path}")
    assert got.returncode == 2 and got.stderr.startswith("cuberun: error: ") and message in got.stderr, got.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_existing_folder_is_kept(cli: CLI, tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    got = cli("create", "mine", f"--dir={tmp_path}")
    assert got.returncode == 2 and "already exists and is not empty" in got.stderr
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


def test_a_broken_result_is_an_error_and_nothing_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the program the old template wrote for task 'main': main() defined twice (a TypeError on the first run)
    vals = scaffold.values("cube", "main", "d", "a")
    files = scaffold.render("single", vals)
    files["cube.py"] = "def main(a, b):\n    pass\n\n\ndef main(argv):\n    return 0\n"
    assert scaffold.check_rendered(files, vals) == ["cube.py defines main() twice", "cube.py has no function for task 'main'"]
    monkeypatch.setattr(scaffold, "render", lambda template, v: files)
    with pytest.raises(CuberunError) as err:
        scaffold.create("cube", tmp_path)
    assert err.value.exit_code != 0 and not isinstance(err.value, UsageError)
    assert "gives a broken cube" in err.value.message
    assert list(tmp_path.iterdir()) == []


def test_every_template_renders_a_cube_that_checks_out() -> None:
    for template in scaffold.TEMPLATES:
        for name, task in NAMES:
            vals = scaffold.values(name, task or "main", "a: b # c", "O'Neil \"x\"")
            assert scaffold.check_rendered(scaffold.render(template, vals), vals) == [], (template, name, task)
