"""Security properties: no shell anywhere, literal arguments, redacted secrets, contained outputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.conftest import CLI, REPO, write_tree

SRC = REPO / "src" / "cuberun"
FORBIDDEN = [r"shell\s*=\s*True", r"\bos\.system\(", r"\bos\.popen\(", r"\bos\.exec\w*\(", r"\bos\.spawn\w*\(", r"\bpty\.spawn\(",
             r"\bcommands\.getoutput\("]
# the one exec: charliecloud's sandbox script is a process of its own (not cuberun) that becomes
# ch-run once its namespaces are made, with the argument list it was given (no shell)
ALLOWED = {("src/cuberun/runners/charliecloud/sandbox.py", "os.execvp(command[0], command)")}


def test_no_shell_strings_anywhere_in_the_source() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for pattern in FORBIDDEN:
            for m in re.finditer(pattern, text):
                line = text[text.rfind(chr(10), 0, m.start()) + 1 : text.find(chr(10), m.start())].strip()
                if (str(path.relative_to(REPO)), line) in ALLOWED:
                    continue
                offenders.append(f"{path.relative_to(REPO)}:{text[: m.start()].count(chr(10)) + 1}: {m.group(0)}")
    assert offenders == []


def test_only_process_py_starts_subprocesses() -> None:
    users = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if re.search(r"^\s*(import subprocess|from subprocess )", p.read_text(), re.M))
    assert users == ["process.py"]


SHELLISH = "a; rm -rf x $(touch pwned) `touch pwned2` | cat > y && --privileged"


def test_shell_like_values_are_passed_literally(cli: CLI, tmp_path: Path) -> None:
    write_tree(tmp_path, {
        "mlcube.yaml": ("name: s\nlocal: {command: python3 t.py, env: current, env_vars: {API_TOKEN: s3cr3t-value, PLAIN: visible}}\n"
                        "tasks:\n  t:\n    parameters:\n      inputs: {name: {type: file, default: in.txt}}\n      outputs: {out: {type: file, default: out.json}}\n"),
        "t.py": "import json, os, sys\njson.dump(sys.argv[1:], open(sys.argv[-1].split('=', 1)[1], 'w'))\nprint('token seen:', len(os.environ['API_TOKEN']))\n",
        f"workspace/{SHELLISH}": "data",
    })
    got = cli("run", f"name={SHELLISH}")
    assert got.returncode == 0, got.stderr
    argv = json.loads((tmp_path / "workspace" / "out.json").read_text())
    assert argv == ["t", f"--name={tmp_path}/workspace/{SHELLISH}", f"--out={tmp_path}/workspace/out.json"]
    assert not list(tmp_path.rglob("pwned*"))
    record = json.loads(next((tmp_path / "workspace" / ".cuberun" / "runs").glob("*/record.json")).read_text())
    assert record["steps"][0]["env"]["API_TOKEN"] == "***" and record["steps"][0]["env"]["PLAIN"] == "visible"
    every = "\n".join(p.read_text(errors="replace") for p in (tmp_path / "workspace" / ".cuberun").rglob("*") if p.is_file())
    assert "s3cr3t-value" not in every
    dry = cli("run", f"name={SHELLISH}", "--dry-run")
    assert "API_TOKEN='***'" in dry.stdout and "s3cr3t-value" not in dry.stdout


def test_outputs_cannot_escape_the_workspace(cli: CLI, tmp_path: Path) -> None:
    write_tree(tmp_path, {"mlcube.yaml": "name: s\nlocal: {command: python3 t.py}\ntasks:\n  t:\n    parameters:\n      outputs: {out: out/}\n"})
    got = cli("run", "out=../../etc/evil/")
    assert got.returncode == 2 and "outside the workspace" in got.stderr
    (tmp_path / "workspace").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "workspace" / "link").symlink_to(tmp_path / "elsewhere")
    got = cli("run", "out=link/x/")
    assert got.returncode == 2 and "outside the workspace" in got.stderr
    assert not (tmp_path / "elsewhere" / "x").exists()
