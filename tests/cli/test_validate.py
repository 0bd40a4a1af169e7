"""`validate` reports, without running, what `run` would refuse before starting; `run` refuses
the same things before it starts anything (nothing is created)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import CLI, EXAMPLES, write_tree

PROGRAM = "import sys\nprint(sys.argv[1:])\n"


def cube(tmp_path: Path, local: str, params: str = "inputs: {a: in.txt}\n      outputs: {o: {type: directory, default: out/}}",
         extra: str = "") -> Path:
    write_tree(tmp_path, {
        "mlcube.yaml": f"name: demo\nlocal:\n{local}\n{extra}tasks:\n  t:\n    parameters:\n      {params}\n",
        "x.py": PROGRAM, "req.txt": "# nothing\n", "workspace/in.txt": "hi\n",
    })
    return tmp_path


def test_examples_validate(cli: CLI) -> None:
    for name in ("hello_world", "matmul", "mnist", "digits"):
        got = cli("validate", f"--mlcube={EXAMPLES / name}")
        assert got.returncode == 0 and got.stderr == "" and got.stdout.endswith("ok (" + got.stdout.split("ok (")[1]), (name, got.stderr)


def test_missing_requirements_file_and_workdir(cli: CLI, tmp_path: Path) -> None:
    cube(tmp_path, "  command: python3 x.py\n  requirements: [req.txt, missing.txt]")
    got = cli("validate")
    f = tmp_path / "mlcube.yaml"
    assert (got.returncode, got.stderr) == (2, f"cuberun: error: {f}:4:27: local.requirements[1]: requirements file {tmp_path}/missing.txt "
                                               "does not exist. Hint: create it, or fix the path (relative to the cube folder)\n")
    run = cli("run")
    assert run.returncode == 2 and "missing.txt does not exist" in run.stderr
    cube(tmp_path, "  command: python3 x.py\n  workdir: src")
    got = cli("validate")
    assert got.returncode == 2 and f"local.workdir: working directory {tmp_path}/src does not exist" in got.stderr


def test_missing_program_is_a_warning(cli: CLI, tmp_path: Path) -> None:
    cube(tmp_path, "  command: python3 nothere.py\n  env: current")
    got = cli("validate")
    assert got.returncode == 0 and got.stdout.endswith("ok (1 task, 1 warning)\n")
    assert f"local.command: the program {tmp_path}/nothere.py does not exist" in got.stderr


def test_environment_variable_names(cli: CLI, tmp_path: Path) -> None:
    cube(tmp_path, "  command: python3 x.py\n  env: current\n  env_vars: {'A=B': 1, GOOD_1: 2, 1X: 3}",
         extra="docker:\n  image: x\n  env_args: {'': 1}\n")
    f = tmp_path / "mlcube.yaml"
    got = cli("validate")
    assert got.returncode == 2
    assert got.stderr.splitlines() == [
        f"cuberun: warning: {f}:5:35: local.env_vars.1X: '1X' is not a portable environment variable name (letters, digits and '_', "
        "not starting with a digit). Hint: use letters, digits and '_', e.g. MY_SETTING",
        f"cuberun: error: {f}:5:14: local.env_vars.A=B: 'A=B' cannot be an environment variable name (it is empty, or has '=' or a NUL "
        "in it). Hint: use letters, digits and '_', e.g. MY_SETTING",
        f"cuberun: error: {f}:8:14: docker.env_args.: '' cannot be an environment variable name (it is empty, or has '=' or a NUL in it). "
        "Hint: use letters, digits and '_', e.g. MY_SETTING",
    ]
    run = cli("run")  # before: an internal error from the operating system's execve
    assert run.returncode == 2 and "internal error" not in run.stderr
    assert "local.env_vars.A=B: 'A=B' cannot be an environment variable name" in run.stderr
    assert not (tmp_path / "workspace" / "out").exists() and not (tmp_path / "workspace" / ".cuberun").exists()
    fixed = cli("run", "-Plocal.env_vars={GOOD_1: 2}")
    assert fixed.returncode == 0, fixed.stderr


def test_unset_variables_in_paths(cli: CLI, tmp_path: Path) -> None:
    cube(tmp_path, "  command: python3 x.py\n  env: current",
         params="inputs: {a: $CUBERUN_TEST_UNSET_IN/in.txt}\n      outputs: {o: {type: directory, default: $CUBERUN_TEST_UNSET_OUT/out/}}")
    f = tmp_path / "mlcube.yaml"
    got = cli("validate")
    assert got.returncode == 2
    assert got.stderr.splitlines() == [
        f"cuberun: error: {f}:8:19: tasks.t.parameters.inputs.a: $CUBERUN_TEST_UNSET_IN in '$CUBERUN_TEST_UNSET_IN/in.txt' is not set in "
        "the environment. Hint: export CUBERUN_TEST_UNSET_IN=..., or override a=PATH",
        f"cuberun: error: {f}:9:20: tasks.t.parameters.outputs.o: $CUBERUN_TEST_UNSET_OUT in '$CUBERUN_TEST_UNSET_OUT/out/' is not set in "
        "the environment. Hint: export CUBERUN_TEST_UNSET_OUT=..., or override o=PATH",
    ]
    run = cli("run", "a=in.txt")  # before: a folder literally named '$CUBERUN_TEST_UNSET_OUT' in the workspace
    assert run.returncode == 2 and "$CUBERUN_TEST_UNSET_OUT in '$CUBERUN_TEST_UNSET_OUT/out/' is not set" in run.stderr
    assert not list((tmp_path / "workspace").glob("$*"))
    env = {"CUBERUN_TEST_UNSET_IN": str(tmp_path / "workspace"), "CUBERUN_TEST_UNSET_OUT": str(tmp_path / "workspace" / "o")}
    assert cli("validate", env=env).returncode == 0
    ok = cli("run", env=env)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "workspace" / "o" / "out").is_dir()


def test_outputs_outside_the_workspace_and_missing_inputs(cli: CLI, tmp_path: Path) -> None:
    write_tree(tmp_path, {"x.py": PROGRAM, "mlcube.yaml": (
        "name: demo\nlocal: {command: python3 x.py, env: current}\ntasks:\n"
        "  make: {parameters: {outputs: {m: made/}}}\n"
        "  use:\n    parameters:\n      inputs: {a: nothere.txt, b: made/x}\n"
        "      outputs: {o: {type: directory, default: ../escape/}}\n")})
    got = cli("validate")
    assert got.returncode == 2
    assert "output 'o': ../escape/ resolves to" in got.stderr and "outside the workspace" in got.stderr
    assert "input 'a': " + str(tmp_path / "workspace" / "nothere.txt") + " does not exist, and no task writes it" in got.stderr
    assert "input 'b'" not in got.stderr  # task 'make' writes it


def test_missing_inputs_are_matched_against_output_folders_and_their_ancestors_only(cli: CLI, tmp_path: Path) -> None:
    """An input under a folder a task writes (at any depth) is not reported; one under a sibling
    whose name merely starts the same (`made2/` beside `made/`) is. (Checked per folder level
    since a cube of 10,000 tasks made this check quadratic.)"""
    write_tree(tmp_path, {"x.py": PROGRAM, "mlcube.yaml": (
        "name: demo\nlocal: {command: python3 x.py, env: current}\ntasks:\n"
        "  make: {parameters: {outputs: {m: made/}}}\n"
        "  use:\n    parameters:\n      inputs: {deep: made/a/b/c.txt, same: made, twin: made2/x.txt}\n"
        "      outputs: {o: out/}\n")})
    got = cli("validate")
    assert "input 'deep'" not in got.stderr and "input 'same'" not in got.stderr
    assert "input 'twin': " + str(tmp_path / "workspace" / "made2" / "x.txt") + " does not exist, and no task writes it" in got.stderr
