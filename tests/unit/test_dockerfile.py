"""What the local runner derives from a Dockerfile: one row per Dockerfile shape.

Each row is a Dockerfile and the files of its build context; the test loads a cube that has no
`local:` section and pins the host command, the working directory, the requirement files and
packages that become the managed env, and the system packages that never do. `$C` stands for the
build context. Rows are the shapes public cubes use (mlcube_examples, medperf) and the Dockerfile
syntax around them: continuations, `&&` chains, heredocs, ENV/WORKDIR between RUN lines, several
build stages, COPY --from, ADD, wildcards.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from cuberun import dockerfile
from cuberun.errors import UsageError
from cuberun.runners.base import RunOptions
from cuberun.runners.local import LocalRunner
from cuberun.spec import load_cube
from tests.conftest import write_tree

CUBE = "name: shapes\ndocker: {image: x/shapes:1}\ntasks:\n  run:\n    parameters:\n      outputs: {out: out/}\n"
FILES = {"requirements.txt": "six\n", "app.py": "", "src/main.py": "", "src/util.py": "", "mlcube.py": "", "run.sh": "", "conf/a.yaml": ""}

# (id, Dockerfile, expected: command, workdir, requirements, packages, system, env); None = not checked
ROWS: list[tuple[str, str, dict[str, Any]]] = [
    ("exec-entrypoint-abs", 'FROM python:3.9\nCOPY app.py /workspace/app.py\nENTRYPOINT ["python3", "/workspace/app.py"]\n',
     {"command": ["python3", "$C/app.py"], "workdir": "$C"}),
    ("shell-entrypoint", "FROM python:3.9\nCOPY . /workspace/\nENTRYPOINT python3 /workspace/app.py --flag\n",
     {"command": ["python3", "$C/app.py", "--flag"]}),
    ("cmd-only", 'FROM python:3.9\nCOPY . /app\nWORKDIR /app\nCMD ["python", "app.py"]\n', {"command": ["python", "app.py"], "workdir": "$C"}),
    ("entrypoint-resets-cmd", 'FROM python:3.9\nCOPY . /app\nCMD ["python", "x.py"]\nENTRYPOINT ["python3", "/app/app.py"]\n',
     {"command": ["python3", "$C/app.py"]}),
    ("workdir-relative-script", 'FROM python:3.9\nWORKDIR /project\nCOPY . .\nENTRYPOINT ["python3", "mlcube.py"]\n',
     {"command": ["python3", "mlcube.py"], "workdir": "$C"}),
    ("medperf-evaluator", "FROM ubuntu:18.04\nRUN apt-get update && \\\n    apt-get install -y --no-install-recommends \\\n    software-properties-common \\\n"
     "    curl && \\\n    rm -rf /var/lib/apt/lists/*\nRUN add-apt-repository ppa:deadsnakes/ppa -y && apt-get update\n"
     "RUN apt-get install python3.8 python3-pip -y\nCOPY ./requirements.txt project/requirements.txt \nRUN pip3 install --upgrade pip\n"
     "RUN pip3 install --default-timeout=10000 --no-cache-dir -r project/requirements.txt\nENV LANG C.UTF-8\nCOPY . /project\n"
     'WORKDIR /project\nENTRYPOINT ["python3", "mlcube.py"]\n',
     {"command": ["python3", "mlcube.py"], "workdir": "$C", "requirements": ["requirements.txt"], "packages": ["pip"],
      "system": ["software-properties-common", "curl", "python3.8", "python3-pip"], "env": {"LANG": "C.UTF-8"}, "python": "3.6"}),
    ("apt-and-pip-in-one-run", "FROM ubuntu:20.04\nCOPY requirements.txt /r.txt\nRUN apt-get update && apt-get install -y python3-pip && pip3 install -r /r.txt\n"
     'COPY app.py /app.py\nENTRYPOINT ["python3", "/app.py"]\n',
     {"requirements": ["requirements.txt"], "packages": [], "system": ["python3-pip"], "command": ["python3", "$C/app.py"], "python": "3.8"}),
    ("python-m-pip", 'FROM python:3.8\nCOPY . /w\nRUN python3 -m pip install --no-cache-dir numpy==1.19.5 "pandas<2"\nENTRYPOINT ["python3", "/w/app.py"]\n',
     {"packages": ["numpy==1.19.5", "pandas<2"], "python": "3.8"}),
    ("python-u-m-pip", "FROM python:3.8\nCOPY . /w\nRUN /usr/bin/python3 -u -m pip install six\nENTRYPOINT [\"python3\", \"/w/app.py\"]\n",
     {"packages": ["six"]}),
    ("pip-semicolons-and-or", "FROM python:3.8\nCOPY . /w\nRUN pip install a==1 ; pip install b || pip install c\nENTRYPOINT [\"python3\", \"/w/app.py\"]\n",
     {"packages": ["a==1", "b", "c"]}),
    ("requirements-against-workdir-of-that-run", "FROM python:3.9\nWORKDIR /opt\nCOPY requirements.txt proj/requirements.txt\n"
     "RUN pip install -r proj/requirements.txt\nWORKDIR /srv\nCOPY . .\nENTRYPOINT [\"python3\", \"app.py\"]\n",
     {"requirements": ["requirements.txt"], "workdir": "$C"}),
    ("requirements-via-cd", "FROM python:3.9\nCOPY . /src\nRUN cd /src && pip install -r requirements.txt\nENTRYPOINT [\"python3\", \"/src/app.py\"]\n",
     {"requirements": ["requirements.txt"]}),
    ("requirements-never-copied", "FROM python:3.9\nRUN pip install -r /nowhere/requirements.txt\nCOPY app.py /app.py\nENTRYPOINT [\"python3\", \"/app.py\"]\n",
     {"requirements": [], "packages": []}),
    ("requirement-equals-form", "FROM python:3.9\nCOPY requirements.txt /r/req.txt\nRUN pip install --requirement=/r/req.txt\nCOPY app.py /app.py\n"
     'ENTRYPOINT ["python3", "/app.py"]\n', {"requirements": ["requirements.txt"]}),
    ("pip-with-index-options", "FROM python:3.9\nCOPY . /w\nRUN pip install --index-url https://example.invalid/simple --extra-index-url https://x.invalid six\n"
     'ENTRYPOINT ["python3", "/w/app.py"]\n', {"packages": ["six"], "pip_options": ["--index-url", "https://example.invalid/simple",
                                                                                  "--extra-index-url", "https://x.invalid"]}),
    ("pip-find-links-value-not-a-package", "FROM python:3.9\nCOPY . /w\nRUN pip install -f https://download.invalid/torch_stable.html torch==1.8.0+cpu\n"
     'ENTRYPOINT ["python3", "/w/app.py"]\n', {"packages": ["torch==1.8.0+cpu"]}),
    ("pip-local-project", 'FROM python:3.9\nCOPY . /src\nWORKDIR /src\nRUN pip install .\nENTRYPOINT ["python3", "app.py"]\n',
     {"packages": ["$C"], "workdir": "$C"}),
    ("pip-editable-project", 'FROM python:3.9\nCOPY . /src\nRUN pip install -e /src\nENTRYPOINT ["python3", "/src/app.py"]\n',
     {"packages": [], "editables": ["$C"]}),
    ("pip-uninstall-is-not-install", 'FROM python:3.9\nCOPY . /w\nRUN pip uninstall -y six && pip list\nENTRYPOINT ["python3", "/w/app.py"]\n',
     {"packages": [], "requirements": []}),
    ("get-pip-is-not-pip", "FROM ubuntu:20.04\nRUN curl -fSsL -O https://bootstrap.invalid/get-pip.py && python3 get-pip.py && rm get-pip.py\n"
     'COPY app.py /workspace/app.py\nENTRYPOINT ["python3", "/workspace/app.py"]\n', {"packages": [], "system": []}),
    ("apt-python-never-pip", "FROM ubuntu:18.04\nRUN apt-get install python3-pip python3.8 -y\nCOPY app.py /a.py\nENTRYPOINT [\"python3\", \"/a.py\"]\n",
     {"packages": [], "system": ["python3-pip", "python3.8"]}),
    ("apt-without-get", "FROM debian:bullseye\nRUN apt -y full-upgrade && apt install -y git nano\nCOPY app.py /a.py\nENTRYPOINT [\"python3\", \"/a.py\"]\n",
     {"system": ["git", "nano"], "python": "3.9"}),
    ("yum-dnf-apk", "FROM centos:7\nRUN yum install -y gcc && dnf -y install make && apk add --no-cache bash\nCOPY app.py /a.py\n"
     'ENTRYPOINT ["python3", "/a.py"]\n', {"system": ["gcc", "make", "bash"], "packages": []}),
    ("conda-is-system", "FROM continuumio/miniconda3\nRUN conda install -y -c conda-forge numpy && pip install six\nCOPY app.py /a.py\n"
     'ENTRYPOINT ["python", "/a.py"]\n', {"system": ["numpy"], "packages": ["six"], "command": ["python", "$C/app.py"]}),
    ("sudo-and-env-prefix", "FROM python:3.9\nRUN sudo -E apt-get install -y curl && PIP_NO_CACHE_DIR=1 pip install six\nCOPY app.py /a.py\n"
     'ENTRYPOINT ["python3", "/a.py"]\n', {"system": ["curl"], "packages": ["six"]}),
    ("exec-form-run", 'FROM python:3.9\nRUN ["pip", "install", "six"]\nCOPY app.py /a.py\nENTRYPOINT ["python3", "/a.py"]\n', {"packages": ["six"]}),
    ("exec-form-sh-c-run", 'FROM python:3.9\nRUN ["/bin/sh", "-c", "apt-get install -y curl && pip install six"]\nCOPY app.py /a.py\n'
     'ENTRYPOINT ["python3", "/a.py"]\n', {"packages": ["six"], "system": ["curl"]}),
    ("heredoc-run", "# syntax=docker/dockerfile:1\nFROM python:3.9\nRUN <<EOF\napt-get update\napt-get install -y curl\npip install six==1.16.0\nEOF\n"
     'COPY app.py /a.py\nENTRYPOINT ["python3", "/a.py"]\n', {"packages": ["six==1.16.0"], "system": ["curl"]}),
    ("heredoc-run-with-shell", "FROM python:3.9\nRUN <<-END bash\n\tset -e\n\tpip install tqdm\nEND\nCOPY app.py /a.py\nENTRYPOINT [\"python3\", \"/a.py\"]\n",
     {"packages": ["tqdm"]}),
    ("heredoc-copy-inline-file", "FROM python:3.9\nCOPY <<EOF /etc/app.conf\nkey=value\nEOF\nCOPY app.py /a.py\nENTRYPOINT [\"python3\", \"/a.py\"]\n",
     {"command": ["python3", "$C/app.py"], "notes_have": "inline document"}),
    ("env-evolves-into-workdir", "FROM python:3.9\nENV APP=/opt/app\nWORKDIR $APP\nCOPY . .\nENV APP_MODE=prod\nENTRYPOINT [\"python3\", \"app.py\"]\n",
     {"workdir": "$C", "env": {"APP": "$C", "APP_MODE": "prod"}}),
    ("env-legacy-and-multi", 'FROM python:3.9\nENV LANG C.UTF-8\nENV A=1 B="two words"\nCOPY app.py /a.py\nENTRYPOINT ["python3", "/a.py"]\n',
     {"env": {"LANG": "C.UTF-8", "A": "1", "B": "two words"}}),
    ("env-path-lists-mapped", "FROM python:3.9\nCOPY src /opt/src\nENV PYTHONPATH=/opt/src:/usr/lib/x PATH=/opt/venv/bin:$PATH\nCOPY app.py /a.py\n"
     'ENTRYPOINT ["python3", "/a.py"]\n', {"env": {"PYTHONPATH": "$C/src"}}),
    ("env-path-to-copied-file", 'FROM python:3.9\nCOPY conf /cfg\nENV CONFIG=/cfg/a.yaml HOME=/root\nCOPY app.py /a.py\nENTRYPOINT ["python3", "/a.py"]\n',
     {"env": {"CONFIG": "$C/conf/a.yaml"}}),
    ("arg-before-from", "ARG BASE=python:3.7-slim\nFROM ${BASE}\nARG DIR=/srv\nWORKDIR ${DIR}\nCOPY . .\nENTRYPOINT [\"python3\", \"app.py\"]\n",
     {"workdir": "$C", "python": "3.7"}),
    ("arg-default-expansion", "FROM python:3.9\nARG SUB\nWORKDIR /base/${SUB:-code}\nCOPY . .\nENTRYPOINT [\"python3\", \"app.py\"]\n", {"workdir": "$C"}),
    ("multi-stage-final", "FROM python:3.11 AS build\nCOPY requirements.txt /r.txt\nRUN pip wheel -r /r.txt -w /wheels\nFROM python:3.9-slim\n"
     "COPY --from=build /wheels /wheels\nRUN pip install six\nCOPY app.py /app/app.py\nENTRYPOINT [\"python3\", \"/app/app.py\"]\n",
     {"packages": ["six"], "requirements": [], "python": "3.9", "notes_have": "--from=build"}),
    ("multi-stage-from-named-stage", "FROM python:3.8 AS base\nRUN pip install six\nFROM base\nCOPY app.py /a.py\nENTRYPOINT [\"python3\", \"/a.py\"]\n",
     {"packages": [], "python": "3.8"}),
    ("copy-several-sources", 'FROM python:3.9\nCOPY app.py mlcube.py /code/\nENTRYPOINT ["python3", "/code/mlcube.py"]\n',
     {"command": ["python3", "$C/mlcube.py"]}),
    ("copy-directory-contents", 'FROM python:3.9\nCOPY src/ /app/\nENTRYPOINT ["python3", "/app/main.py"]\n', {"command": ["python3", "$C/src/main.py"]}),
    ("copy-chown-chmod", 'FROM python:3.9\nCOPY --chown=1000:1000 --chmod=755 run.sh /usr/local/bin/run\nENTRYPOINT ["/usr/local/bin/run"]\n',
     {"command": ["$C/run.sh"]}),
    ("copy-wildcard", 'FROM python:3.9\nCOPY src/*.py /app/\nENTRYPOINT ["python3", "/app/util.py"]\n', {"command": ["python3", "$C/src/util.py"]}),
    ("add-local-file", 'FROM ubuntu:20.04\nADD mlcube.py /\nENTRYPOINT ["/usr/bin/python3", "/mlcube.py"]\n', {"command": ["python3", "$C/mlcube.py"]}),
    ("add-url-noted", 'FROM python:3.9\nADD https://example.invalid/x.py /x.py\nCOPY app.py /a.py\nENTRYPOINT ["python3", "/a.py"]\n',
     {"notes_have": "downloads at build time"}),
    ("later-copy-wins", 'FROM python:3.9\nCOPY src/main.py /app/main.py\nCOPY app.py /app/main.py\nENTRYPOINT ["python3", "/app/main.py"]\n',
     {"command": ["python3", "$C/app.py"]}),
    ("copy-dot-dot", 'FROM python:3.6-slim-buster\nCOPY requirements.txt requirements.txt\nRUN pip install -r requirements.txt\nCOPY . .\n'
     'ENTRYPOINT ["python", "app.py"]\n', {"command": ["python", "app.py"], "workdir": "$C", "requirements": ["requirements.txt"], "python": "3.6"}),
    ("no-workdir-absolute-entry", 'FROM python:3.9.16-slim\nCOPY ./requirements.txt /mlcube_project/requirements.txt\n'
     "RUN pip3 install --no-cache-dir -r /mlcube_project/requirements.txt\nENV LANG C.UTF-8\nCOPY . /mlcube_project\n"
     'ENTRYPOINT ["python3", "/mlcube_project/mlcube.py"]\n',
     {"command": ["python3", "$C/mlcube.py"], "workdir": "$C", "requirements": ["requirements.txt"], "python": "3.9"}),
    ("continuation-comments-inside", "FROM python:3.9\nRUN pip install \\\n# the first one\n    six \\\n\n    tqdm\nCOPY app.py /a.py\n"
     'ENTRYPOINT ["python3", "/a.py"]\n', {"packages": ["six", "tqdm"]}),
    ("escape-directive", "# escape=`\nFROM python:3.9\nRUN pip install `\n    six\nCOPY app.py /a.py\nENTRYPOINT [\"python3\", \"/a.py\"]\n",
     {"packages": ["six"]}),
    ("quoted-specs", "FROM python:3.9\nRUN pip install 'numpy>=1.20,<2' \"typer[all]==0.9.0\"\nCOPY app.py /a.py\nENTRYPOINT [\"python3\", \"/a.py\"]\n",
     {"packages": ["numpy>=1.20,<2", "typer[all]==0.9.0"]}),
    ("uv-pip", "FROM python:3.11\nRUN uv pip install --system six\nCOPY app.py /a.py\nENTRYPOINT [\"python3\", \"/a.py\"]\n", {"packages": ["six"]}),
    ("nvcr-base-python", "FROM nvcr.io/nvidia/pytorch:20.08-py3\nWORKDIR /mlcube_project\nCOPY ./requirements.txt ./requirements.txt\n"
     "RUN pip3 install -r requirements.txt\nCOPY ./ /mlcube_project\nENTRYPOINT [ \"python3\", \"/mlcube_project/mlcube.py\"]\n",
     {"requirements": ["requirements.txt"], "command": ["python3", "$C/mlcube.py"], "workdir": "$C"}),
    ("mlbox-add-glob-root", "FROM ubuntu:20.04\nRUN apt update\nRUN apt-get -y install python3\nADD internal_* /\n"
     'ENTRYPOINT ["/usr/bin/python3", "/internal_main.py"]\n', {"files": {"internal_main.py": "", "internal_task.py": ""},
                                                                    "command": ["python3", "$C/internal_main.py"], "system": ["python3"]}),
    ("host-program-kept", 'FROM python:3.9\nCOPY run.sh /run.sh\nENTRYPOINT ["/bin/sh", "/run.sh"]\n', {"command": ["/bin/sh", "$C/run.sh"]}),
    ("unmappable-entrypoint", 'FROM python:3.9\nCOPY app.py /a.py\nENTRYPOINT ["python3", "/opt/app/x.py"]\n',
     {"error": "ENTRYPOINT at Dockerfile:3 names /opt/app/x.py, a path inside the image that no COPY line of Dockerfile provides"}),
    ("unmappable-relative-script", 'FROM python:3.9\nWORKDIR /app\nENTRYPOINT ["python3", "main.py"]\n',
     {"error": "ENTRYPOINT at Dockerfile:3 runs main.py (in WORKDIR /app), which no COPY line of Dockerfile provides"}),
    ("no-entrypoint-no-cmd", "FROM python:3.9\nCOPY . /w\n", {"error": "has no ENTRYPOINT or CMD"}),
]


def derive(tmp_path: Path, text: str, extra: dict[str, str] | None = None) -> LocalRunner:
    write_tree(tmp_path, {"mlcube.yaml": CUBE, "Dockerfile": text, **FILES, **(extra or {})})
    cube = load_cube(tmp_path)
    return LocalRunner(cube, {"env": "managed", "packages": []}, "local", RunOptions())


def sub(value: Any, ctx: Path) -> Any:
    if isinstance(value, str):
        return value.replace("$C", str(ctx.resolve()))
    if isinstance(value, list):
        return [sub(v, ctx) for v in value]
    if isinstance(value, dict):
        return {k: sub(v, ctx) for k, v in value.items()}
    return value


def test_the_table_has_enough_shapes() -> None:
    assert len(ROWS) >= 40
    assert len({r[0] for r in ROWS}) == len(ROWS)


@pytest.mark.parametrize(("text", "expected"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_derived_launch(tmp_path: Path, text: str, expected: dict[str, Any]) -> None:
    runner = derive(tmp_path, text, expected.get("files"))
    ctx = tmp_path.resolve()
    exp = sub(expected, ctx)
    launch = runner.launch()
    if "error" in exp:
        problems = runner.launch_problems(["run"])
        assert len(problems) == 1 and exp["error"] in problems[0], problems
        with pytest.raises(UsageError) as err:
            runner.run_steps(_resolved(runner))
        assert exp["error"] in err.value.lines()[0]
        return
    assert runner.launch_problems(["run"]) == []
    if "command" in exp:
        assert launch.command == exp["command"]
    if "workdir" in exp:
        assert launch.workdir.resolve() == Path(exp["workdir"])
    env = launch.env
    if "requirements" in exp:
        assert [str(p.resolve()) for p in (env.requirement_files if env else ())] == [str(ctx / r) for r in expected["requirements"]]
    if "packages" in exp:
        assert list(env.packages if env else ()) == exp["packages"]
    if "editables" in exp:
        assert list(env.editables if env else ()) == exp["editables"]
    if "pip_options" in exp:
        assert list(env.pip_options if env else ()) == exp["pip_options"]
    if "system" in exp:
        assert launch.dockerfile is not None and launch.dockerfile.system_packages == exp["system"]
        assert (len(launch.warnings) == 1) == bool(exp["system"])  # system packages: one warning
    if "env" in exp:
        assert launch.env_vars == exp["env"]
    if "python" in exp:
        assert launch.image_python == exp["python"]
    if "notes_have" in exp:
        assert any(exp["notes_have"] in n for n in launch.notes), launch.notes
    if env is not None:  # nothing that is not a pip requirement ever reaches pip
        argv = env.pip_install()
        for pkg in launch.dockerfile.system_packages if launch.dockerfile else []:
            assert pkg not in argv


def _resolved(runner: LocalRunner) -> Any:
    from cuberun.resolve import resolve_task

    return resolve_task(runner.cube, "run")


def test_the_run_step_uses_the_managed_env_and_the_image_env(tmp_path: Path) -> None:
    runner = derive(tmp_path, "FROM python:3.9\nENV LANG C.UTF-8\nCOPY . /w\nRUN pip install six\nENTRYPOINT [\"python3\", \"/w/app.py\"]\n")
    [step] = runner.run_steps(_resolved(runner))
    env = runner.launch().env
    assert env is not None
    assert step.argv[:2] == (str(env.bin_dir() / "python"), str(tmp_path.resolve() / "app.py"))
    assert step.argv[2:] == ("run", f"--out={tmp_path / 'workspace' / 'out'}")
    assert step.env["LANG"] == "C.UTF-8" and step.env["VIRTUAL_ENV"] == str(env.path())


def test_task_entrypoint_paths_are_mapped(tmp_path: Path) -> None:
    cube = CUBE.replace("  run:\n", "  run:\n    entrypoint: python3 /workspace/mlcube.py evaluate\n")
    write_tree(tmp_path, {"mlcube.yaml": cube, "Dockerfile": "FROM python:3.9\nCOPY . /workspace\n", **FILES})
    runner = LocalRunner(load_cube(tmp_path), {"env": "current"}, "local", RunOptions())
    [step] = runner.run_steps(_resolved(runner))
    assert step.argv == (sys.executable, str(tmp_path.resolve() / "mlcube.py"), "evaluate", f"--out={tmp_path / 'workspace' / 'out'}")


def test_unmappable_task_entrypoint_is_one_line_before_anything_runs(tmp_path: Path) -> None:
    cube = CUBE.replace("  run:\n", "  run:\n    entrypoint: python3 /opt/app/x.py\n")
    write_tree(tmp_path, {"mlcube.yaml": cube, "Dockerfile": "FROM python:3.9\nCOPY . /workspace\n", **FILES})
    runner = LocalRunner(load_cube(tmp_path), {"env": "current"}, "local", RunOptions())
    with pytest.raises(UsageError) as err:
        runner.run_steps(_resolved(runner))
    assert err.value.lines() == [
        "task 'run' entrypoint names /opt/app/x.py, a path inside the image that no COPY line of Dockerfile provides. "
        "Hint: run this task with --platform=docker, or give it a host command with -Plocal.command=..."
    ]


def test_shell_commands_split_like_a_shell() -> None:
    assert dockerfile.shell_commands("a 'b && c' && d; e | f || (g)") == [["a", "b && c"], ["d"], ["e"], ["f"], ["g"]]
    assert dockerfile.shell_commands("pip install x # a comment\n") == [["pip", "install", "x"]]


def test_base_python_of_common_images() -> None:
    assert dockerfile.base_python("python:3.9.16-slim") == "3.9"
    assert dockerfile.base_python("docker.io/library/python:3.6-slim-buster") == "3.6"
    assert dockerfile.base_python("ubuntu:18.04") == "3.6"
    assert dockerfile.base_python("tensorflow/tensorflow:2.3.0-py37") == "3.7"
    assert dockerfile.base_python("alpine:3.19") is None and dockerfile.base_python(None) is None


def test_oversized_or_special_files_are_refused(tmp_path: Path) -> None:
    big = tmp_path / "Dockerfile"
    big.write_bytes(b"#" * (dockerfile.MAX_BYTES + 10))
    with pytest.raises(OSError):
        dockerfile.parse(big, tmp_path)
    with pytest.raises(OSError):
        dockerfile.parse(tmp_path, tmp_path)
