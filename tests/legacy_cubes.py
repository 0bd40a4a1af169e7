"""Builders of legacy MLBox cubes in temporary directories, in the layouts of contract section 7.

- ``poc_hello_world`` / ``poc_mnist``: the MLBox proof of concept (``mlbox.yaml``,
  ``implementation/mlbox_implementation.yaml``, parameter sets ``tasks/<task>/<set>.yaml``). Their
  programs insist on the PoC contract: the task arrives as ``--mlbox_task=<task>`` (a positional
  task name makes argparse fail) and the working directory is ``<box>/implementation`` (they read
  ``messages.txt`` relative to it).
- ``v1_hello_world`` / ``v1_mnist``: config 1.0 ("MLCommons Box" / MLCube v1): a ``schema_type``
  root file, ``tasks/<t>.yaml``, ``run/[<set>/]<t>.yaml`` with ``$WORKSPACE`` bindings,
  ``platforms/*.yaml`` and ``build/Dockerfile``. Their programs take the task name as the first
  positional argument and reject ``--mlbox_task``.

Every program is deterministic (no clock, no host name), so two runs can be compared byte for byte.
The Dockerfiles build on ``BASE_IMAGE`` (the locally imported test base image) with no RUN steps.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

BASE_IMAGE = "localhost/cuberun-base:bookworm"


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return root


# -- MLBox proof of concept ---------------------------------------------------------------------
POC_HELLO = '''
    """MLBox hello_world: the task comes as --mlbox_task; the program runs in <box>/implementation."""
    import argparse
    import os
    import sys

    parser = argparse.ArgumentParser()
    parser.add_argument("--mlbox_task", required=True, choices=["hello", "goodbye"])
    parser.add_argument("--name")
    parser.add_argument("--greeting")
    parser.add_argument("--farewell")
    args = parser.parse_args()  # a positional task name is an error: the PoC never passes one

    messages = dict(line.split("=", 1) for line in open("messages.txt").read().splitlines() if line)
    with open(args.name) as f:
        name = f.read().strip()
    if args.mlbox_task == "hello":
        with open(args.greeting, "w") as f:
            f.write(messages["hello"].format(name=name) + "\\n")
    else:
        with open(args.greeting) as f:
            greeting = f.read().strip()
        with open(args.farewell, "w") as f:
            f.write(messages["goodbye"].format(name=name, greeting=greeting) + "\\n")
    print(f"{args.mlbox_task} done in {os.path.basename(os.getcwd())}", file=sys.stderr)
'''

POC_MESSAGES = """
    hello=Hello, {name}!
    goodbye=Goodbye, {name}! Earlier I said: {greeting}
