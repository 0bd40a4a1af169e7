from __future__ import annotations

from pathlib import Path

from cuberun.runners import dockerfile
from tests.conftest import write_tree


def test_entrypoint_copy_workdir_and_pip(tmp_path: Path) -> None:
    write_tree(tmp_path, {
        "Dockerfile": (
            "ARG BASE_IMAGE=python:3.11-slim\nFROM ${BASE_IMAGE} AS base\nRUN echo first stage\n"
            "FROM base\n# comment\nCOPY requirements.txt /workspace/requirements.txt\n"
            "RUN pip3 install --no-cache-dir -r /workspace/requirements.txt && \\\n    pip install six==1.16 && apt-get update\n"
            "COPY src/ /app/\nCOPY --chown=1:1 run.sh /usr/local/bin/run\nWORKDIR /app\n"
            'LABEL a="1" b=two\nENTRYPOINT ["python3", "/app/main.py"]\n'
        ),
        "requirements.txt": "numpy\n",
        "src/main.py": "",
        "run.sh": "",
    })
    df = dockerfile.parse(tmp_path / "Dockerfile", tmp_path)
    assert df.base_image == "base"
    assert df.entrypoint == ["python3", "/app/main.py"]
    assert df.workdir == "/app"
    assert df.to_host("/app/main.py") == (tmp_path / "src" / "main.py").resolve()
    assert df.to_host("main.py") == (tmp_path / "src" / "main.py").resolve()
    assert df.to_host("/usr/local/bin/run") == (tmp_path / "run.sh").resolve()
    assert df.to_host("/etc/passwd") is None
    assert df.requirement_files == ["/workspace/requirements.txt"]
    assert df.pip_packages == ["six==1.16"]
    assert df.other_runs == ["apt-get update"]
    assert df.labels == {"a": "1", "b": "two"}


def test_copy_dot_and_shell_form(tmp_path: Path) -> None:
    write_tree(tmp_path, {"Dockerfile": "FROM x\nCOPY . /workspace/\nENTRYPOINT python3 /workspace/app.py --flag\n", "app.py": ""})
    df = dockerfile.parse(tmp_path / "Dockerfile", tmp_path)
    assert df.entrypoint == ["python3", "/workspace/app.py", "--flag"]
    assert df.entrypoint_shell_form
    assert df.to_host("/workspace/app.py") == (tmp_path / "app.py").resolve()
