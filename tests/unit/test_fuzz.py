"""Property-based fuzzing: no input ever produces a traceback or writes anything."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from cuberun import yamlio
from cuberun.errors import CuberunError
from cuberun.spec.interpolate import InterpolationError, Interpolator
from cuberun.spec.load import build_cube

KEYS = st.sampled_from(["name", "tasks", "docker", "platform", "local", "entrypoint", "parameters", "inputs", "outputs", "type",
                        "default", "opts", "image", "accelerator_count", "cuberun", "depends_on", "task", "parameter", "x"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12),
                    st.sampled_from(["file", "directory", "ro", "rw", "data/", "${name}", "${oc.env:HOME}", "${a", "${x.y}", "$HOME/x"]))
TREES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.one_of(KEYS, st.text(max_size=6)), inner, max_size=5)),
                     max_leaves=30)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _files(root: Path) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


@FUZZ
@given(TREES)
@example({"tasks": {"\n": None}})  # a newline in a key once made a two-line error
def test_loader_never_crashes_on_any_structure(tmp_path_factory: object, data: object) -> None:
    root = Path(str(tmp_path_factory.mktemp("fz")))  # type: ignore[attr-defined]
    text = yaml.safe_dump({"name": "x", "tasks": data} if not isinstance(data, dict) else data)
    (root / "mlcube.yaml").write_text(text)
    before = _files(root)
    try:
        build_cube(yamlio.parse(text, str(root / "mlcube.yaml")), root / "mlcube.yaml")
    except CuberunError as exc:
        assert all(line and "\n" not in line for line in exc.lines())
    assert _files(root) == before


@FUZZ
@given(st.text(max_size=200))
def test_yaml_parser_errors_are_clean(text: str) -> None:
    try:
        yamlio.parse(text, "f.yaml")
    except CuberunError as exc:
        assert exc.lines() and all("\n" not in line for line in exc.lines())


@FUZZ
@given(st.text(alphabet=st.sampled_from(list("${}.:,'\"\\abHOME_x ")), max_size=30))
def test_interpolation_raises_only_its_own_error(text: str) -> None:
    try:
        Interpolator({"a": {"b": "v"}, "x": "${a.b}"}, {"HOME": "/h"}).resolve_string(text)
    except InterpolationError as exc:
        assert exc.message


ARGS = st.lists(st.one_of(
    st.sampled_from(["run", "describe", "validate", "--task", "--task=hello", "--platform=nope", "--gpus=2", "--gpus=x", "-P", "-Pa=b",
                     "-Pdocker..x=1", "name=", "=x", "--name=a=b", "--mount=rx", "--sweep", "--sweep=a=1,2", "--jobs=0", "--", "--dry-run",
                     "show-config", "config", "get", "set", "graph", "--format=svg", "runs", "show", "x"]),
    st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=8)), max_size=6)  # argv cannot hold NUL or a lone surrogate


@settings(max_examples=60, deadline=None)
@given(ARGS)
def test_cli_parser_never_tracebacks(args: list[str]) -> None:
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "mlcube.yaml").write_text("name: x\nlocal: {command: 'python3 -c pass'}\ntasks:\n  hello:\n    parameters: {outputs: {o: out/}}\n")
        env = dict(os.environ, CUBERUN_SETTINGS=os.path.join(tmp, "s.yaml"), MLCUBE_SYSTEM_SETTINGS=os.path.join(tmp, "none"))
        # never a real run: a fuzzed command line must not start tasks
        argv = [a for a in args if a != "run"] + ["--dry-run"] if "run" in args else args
        proc = subprocess.run([sys.executable, "-m", "cuberun", *argv], cwd=tmp, env=env, capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL, check=False)
        assert "Traceback" not in proc.stderr, (argv, proc.stderr)
        assert "internal error" not in proc.stderr, (argv, proc.stderr)
        assert proc.returncode in (0, 1, 2), (argv, proc.returncode, proc.stderr)
        assert set(os.listdir(tmp)) <= {"mlcube.yaml", "s.yaml"}, "only `config set` may write (the settings file)"


RUN_ARGS = st.lists(st.one_of(
    st.sampled_from(["--task=hello", "--task=nope", "--platform=nope", "--platform=local", "--gpus=2", "--gpus=x", "-Pa=b", "-Plocal.env=current",
                     "-Prunner.env=nope", "-Pdocker..x=1", "--mount=rx", "--mount=ro", "--sweep=a=1,2", "--jobs=0", "--jobs=2", "--force", "--dry-run",
                     "--explain", "--json", "o=out2/", "o=", "o=..", "name=", "=x", "--network=none", "--memory=1g", "--cpus=x"]),
    st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=8)), max_size=5)


@settings(max_examples=20, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate])  # each example is a real run
@given(RUN_ARGS)
@example(["o=out2/", "--force"])
def test_cli_run_never_tracebacks(args: list[str]) -> None:
    """`run` itself, fuzzed: a one-line error or a real (harmless) local run, never a traceback,
    and nothing written outside the workspace (the settings file aside)."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as base:
        tmp = os.path.join(base, "cube")  # the cube one level down: `base` shows writes beside it
        os.mkdir(tmp)
        Path(tmp, "mlcube.yaml").write_text("name: x\nlocal: {command: 'python3 -c pass', env: current}\ntasks:\n"
                                            "  hello:\n    parameters: {outputs: {o: out/}}\n")
        env = dict(os.environ, CUBERUN_SETTINGS=os.path.join(base, "s.yaml"), MLCUBE_SYSTEM_SETTINGS=os.path.join(base, "none"))
        proc = subprocess.run([sys.executable, "-m", "cuberun", "run", *args], cwd=tmp, env=env, capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL, check=False)
        assert "Traceback" not in proc.stderr, (args, proc.stderr)
        assert "internal error" not in proc.stderr, (args, proc.stderr)
        assert proc.returncode in (0, 1, 2), (args, proc.returncode, proc.stderr)
        assert set(os.listdir(tmp)) <= {"mlcube.yaml", "workspace"}, (args, os.listdir(tmp))
        assert set(os.listdir(base)) == {"cube"}, (args, os.listdir(base))