"""


def poc_hello_world(root: Path, *, docker: bool = False, image: str = "mlbox/hello_world:0.1", base_image: str = BASE_IMAGE) -> Path:
    """hello (name -> greeting) and goodbye (name, greeting -> farewell); sets default and alice."""
    files = {
        "mlbox.yaml": """
            name: hello_world
            version: 0.1
            author: cuberun tests
            tasks:
              hello:
                inputs:
                  name: {desc: The name to say hello to.}
                outputs:
                  greeting: {desc: A friendly greeting.}
              goodbye:
                inputs:
                  name: {description: The name to say goodbye to.}
                  greeting: {description: The greeting you received.}
                outputs:
                  farewell: {description: A farewell.}
        """,
        "implementation/hello_world.py": POC_HELLO,
        "implementation/messages.txt": POC_MESSAGES,
        "tasks/hello/default.yaml": "name: names/world.txt\ngreeting: greetings/world.txt\n",
        "tasks/hello/alice.yaml": "name: names/alice.txt\ngreeting: greetings/alice.txt\n",
        "tasks/goodbye/default.yaml": "name: names/world.txt\ngreeting: greetings/world.txt\nfarewell: farewells/world.txt\n",
        "tasks/goodbye/alice.yaml": "name: names/alice.txt\ngreeting: greetings/alice.txt\nfarewell: farewells/alice.txt\n",
        "workspace/names/world.txt": "world\n",
        "workspace/names/alice.txt": "alice\n",
        "workspace/names/bob.txt": "bob\n",
    }
    if docker:
        files["implementation/mlbox_implementation.yaml"] = f"""
            implementation_type: docker
            image: {image}
            docker_runtime: docker
            configure: build
        """
        files["implementation/docker/dockerfiles/Dockerfile"] = f"""
            ARG BASE_IMAGE={base_image}
            FROM ${{BASE_IMAGE}}
            # the build context is the box root
            COPY implementation/hello_world.py implementation/messages.txt /mlbox/
            WORKDIR /mlbox
            ENTRYPOINT ["python3", "/mlbox/hello_world.py"]
        """
    else:
        files["implementation/mlbox_implementation.yaml"] = "implementation_type: direct_python\nmain_file: hello_world.py\n"
    return write(root, files)


POC_MNIST = '''
    """An mnist-like MLBox: downloaddata writes a data set, train fits a line to it."""
    import argparse
    import os

    parser = argparse.ArgumentParser()
    parser.add_argument("--mlbox_task", required=True, choices=["downloaddata", "train"])
    for name in ("data_dir", "log_dir", "model_dir", "parameters_file"):
        parser.add_argument("--" + name)
    args = parser.parse_args()
    tag = open("messages.txt").read().strip()  # relative to <box>/implementation

    if args.mlbox_task == "downloaddata":
        with open(os.path.join(args.data_dir, "train.csv"), "w") as f:
            for i in range(50):
                f.write(f"{i},{3 * i + (i * 7) % 5}\\n")
        with open(os.path.join(args.log_dir, "downloaddata.log"), "w") as f:
            f.write(f"{tag}: downloaded 50 rows\\n")
    else:
        params = dict(line.split(":", 1) for line in open(args.parameters_file).read().splitlines() if ":" in line)
        epochs = int(params["train_epochs"])
        rows = [tuple(map(int, line.split(","))) for line in open(os.path.join(args.data_dir, "train.csv"))]
        w = 0.0
        for _ in range(epochs):
            for x, y in rows:
                w += 1e-5 * (y - w * x) * x
        with open(os.path.join(args.model_dir, "model.txt"), "w") as f:
            f.write(f"w={w:.6f} epochs={epochs}\\n")
        with open(os.path.join(args.log_dir, "train.log"), "w") as f:
            f.write(f"{tag}: trained on {len(rows)} rows\\n")
'''


def poc_mnist(root: Path) -> Path:
    """downloaddata (-> data_dir, log_dir) then train (data_dir, parameters_file -> log_dir, model_dir)."""
    return write(root, {
        "mlbox.yaml": """
            type: mlbox
            mlbox_spec_version: 0.1
            name: MNIST
            version: 0.1
            author: cuberun tests
            implementation: python
            tasks:
              downloaddata:
                inputs: {}
                outputs:
                  data_dir: {description: "A directory where the data set is downloaded."}
                  log_dir: {description: "Directory for log files."}
              train:
                inputs:
                  data_dir: {description: "The data set downloaded by 'downloaddata'."}
                  parameters_file: {description: "Hyper-parameters."}
                outputs:
                  log_dir: {description: "Directory for log files."}
                  model_dir: {description: "Directory for the model."}
        """,
        "implementation/mlbox_implementation.yaml": "implementation_type: direct_python\nmain_file: mnist.py\n",
        "implementation/mnist.py": POC_MNIST,
        "implementation/messages.txt": "mnist-box\n",
        "tasks/downloaddata/default.yaml": "data_dir: data\nlog_dir: log\n",
        "tasks/train/default.yaml": "parameters_file: parameters/default.parameters.yaml\ndata_dir: data\nlog_dir: log\nmodel_dir: model\n",
        "tasks/train/long.yaml": "parameters_file: parameters/long.parameters.yaml\ndata_dir: data\nlog_dir: log\nmodel_dir: model_long\n",
        "workspace/parameters/default.parameters.yaml": 'optimizer: "adam"\ntrain_epochs: 2\nbatch_size: 32\n',
        "workspace/parameters/long.parameters.yaml": 'optimizer: "adam"\ntrain_epochs: 5\nbatch_size: 32\n',
    })


# -- config 1.0 -------------------------------------------------------------------------------------
V1_HELLO = '''
    """MLCube v1 hello_world: the task name is the first positional argument."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("task", choices=["hello", "bye"])
    parser.add_argument("--name", required=True)
    parser.add_argument("--chat", required=True)
    args = parser.parse_args()  # --mlbox_task would be an error here

    with open(args.name) as f:
        name = f.read().strip()
    with open(args.chat, "a") as f:
        if args.task == "hello":
            f.write(f"Hi, {name}! Nice to meet you.\\n")
        else:
            f.write(f"Bye, {name}! It was great talking to you.\\n")
