"""The import rules of docs/architecture.md, checked on the source (every import, lazy ones too).

- the core (everything outside `cuberun.runners` and `cuberun.cli`) imports no backend: of the
  runners package only the contract (`runners.base`) and the registry (`runners.registry`);
- no library module imports the CLI (only `cuberun.__main__` starts it);
- the CLI uses the library through its public names (no `_private` import across modules).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "cuberun"
CONTRACT = {"cuberun.runners", "cuberun.runners.base", "cuberun.runners.registry"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line, imported module, names imported from it) for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
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


def violations() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = module_name(path)
        mine = layer(me)
        for line, target, names in imports(path):
            if not target.startswith("cuberun") or not is_module(target):
                continue
            theirs = layer(target)
            where = f"{path.relative_to(SRC)}:{line}"
            if mine == "core" and theirs == "runner":
                found.append(f"{where}: the core imports the backend {target}")
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


def test_the_architecture_document_names_the_rules() -> None:
    text = (SRC.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    for needle in ("runners/base.py", "runners/registry.py", "cuberun.runners", "test_architecture.py"):
        assert needle in text
