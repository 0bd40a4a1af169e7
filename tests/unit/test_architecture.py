"""The import rules of docs/architecture.md, checked on the source (every import, lazy ones too).

- the core (everything outside `cuberun.runners` and `cuberun.cli`) imports no backend: of the
  runners package only the contract (`runners.base`), the registry (`runners.registry`) and the
  factory (`runners.factory`);
- no library module imports the CLI (only `cuberun.__main__` starts it);
- the CLI uses the library through its public names (no `_private` import across modules);
- no runner imports the orchestration (`execute` and its parts `taskrun`, `incremental`, `parallel`,
  `sweeprun`; `graph`, `sweep`, `api`): what a runner needs of
  it comes through the contract (`runners.factory.make_runner` builds another runner,
  `Runner.task_graph` gives the task graph);
- processes are started in one place: programs by `cuberun.process` (it streams their output,
  forwards Ctrl-C, escalates and leaves nothing behind), a forked copy running a function by
  `cuberun.forkcall`; the two stand-alone scripts (`watchdog.py`, the charliecloud `sandbox.py`)
  start the one program they exist for.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "cuberun"
CONTRACT = {"cuberun.runners", "cuberun.runners.base", "cuberun.runners.registry", "cuberun.runners.factory"}
# the core modules that drive a run: runners are driven by them and never call back up into them
ORCHESTRATION = {"cuberun.execute", "cuberun.taskrun", "cuberun.incremental", "cuberun.parallel", "cuberun.sweeprun",
                 "cuberun.graph", "cuberun.sweep", "cuberun.api"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, text: str | None = None) -> Iterator[tuple[int, str, list[str]]]:
    """(line, imported module, names imported from it) for every import in the file (or in `text`)."""
    tree = ast.parse(path.read_text(encoding="utf-8") if text is None else text, str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [a.name for a in node.names]
            yield node.lineno, node.module, names
            for name in names:  # `from cuberun.runners import docker` imports a module
                yield node.lineno, f"{node.module}.{name}", []


def layer(module: str) -> str:
    if module.startswith("cuberun.cli") or module == "cuberun.__main__":
        return "cli"
    if module.startswith("cuberun.runners") and module not in CONTRACT:
        return "runner"
    return "core"


def is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (SRC / rel).with_suffix(".py").is_file() or (SRC / rel / "__init__.py").is_file()


def violations(planted: dict[Path, str] | None = None) -> list[str]:
    """Every broken rule in the package's source (or in `planted`: path -> source, for the tests of the checker)."""
    found = []
    files: dict[Path, str | None] = dict(planted) if planted is not None else dict.fromkeys(sorted(PACKAGE.rglob("*.py")))
    for path, text in files.items():
        me = module_name(path)
        mine = layer(me)
        for line, target, names in imports(path, text):
            if not target.startswith("cuberun") or not is_module(target):
                continue
            theirs = layer(target)
            where = f"{path.relative_to(SRC)}:{line}"
            if mine == "core" and theirs == "runner":
                found.append(f"{where}: the core imports the backend {target}")
            if mine == "runner" and target in ORCHESTRATION:
                found.append(f"{where}: a runner imports the orchestration ({target}); use the contract")
            if mine != "cli" and theirs == "cli":
                found.append(f"{where}: a library module imports the CLI ({target})")
            if mine == "cli" and theirs != "cli":
                found += [f"{where}: the CLI imports {target}.{n}, a private name" for n in names if n.startswith("_") and not n.endswith("__")]
    return found


def test_the_layers_import_as_documented() -> None:
    assert violations() == []


def test_the_rule_catches_a_core_module_importing_a_backend(tmp_path: Path) -> None:
    """The checker itself: a planted violation is found (parsing, lazy imports, from-imports)."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from cuberun.runners import docker\n    import cuberun.cli.main\n")
    targets = [t for _, t, _ in imports(bad)]
    assert "cuberun.runners.docker" in targets and "cuberun.cli.main" in targets
    assert layer("cuberun.runners.docker") == "runner" and layer("cuberun.uptodate") == "core" and layer("cuberun.runners.base") == "core"


def test_the_rule_catches_a_runner_calling_up_into_the_orchestration() -> None:
    """slurm once built its job's runner through execute.make_runner and kubeflow read the task
    graph from graph: both are found in a runner module, lazy imports included; the contract's
    factory is allowed."""
    source = ("def f():\n    from cuberun.execute import make_runner\n    from cuberun import graph\n    import cuberun.sweep\n"
              "    from cuberun.runners.factory import make_runner as ok\n")
    found = violations({PACKAGE / "runners" / "slurm" / "planted.py": source})
    assert [f.split(": ", 1)[1] for f in found] == [
        "a runner imports the orchestration (cuberun.execute); use the contract",
        "a runner imports the orchestration (cuberun.graph); use the contract",
        "a runner imports the orchestration (cuberun.sweep); use the contract",
    ]
    assert layer("cuberun.runners.slurm.planted") == "runner" and layer("cuberun.runners.factory") == "core"


def test_the_architecture_document_names_the_rules() -> None:
    text = (SRC.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    for needle in ("runners/base.py", "runners/registry.py", "runners/factory.py", "cuberun.runners", "test_architecture.py", "task_graph"):
        assert needle in text


# where a process may be started, and how (see the module doc)
STARTERS = {
    "cuberun.process": {"subprocess", "os.fork"},
    "cuberun.forkcall": {"os.fork"},
    "cuberun.watchdog": {"os.posix_spawnp"},
    "cuberun.runners.charliecloud.sandbox": {"os.execvp"},
}
_OS_STARTS = ("fork", "forkpty", "exec", "spawn", "posix_spawn", "system", "popen")


def process_starts(path: Path, text: str | None = None) -> Iterator[tuple[int, str]]:
    """(line, what) for every way of starting a process in the file: importing subprocess (or pty,
    multiprocessing), and calling os.fork/exec*/spawn*/posix_spawn*/system/popen."""
    tree = ast.parse(path.read_text(encoding="utf-8") if text is None else text, str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for mod in mods:
                if mod.split(".")[0] in ("subprocess", "pty", "multiprocessing"):
                    yield node.lineno, mod.split(".")[0]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os":
            if node.attr.startswith(_OS_STARTS):
                yield node.lineno, f"os.{node.attr}"


def start_violations(planted: dict[Path, str] | None = None) -> list[str]:
    found = []
    files: dict[Path, str | None] = dict(planted) if planted is not None else dict.fromkeys(sorted(PACKAGE.rglob("*.py")))
    for path, text in files.items():
        allowed = STARTERS.get(module_name(path), set())
        for line, what in process_starts(path, text):
            if what not in allowed:
                found.append(f"{path.relative_to(SRC)}:{line}: starts a process ({what}); use cuberun.process")
    return found


def test_processes_are_started_in_one_place() -> None:
    assert start_violations() == []


def test_the_start_rule_catches_a_planted_start() -> None:
    source = "import subprocess\nimport os\ndef f():\n    os.fork()\n    os.execvp('x', ['x'])\n    os.system('x')\n"
    found = start_violations({PACKAGE / "runners" / "planted.py": source})
    assert [f.split(": ", 1)[1] for f in found] == [
        "starts a process (subprocess); use cuberun.process",
        "starts a process (os.fork); use cuberun.process",
        "starts a process (os.execvp); use cuberun.process",
        "starts a process (os.system); use cuberun.process",
    ]
    assert start_violations({PACKAGE / "forkcall.py": "import os\nos.fork()\n"}) == []