'''

V1_DOCKERFILE = """
    ARG BASE_IMAGE={base}
    FROM ${{BASE_IMAGE}}
    COPY {program} /workspace/{program}
    WORKDIR /workspace
    ENTRYPOINT ["python3", "/workspace/{program}"]
"""


def _v1_invoke(prefix: str, task: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
    lines = [f"schema_type: {prefix}_invoke", "schema_version: 1.0.0", f"task_name: {task}", "input_binding:"]
    lines += [f"  {k}: $WORKSPACE/{v}" for k, v in inputs.items()] or ["  {}"]
    lines.append("output_binding:")
    lines += [f"  {k}: $WORKSPACE/{v}" for k, v in outputs.items()]
    return "\n".join(lines).replace("input_binding:\n  {}", "input_binding: {}") + "\n"


def _v1_root(prefix: str, name: str, tasks: list[str]) -> str:
    listed = "\n".join(f"  - tasks/{t}.yaml" for t in tasks)
    return (f"schema_version: 1.0.0\nschema_type: {prefix}_root\nname: {name}\nauthor: cuberun tests\n"
            f"version: 0.1.0\n{prefix}_spec_version: 0.1.0\ntasks:\n{listed}\n")


def _v1_task(prefix: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
    def items(group: dict[str, str]) -> str:
        return "".join(f"\n  - name: {k}\n    type: {v}" for k, v in group.items()) or " []"

    return f"schema_version: 1.0.0\nschema_type: {prefix}_task\ninputs:{items(inputs)}\noutputs:{items(outputs)}\n"


def _v1_platforms(prefix: str, image: str) -> dict[str, str]:
    platform_schema = "mlcube_platform" if prefix == "mlcube" else "mlcommons_box_platform"
    return {
        "platforms/docker.yaml": f'schema_type: {platform_schema}\nschema_version: 0.1.0\nplatform:\n  name: "docker"\n  version: ">=18.01"\n'
                                 f'container:\n  image: "{image}"\n',
        "platforms/singularity.yaml": f'schema_type: {platform_schema}\nschema_version: 0.1.0\nplatform:\n  name: "singularity"\n'
                                      f'container:\n  image: "${{HOME}}/{prefix}/hello.simg"\n',
        "platforms/ssh.yaml": 'host: "mlcube-remote"\nauthentication:\nplatform: "docker.yaml"\n'
                              'interpreter: {type: virtualenv, python: python3.6, requirements: mlcube_docker, '
                              'location: "${HOME}/mlcube/environments", name: mlcube_docker}\n',
    }


def v1_hello_world(root: Path, *, root_file: str = "mlcube.yaml", image: str = "mlcommons/hello_world:0.0.1", base_image: str = BASE_IMAGE) -> Path:
    """hello and bye (name -> chat, appended); default bindings bob, parameter set alice.
    root_file mlbox.yaml gives the MLBox 0.2.x spelling (schema_type mlbox_root ...)."""
    prefix = "mlbox" if root_file == "mlbox.yaml" else "mlcube"
    files = {
        root_file: _v1_root(prefix, "hello_world", ["hello", "bye"]),
        "tasks/hello.yaml": _v1_task(prefix, {"name": "file"}, {"chat": "file"}),
        "tasks/bye.yaml": _v1_task(prefix, {"name": "file"}, {"chat": "file"}),
        "run/hello.yaml": _v1_invoke(prefix, "hello", {"name": "names/bob.txt"}, {"chat": "chats/chat_with_bob.txt"}),
        "run/bye.yaml": _v1_invoke(prefix, "bye", {"name": "names/bob.txt"}, {"chat": "chats/chat_with_bob.txt"}),
        "run/alice/hello.yaml": _v1_invoke(prefix, "hello", {"name": "names/alice.txt"}, {"chat": "chats/chat_with_alice.txt"}),
        "run/alice/bye.yaml": _v1_invoke(prefix, "bye", {"name": "names/alice.txt"}, {"chat": "chats/chat_with_alice.txt"}),
        "build/Dockerfile": V1_DOCKERFILE.format(base=base_image, program="hello_world.py"),
        "build/hello_world.py": V1_HELLO,
        "workspace/names/alice.txt": "alice\n",
        "workspace/names/bob.txt": "bob\n",
        **_v1_platforms(prefix, image),
    }
    return write(root, files)


V1_MNIST = '''
    """MLCube v1 mnist-like: download writes a data set, train fits a line to it."""
    import argparse
    import os

    parser = argparse.ArgumentParser()
    parser.add_argument("task", choices=["download", "train"])
    for name in ("data_dir", "log_dir", "model_dir", "train_config"):
        parser.add_argument("--" + name)
    args = parser.parse_args()

    if args.task == "download":
        with open(os.path.join(args.data_dir, "train.csv"), "w") as f:
            for i in range(40):
                f.write(f"{i},{2 * i + (i * 5) % 3}\\n")
        with open(os.path.join(args.log_dir, "download.log"), "w") as f:
            f.write("downloaded 40 rows\\n")
    else:
        params = dict(line.split(":", 1) for line in open(args.train_config).read().splitlines() if ":" in line)
        epochs = int(params["epochs"])
        rows = [tuple(map(int, line.split(","))) for line in open(os.path.join(args.data_dir, "train.csv"))]
        w = 0.0
        for _ in range(epochs):
            for x, y in rows:
                w += 1e-5 * (y - w * x) * x
        with open(os.path.join(args.model_dir, "model.txt"), "w") as f:
            f.write(f"w={w:.6f} epochs={epochs}\\n")
        with open(os.path.join(args.log_dir, "train.log"), "w") as f:
            f.write(f"trained on {len(rows)} rows\\n")
