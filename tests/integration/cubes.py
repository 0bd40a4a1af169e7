"""Builders of cubes for the local runner's integration tests.

The third-party-style cubes are written the way the public MLCommons and MedPerf cubes are
(contract doc, section 9): no `local:` section, an image contract expressed only through a
Dockerfile (ENTRYPOINT, WORKDIR, COPY, `pip install -r`), `"null"` defaults, task-level
entrypoints, untyped parameters. The local runner must run them unmodified.

The other builders (`tool_cube`, `managed_env_cube`) use our own `local:` section.
Every builder returns the directory that holds `mlcube.yaml`; `volumes_cube` (the batch runners'
container_config.yaml tests) the one that holds `container_config.yaml`.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

# The requirements of every Dockerfile-only cube here: one small package, one requirement set,
# so the session-shared env cache builds a single managed env for all of them.
SHARED_REQUIREMENTS = "six\n"


def write(root: Path, files: dict[str, str], executable: tuple[str, ...] = ()) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        if rel in executable:
            path.chmod(0o755)
    return root


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def volumes_cube(dest: Path, name: str, image: str, run_args: dict[str, Any]) -> Path:
    """A container_config.yaml cube of one task, copy (`run_args`): a directory and a file input
    (in the workspace), a directory and a file output, each at its MedPerf mount path."""
    (dest / "workspace" / "data_path").mkdir(parents=True)
    (dest / "workspace" / "data_path" / "a.txt").write_text("alpha\n")
    (dest / "workspace" / "data_path" / "b.txt").write_text("beta\n")
    (dest / "workspace" / "parameters_file.yaml").write_text("min_length: 2\n")
    config = {
        "name": name,
        "container_type": "DockerImage",
        "image": image,
        "tasks": {"copy": {
            "run_args": run_args,
            "input_volumes": {"data_path": {"mount_path": "/mlcommons/volumes/raw_data", "type": "directory"},
                              "parameters_file": {"mount_path": "/mlcommons/volumes/parameters/parameters_file.yaml", "type": "file"}},
            "output_volumes": {"output_path": {"mount_path": "/mlcommons/volumes/data", "type": "directory"},
                               "report_file": {"mount_path": "/mlcommons/volumes/report/report.yaml", "type": "file"}},
        }},
    }
    (dest / "container_config.yaml").write_text(json.dumps(config, indent=1))
    return dest


# --------------------------------------------------------------------------------------------
# (a) MedPerf-style: a Typer-like CLI app behind the image ENTRYPOINT, chained tasks
# --------------------------------------------------------------------------------------------

MEDPERF_YAML = dedent(
    """
    name: medperf_chain
    description: MedPerf-style data preparator, model and evaluator in one app
    authors:
     - {name: "MLCommons Medical Working Group"}

    platform:
      accelerator_count: 0

    docker:
      # Image name
      image: mlcommons/medperf-chain:0.0.1
      # Docker build context relative to $MLCUBE_ROOT. Default is `build`.
      build_context: "."
      # Docker file name within docker build context, default is `Dockerfile`.
      build_file: "Dockerfile"

    tasks:
      prepare:
        parameters:
          inputs:
            data_path: input_data/
            labels_path: input_labels/
            parameters_file: parameters.yaml
          outputs:
            output_path: data/
            output_labels_path: labels/
      infer:
        parameters:
          inputs:
            data_path: data/
            parameters_file: parameters.yaml
          outputs:
            output_path: {type: directory, default: predictions}
      evaluate:
        parameters:
          inputs:
            predictions: predictions/
            labels: labels/
            parameters_file: parameters.yaml
          outputs:
            output_path: {type: file, default: results.yaml}
    """
)

MEDPERF_DOCKERFILE = dedent(
    """
    FROM python:3.9.16-slim

    RUN apt-get update && apt-get install -y --no-install-recommends gcc && rm -rf /var/lib/apt/lists/*

    COPY ./requirements.txt /mlcube_project/requirements.txt
    RUN pip3 install --no-cache-dir -r /mlcube_project/requirements.txt

    ENV LANG C.UTF-8

    COPY . /mlcube_project

    WORKDIR /mlcube_project

    ENTRYPOINT ["python3", "/mlcube_project/mlcube.py"]
    """
)

# The app dispatches on the task name like a Typer app with one command per task. It imports
# `six` (installed from requirements.txt through the Dockerfile's pip step) and, like several
# public wrappers, runs the model as a subprocess whose exit code it ignores.
MEDPERF_APP = dedent(
    '''
    """MLCube entrypoint (Typer-like: one command per task, options --name=value)."""
    import argparse
    import json
    import subprocess
    import sys
    from pathlib import Path

    import six  # noqa: F401  (installed by the Dockerfile's pip step)


    def prepare(data_path, labels_path, parameters_file, output_path, output_labels_path):
        for case in sorted(Path(data_path).glob("*.txt")):
            numbers = [int(tok) for tok in case.read_text().split()]
            (Path(output_path) / (case.stem + ".json")).write_text(json.dumps(numbers))
        labels = (Path(labels_path) / "labels.json").read_text()
        (Path(output_labels_path) / "labels.json").write_text(labels)
        print(f"prepared {len(list(Path(output_path).glob('*.json')))} cases")


    def infer(data_path, parameters_file, output_path):
        # the wrapper ignores the model's exit code, as several public cubes do
        subprocess.run([sys.executable, "model.py", data_path, output_path])


    def evaluate(predictions, labels, parameters_file, output_path):
        preds = json.loads((Path(predictions) / "predictions.json").read_text())
        truth = json.loads((Path(labels) / "labels.json").read_text())
        hits = sum(1 for case, value in truth.items() if preds.get(case) == value)
        Path(output_path).write_text(f"accuracy: {hits / len(truth)}\\ncases: {len(truth)}\\n")
        print(f"evaluated {len(truth)} cases")


    COMMANDS = {
        "prepare": (prepare, ["data_path", "labels_path", "parameters_file", "output_path", "output_labels_path"]),
        "infer": (infer, ["data_path", "parameters_file", "output_path"]),
        "evaluate": (evaluate, ["predictions", "labels", "parameters_file", "output_path"]),
    }


    def main():
        parser = argparse.ArgumentParser(prog="mlcube.py")
        sub = parser.add_subparsers(dest="command", required=True)
        for name, (_, options) in COMMANDS.items():
            command = sub.add_parser(name)
            for option in options:
                command.add_argument(f"--{option}", required=True)
        args = vars(parser.parse_args())
        func, _ = COMMANDS[args.pop("command")]
        func(**args)


    if __name__ == "__main__":
        main()
    '''
)

MEDPERF_MODEL = dedent(
    '''
    """The 'model': predicts the sum of each case's numbers. Run by mlcube.py from the WORKDIR."""
    import json
    import sys
    from pathlib import Path

    data_path, output_path = Path(sys.argv[1]), Path(sys.argv[2])
    predictions = {case.stem: sum(json.loads(case.read_text())) for case in sorted(data_path.glob("*.json"))}
    (output_path / "predictions.json").write_text(json.dumps(predictions, sort_keys=True))
    print(f"predicted {len(predictions)} cases")
    '''
)


def medperf_chain_cube(root: Path) -> Path:
    cube = root / "medperf_chain"
    return write(
        cube,
        {
            "mlcube.yaml": MEDPERF_YAML,
            "Dockerfile": MEDPERF_DOCKERFILE,
            "requirements.txt": SHARED_REQUIREMENTS,
            "mlcube.py": MEDPERF_APP,
            "model.py": MEDPERF_MODEL,
            "workspace/parameters.yaml": "",  # medperf ships an empty parameters file
            "workspace/input_data/case1.txt": "1 2 3\n",
            "workspace/input_data/case2.txt": "4 5 6\n",
            "workspace/input_labels/labels.json": '{"case1": 6, "case2": 16}\n',
        },
    )


# --------------------------------------------------------------------------------------------
# (b) getting-started style: task-level multi-token entrypoints, untyped parameters
# --------------------------------------------------------------------------------------------

GETTING_STARTED_YAML = dedent(
    """
    name: getting_started
    description: MLCommons getting-started style cube
    authors:
      - {name: "First Last", email: "first.last@company.com", org: "Company Inc."}

    platform:
      accelerator_count: 0

    docker:
      image: mlcommons/getting_started:0.0.1
      build_context: "."
      build_file: "Dockerfile"

    tasks:
      download_data:
        entrypoint: python 01_download.py
        parameters:
          inputs:
            parameters_file: parameters.yaml
          outputs:
            data_dir: data/
      preprocess_data:
        entrypoint: python 02_preprocess.py
        parameters:
          inputs:
            raw_file: data/raw.csv
          outputs:
            output_dir: processed/
      train:
        entrypoint: python 03_train.py --verbose
        parameters:
          inputs:
            data_dir: processed/
            parameters_file: parameters.yaml
          outputs:
            model_dir: model/
    """
)

# No ENTRYPOINT: every task brings its own.
GETTING_STARTED_DOCKERFILE = dedent(
    """
    FROM python:3.8-buster
    MAINTAINER MLPerf MLBox Working Group

    WORKDIR /workspace

    RUN apt-get update && apt-get install -y --no-install-recommends software-properties-common curl && rm -rf /var/lib/apt/lists/*

    COPY requirements.txt /requirements.txt
    RUN pip3 install --no-cache-dir -r /requirements.txt

    COPY . /workspace/
    """
)

# Each script records its exact argv (so the test can check the task name was not passed)
# and uses argparse with only its own options, so a stray positional would fail it.
_GS_COMMON = dedent(
    '''
    import argparse
    import json
    import sys
    from pathlib import Path

    import six  # noqa: F401


    def record_argv(out_dir, name):
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / f"{name}.argv.json").write_text(json.dumps(sys.argv[1:]))
    '''
)

GETTING_STARTED_SCRIPTS = {
    "01_download.py": _GS_COMMON
    + dedent(
        """
        parser = argparse.ArgumentParser()
        parser.add_argument("--parameters_file", required=True)
        parser.add_argument("--data_dir", required=True)
        args = parser.parse_args()
        record_argv(args.data_dir, "download")
        rows = int(Path(args.parameters_file).read_text().split(":")[1])
        (Path(args.data_dir) / "raw.csv").write_text("".join(f"{i},{i * i}\\n" for i in range(rows)))
        print(f"downloaded {rows} rows")
        """
    ),
    "02_preprocess.py": _GS_COMMON
    + dedent(
        """
        parser = argparse.ArgumentParser()
        parser.add_argument("--raw_file", required=True)
        parser.add_argument("--output_dir", required=True)
        args = parser.parse_args()
        record_argv(args.output_dir, "preprocess")
        rows = [line.split(",") for line in Path(args.raw_file).read_text().splitlines()]
        (Path(args.output_dir) / "clean.json").write_text(json.dumps([[int(a), int(b)] for a, b in rows]))
        print(f"preprocessed {len(rows)} rows")
        """
    ),
    "03_train.py": _GS_COMMON
    + dedent(
        """
        parser = argparse.ArgumentParser()
        parser.add_argument("--verbose", action="store_true")
        parser.add_argument("--data_dir", required=True)
        parser.add_argument("--parameters_file", required=True)
        parser.add_argument("--model_dir", required=True)
        args = parser.parse_args()
        record_argv(args.model_dir, "train")
        rows = json.loads((Path(args.data_dir) / "clean.json").read_text())
        total = sum(b for _, b in rows)
        (Path(args.model_dir) / "model.json").write_text(json.dumps({"sum_of_squares": total, "verbose": args.verbose}))
        print(f"trained on {len(rows)} rows")
        """
    ),
}


def getting_started_cube(root: Path) -> Path:
    cube = root / "getting-started"
    return write(
        cube,
        {
            "mlcube.yaml": GETTING_STARTED_YAML,
            "Dockerfile": GETTING_STARTED_DOCKERFILE,
            "requirements.txt": SHARED_REQUIREMENTS,
            **GETTING_STARTED_SCRIPTS,
            "workspace/parameters.yaml": "rows: 5\n",
        },
    )


# --------------------------------------------------------------------------------------------
# (c) a single-token entrypoint (an executable script) with parameters
# --------------------------------------------------------------------------------------------

CHECK_GPUS_YAML = dedent(
    """
    name: gpus
    description: Check the GPUs a task sees
    platform:
      accelerator_count: 0

    docker:
      image: mlcommons/gpus:0.0.1
      gpu_args: --gpus=1

    tasks:
      check_gpus:
        entrypoint: ./check.sh
        parameters:
          inputs:
            parameters_file: {type: file, default: parameters.yaml}
          outputs:
            report: {type: file, default: reports/gpus.txt}
    """
)

CHECK_GPUS_DOCKERFILE = dedent(
    """
    FROM ubuntu:22.04
    COPY check.sh /workspace/check.sh
    RUN chmod +x /workspace/check.sh
    WORKDIR /workspace
    """
)

CHECK_SH = dedent(
    """
    #!/bin/sh
    # Every parameter arrives as --name=value; write them all to the report.
    report=""
    for arg in "$@"; do
      case "$arg" in
        --report=*) report="${arg#--report=}" ;;
      esac
    done
    if [ -z "$report" ]; then
      echo "check.sh: no --report given (args: $*)" >&2
      exit 2
    fi
    printf '%s\\n' "$@" > "$report"
    echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset}" >> "$report"
    echo "check.sh: wrote $report"
    """
)


def check_gpus_cube(root: Path) -> Path:
    cube = root / "gpus"
    return write(
        cube,
        {
            "mlcube.yaml": CHECK_GPUS_YAML,
            "Dockerfile": CHECK_GPUS_DOCKERFILE,
            "check.sh": CHECK_SH,
            "workspace/parameters.yaml": "min_gpus: 0\n",
        },
        executable=("check.sh",),
    )


# --------------------------------------------------------------------------------------------
# (d) fets/model style: a "null" file default, missing on purpose
# --------------------------------------------------------------------------------------------

FETS_MODEL_YAML = dedent(
    """
    name: fets_model
    description: FeTS-style model cube with "null" file defaults
    platform: {accelerator_count: 0}
    docker: {image: "mlcommons/fets_model:0.0.1", build_context: ".", build_file: "Dockerfile"}
    tasks:
      infer:
        parameters:
          inputs: {data_path: data/, parameters_file: {type: file, default: "null"}}
          outputs: {output_path: output/}
    """
)

FETS_MODEL_DOCKERFILE = dedent(
    """
    FROM python:3.10-slim
    COPY infer.py /workspace/infer.py
    WORKDIR /workspace
    ENTRYPOINT ["python3", "/workspace/infer.py"]
    """
)

FETS_MODEL_APP = dedent(
    '''
    """Falls back to the parameters baked into the image when --parameters_file does not exist."""
    import argparse
    import json
    from pathlib import Path

    BAKED = {"threshold": 0.5}

    parser = argparse.ArgumentParser()
    parser.add_argument("task", choices=["infer"])
    parser.add_argument("--data_path", required=True)
    parser.add_argument("--parameters_file", required=True)
    parser.add_argument("--output_path", required=True)
    args = parser.parse_args()
    params_file = Path(args.parameters_file)
    fallback = not params_file.is_file()
    params = BAKED if fallback else json.loads(params_file.read_text())
    cases = sorted(p.name for p in Path(args.data_path).iterdir())
    result = {"cases": cases, "params": params, "fallback": fallback, "parameters_file": args.parameters_file}
    (Path(args.output_path) / "result.json").write_text(json.dumps(result))
    print(f"inferred {len(cases)} cases (fallback parameters: {fallback})")
    '''
)


def fets_model_cube(root: Path) -> Path:
    cube = root / "fets_model"
    return write(
        cube,
        {
            "mlcube.yaml": FETS_MODEL_YAML,
            "Dockerfile": FETS_MODEL_DOCKERFILE,
            "infer.py": FETS_MODEL_APP,
            "workspace/data/case_001.nii": "fake image\n",
        },
    )


# --------------------------------------------------------------------------------------------
# (e) a name with spaces and no trailing newline at the end of mlcube.yaml
# --------------------------------------------------------------------------------------------

SPACES_YAML = dedent(
    """
    name: MLCommons Getting Started
    description: a cube whose name has spaces
    docker:
      image: mlcommons/getting_started:0.0.1
    tasks:
      greet:
        parameters:
          inputs:
            parameters_file: parameters.yaml
          outputs:
            greeting: {type: file, default: out/greeting.txt}
    """
).rstrip("\n")

SPACES_DOCKERFILE = dedent(
    """
    FROM python:3.11-slim
    COPY greet.py /app/greet.py
    ENTRYPOINT ["python3", "/app/greet.py"]
    """
)

SPACES_APP = dedent(
    """
    import sys
    from pathlib import Path

    task, *options = sys.argv[1:]
    args = dict(option[2:].split("=", 1) for option in options)
    who = Path(args["parameters_file"]).read_text().split(":", 1)[1].strip()
    Path(args["greeting"]).write_text(f"{task}: hello {who}\\n")
    print(f"greeted {who}")
    """
)


def spaces_cube(root: Path) -> Path:
    cube = root / "My Cube"
    return write(
        cube,
        {
            "mlcube.yaml": SPACES_YAML,
            "Dockerfile": SPACES_DOCKERFILE,
            "greet.py": SPACES_APP,
            "workspace/parameters.yaml": "who: world\n",
        },
    )


# --------------------------------------------------------------------------------------------
# (f) build_context: ../project (Dockerfile and code in a sibling directory)
# --------------------------------------------------------------------------------------------

SIBLING_YAML = dedent(
    """
    name: sibling_project
    description: the Dockerfile and the code live in ../project
    platform:
      accelerator_count: 0
    docker:
      image: mlcommons/sibling:0.0.1
      build_context: "../project"
      build_file: "Dockerfile"
    tasks:
      run:
        parameters:
          inputs:
            parameters_file: parameters.yaml
          outputs:
            output_file: {type: file, default: result.json}
    """
)

SIBLING_DOCKERFILE = dedent(
    """
    FROM python:3.8-buster
    WORKDIR /workspace
    COPY . /workspace/
    ENTRYPOINT ["python3", "main.py"]
    """
)

SIBLING_MAIN = dedent(
    """
    import json
    import os
    import sys

    from lib.helper import double

    task, *options = sys.argv[1:]
    args = dict(option[2:].split("=", 1) for option in options)
    value = int(open(args["parameters_file"]).read().split(":")[1])
    with open(args["output_file"], "w") as out:
        json.dump({"task": task, "cwd": os.getcwd(), "result": double(value)}, out)
    """
)


def sibling_project_cube(root: Path) -> Path:
    write(
        root,
        {
            "mlcube/mlcube.yaml": SIBLING_YAML,
            "mlcube/workspace/parameters.yaml": "value: 21\n",
            "project/Dockerfile": SIBLING_DOCKERFILE,
            "project/main.py": SIBLING_MAIN,
            "project/lib/__init__.py": "",
            "project/lib/helper.py": "def double(x):\n    return 2 * x\n",
        },
    )
    return root / "mlcube"


# --------------------------------------------------------------------------------------------
# Our own `local:` section: a tool cube for exit codes, signals, env and overrides
# --------------------------------------------------------------------------------------------

TOOL_YAML = dedent(
    """
    name: tool
    description: tasks that fail, get killed, wait for Ctrl-C or report their environment
    local:
      command: python3 tool.py
      env: current
    tasks:
      fail:
        parameters:
          outputs: {marker: {type: file, default: fail.txt}}
      suicide:
        parameters:
          outputs: {marker: {type: file, default: suicide.txt}}
      after:
        parameters:
          outputs: {marker: {type: file, default: after.txt}}
      wait:
        parameters:
          outputs: {pids: {type: file, default: pids.txt}}
      envprobe:
        parameters:
          inputs: {config: {type: file, default: config.txt}}
          outputs: {report: {type: file, default: env.json}}
    """
)

# The grandchild ignores SIGINT and SIGTERM: only a SIGKILL to the task's process group stops it.
TOOL_APP = dedent(
    '''
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    GRANDCHILD = (
        "import signal, time\\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
        "deadline = time.monotonic() + 120\\n"
        "while time.monotonic() < deadline:\\n"
        "    time.sleep(0.05)\\n"
    )

    task, *options = sys.argv[1:]
    args = dict(option[2:].split("=", 1) for option in options)

    if task == "fail":
        open(args["marker"], "w").write("about to fail\\n")
        print("fail: exiting with 3", flush=True)
        sys.exit(3)
    elif task == "suicide":
        open(args["marker"], "w").write("about to die\\n")
        print("suicide: SIGKILL to myself", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    elif task == "after":
        open(args["marker"], "w").write("ran\\n")
    elif task == "wait":
        if os.environ.get("TOOL_IGNORE_SIGINT") == "1":
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c", GRANDCHILD])
        with open(args["pids"], "w") as out:
            out.write(f"{os.getpid()} {child.pid}\\n")
        print("READY", flush=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            time.sleep(0.05)
        sys.exit(9)  # never reached in the tests: the run is interrupted first
    elif task == "envprobe":
        report = {key: os.environ.get(key) for key in ("FOO", "CUDA_VISIBLE_DEVICES", "VIRTUAL_ENV")}
        report["argv"] = sys.argv[1:]
        report["config"] = open(args["config"]).read()
        open(args["report"], "w").write(json.dumps(report))
        print("envprobe: done", flush=True)
    '''
)


def tool_cube(root: Path) -> Path:
    cube = root / "tool"
    return write(cube, {"mlcube.yaml": TOOL_YAML, "tool.py": TOOL_APP, "workspace/config.txt": "cfg\n"})


# --------------------------------------------------------------------------------------------
# A `local:` cube with requirements: a managed venv
# --------------------------------------------------------------------------------------------

MANAGED_YAML = dedent(
    """
    name: managed
    local:
      command: python3 x.py
      requirements: requirements.txt
    tasks:
      probe:
        parameters:
          outputs: {report: {type: file, default: report.json}}
    """
)

MANAGED_APP = dedent(
    """
    import json
    import sys

    import six

    task, option = sys.argv[1:]
    path = option.split("=", 1)[1]
    with open(path, "w") as out:
        json.dump({"task": task, "six": six.__file__, "executable": sys.executable, "prefix": sys.prefix}, out)
    print("probe: six", six.__version__)
    """
)


def managed_env_cube(root: Path, requirements: str = SHARED_REQUIREMENTS) -> Path:
    cube = root / "managed"
    return write(cube, {"mlcube.yaml": MANAGED_YAML, "x.py": MANAGED_APP, "requirements.txt": requirements})