'''


def v1_mnist(root: Path, *, image: str = "mlcommons/mnist:0.0.1", base_image: str = BASE_IMAGE) -> Path:
    """download (-> data_dir, log_dir) then train (data_dir, train_config -> log_dir, model_dir)."""
    prefix = "mlcube"
    return write(root, {
        "mlcube.yaml": _v1_root(prefix, "mnist", ["download", "train"]),
        "tasks/download.yaml": _v1_task(prefix, {}, {"data_dir": "directory", "log_dir": "directory"}),
        "tasks/train.yaml": _v1_task(prefix, {"data_dir": "directory", "train_config": "file"},
                                     {"log_dir": "directory", "model_dir": "directory"}),
        "run/download.yaml": _v1_invoke(prefix, "download", {}, {"data_dir": "data", "log_dir": "logs"}),
        "run/train.yaml": _v1_invoke(prefix, "train", {"data_dir": "data", "train_config": "train.yaml"},
                                     {"log_dir": "logs", "model_dir": "model"}),
        "build/Dockerfile": V1_DOCKERFILE.format(base=base_image, program="mnist.py"),
        "build/mnist.py": V1_MNIST,
        "workspace/train.yaml": "optimizer: adam\nepochs: 3\n",
        "platforms/docker.yaml": f'schema_type: mlcube_platform\nschema_version: 0.1.0\nplatform:\n  name: "docker"\ncontainer:\n  image: "{image}"\n',
    })


def outputs(workspace: Path) -> dict[str, bytes]:
    """Every file of a workspace except cuberun's own records: relative path -> bytes."""
    return {p.relative_to(workspace).as_posix(): p.read_bytes() for p in sorted(workspace.rglob("*"))
            if p.is_file() and ".cuberun" not in p.relative_to(workspace).parts}
