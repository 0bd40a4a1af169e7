"""`cuberun export backendai`: label values, the seed's label block (golden), Dockerfile rewriting
(golden: labels updated in place, never duplicated; multi-stage; continuations and comments).

No container engine is used here (`--no-inspect`, or images that cannot exist); the real
engine is exercised in tests/integration/test_backendai_image.py."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from cuberun.backendai_export import (
    ImageFacts,
    LabelOptions,
    choose_labels,
    derive_image_name,
    features_for,
    final_stage_labels,
    label_block,
    memory_label,
    parse_os_release,
    quote_value,
    rewrite_dockerfile,
)
from cuberun.errors import UsageError
from tests.conftest import CLI, write_tree

# The block of the MLPerf-on-Backend.AI notes (seed 004), which users wrote by hand.
SEED_BLOCK = """\
LABEL ai.backend.kernelspec="1" \\
      ai.backend.envs.corecount="OPENBLAS_NUM_THREADS,OMP_NUM_THREADS,NPROC" \\
      ai.backend.features="batch query uid-match user-input" \\
      ai.backend.base-distro="ubuntu16.04" \\
      ai.backend.resource.min.cpu="1" \\
      ai.backend.resource.min.mem="1g" \\
      ai.backend.runtime-type="python" \\
      ai.backend.runtime-path="/usr/local/bin/python" \\
      ai.backend.service-ports="ipython:pty:3000,jupyter:http:8080,jupyterlab:http:8090"
"""

CUBE = """\
name: maskrcnn
docker: {image: "mlperf/object_detection:0.1"}
platform: {accelerator_count: 0, host_memory_gb: 1}
tasks:
  train:
    parameters:
      inputs: {data: data/}
      outputs: {model: model/}
"""


# -- values -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n', "debian12"),
        ('NAME="Ubuntu"\nVERSION_ID="22.04"\nID=ubuntu\nID_LIKE=debian\n', "ubuntu22.04"),
        ("NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.18.4\n", "alpine3.18"),
        ('ID="centos"\nVERSION_ID="7"\n', "centos7"),
        ('ID="rocky"\nVERSION_ID="9.3"\n', "rocky9.3"),
        ("ID=debian\n# testing has no VERSION_ID\n", "debian"),
        ("NAME=nothing\n", None),
        ("", None),
    ],
)
def test_base_distro_from_os_release(text: str, expected: str | None) -> None:
    assert parse_os_release(text) == expected


def test_values() -> None:
    assert features_for("app") == "batch uid-match"
    assert features_for("python") == "batch query uid-match user-input"
    assert memory_label(16) == "16g"
    assert memory_label(0.5) == "512m"
    assert memory_label(None) is None and memory_label(0) is None and memory_label("x") is None
    assert derive_image_name("mlcommons/mnist:0.0.1") == "mlcommons/mnist:0.0.1-backendai"
    assert derive_image_name("localhost:5000/team/hello") == "localhost:5000/team/hello:latest-backendai"
    assert derive_image_name("repo/x@sha256:abc") == "repo/x:latest-backendai"
    assert quote_value('a "b" $HOME \\') == '"a \\"b\\" \\$HOME \\\\"'


def test_choices_precedence() -> None:
    facts = ImageFacts("img", present=True, base_distro="debian12", runtime_path="/opt/venv/bin/python3")
    platform = {"host_memory_gb": 8, "accelerator_count": 2}
    got = {c.key: (c.value, c.source) for c in choose_labels(LabelOptions(min_mem="4g"), facts=facts, platform=platform,
                                                           existing={"ai.backend.resource.min.cpu": "2"})}
    assert got["ai.backend.base-distro"] == ("debian12", "/etc/os-release of img")
    assert got["ai.backend.runtime-path"] == ("/opt/venv/bin/python3", "the python of img")
    assert got["ai.backend.resource.min.mem"] == ("4g", "flag")  # the flag beats host_memory_gb
    assert got["ai.backend.resource.min.cpu"] == ("2", "kept")  # a label the image has beats the default
    assert got["ai.backend.resource.min.cuda.device"] == ("2", "platform.accelerator_count")
    assert got["ai.backend.accelerators"] == ("cuda", "GPUs requested")
    no_gpu = {c.key for c in choose_labels(LabelOptions(gpu=0), facts=facts, platform=platform)}
    assert "ai.backend.resource.min.cuda.device" not in no_gpu and "ai.backend.accelerators" not in no_gpu
    # the image is unknown: defaults
    got = {c.key: c.value for c in choose_labels(LabelOptions(), facts=ImageFacts("img"), platform={})}
    assert got["ai.backend.base-distro"] == "ubuntu22.04" and got["ai.backend.runtime-path"] == "/usr/bin/python3"
    assert got["ai.backend.resource.min.mem"] == "1g" and got["ai.backend.runtime-type"] == "app"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (LabelOptions(min_mem="lots"), "--min-mem 'lots' is not a size"),
        (LabelOptions(min_cpu="0"), "--min-cpu '0' is not a positive number"),
        (LabelOptions(runtime_path="python3"), "is not absolute"),
        (LabelOptions(service_ports="jupyter:web:8080"), "is not name:proto:port"),
        (LabelOptions(runtime_type="java"), "--runtime-type 'java' is not allowed"),
    ],
)
def test_bad_flags(options: LabelOptions, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        options.validate()


# -- the seed's block, from a cube, in one command (golden) ------------------------------------------
def test_seed_block_reproduced_from_a_cube(cli: CLI, tmp_path: Path) -> None:
    write_tree(tmp_path / "cube", {"mlcube.yaml": CUBE})
    proc = cli("export", "backendai", "--mlcube", str(tmp_path / "cube"), "--no-inspect", "--runtime-type=python", "--base-distro=ubuntu16.04",
               "--runtime-path=/usr/local/bin/python", "--service-ports=ipython:pty:3000,jupyter:http:8080,jupyterlab:http:8090", "--output=-")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith("FROM mlperf/object_detection:0.1\n" + SEED_BLOCK)
    assert "label ai.backend.resource.min.mem=1g (platform.host_memory_gb)" in proc.stderr


def test_seed_block_golden_function() -> None:
    choices = choose_labels(LabelOptions(runtime_type="python", base_distro="ubuntu16.04", runtime_path="/usr/local/bin/python",
                                         service_ports="ipython:pty:3000,jupyter:http:8080,jupyterlab:http:8090"))
    assert label_block([(c.key, c.value) for c in choices]) == SEED_BLOCK


def test_export_writes_next_to_the_cube_with_gpu_labels(cli: CLI, tmp_path: Path) -> None:
    write_tree(tmp_path / "cube", {"mlcube.yaml": CUBE.replace("accelerator_count: 0, host_memory_gb: 1", "accelerator_count: 2, host_memory_gb: 16")})
    proc = cli("export", "backendai", "--mlcube", str(tmp_path / "cube"), "--no-inspect")
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "cube" / "Dockerfile.backendai").read_text()
    assert 'ai.backend.resource.min.mem="16g"' in text
    assert 'ai.backend.resource.min.cuda.device="2" \\\n      ai.backend.accelerators="cuda"' in text
    assert 'ai.backend.features="batch uid-match"' in text and 'ai.backend.runtime-type="app"' in text
    assert "# note: the image was not inspected (--no-inspect)" in text


def test_export_bad_input_is_one_line(cli: CLI, tmp_path: Path) -> None:
    write_tree(tmp_path / "cube", {"mlcube.yaml": CUBE})
    proc = cli("export", "backendai", "--mlcube", str(tmp_path / "cube"), "--min-mem=lots", "--no-inspect")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["cuberun: error: --min-mem 'lots' is not a size. Hint: write e.g. 512m, 1g or 16g"]
    proc = cli("export", "backendai", "--mlcube", str(tmp_path / "cube"), "--dockerfile", "x")
    assert proc.returncode == 2 and "exclude each other" in proc.stderr
    proc = cli("export", "backendai", "--dockerfile", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "cannot read" in proc.stderr


# -- rewriting Dockerfiles (golden) ---------------------------------------------------------------------
FLAGS = {"ai.backend.base-distro": "ubuntu22.04"}
DEFAULTS = {"ai.backend.kernelspec": "1", "ai.backend.features": "batch uid-match", "ai.backend.runtime-type": "app"}


def _d(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


REWRITES = [
    pytest.param(
        _d("""
            FROM ubuntu:22.04
            RUN apt-get update
            ENTRYPOINT ["python3", "main.py"]
        """),
        {},
        _d("""
            FROM ubuntu:22.04
            RUN apt-get update
            ENTRYPOINT ["python3", "main.py"]
            # Backend.AI kernel labels (cuberun export backendai)
            LABEL ai.backend.kernelspec="1" \\
                  ai.backend.features="batch uid-match" \\
                  ai.backend.runtime-type="app"
        """),
        id="no-labels: one block at the end",
    ),
    pytest.param(
        _d("""
            FROM ubuntu:16.04
            # hand-written, with a comment inside the continuation
            LABEL maintainer="someone" \\
                  ai.backend.kernelspec="1" \\
                  # the distro
                  ai.backend.base-distro="ubuntu16.04"
            CMD ["bash"]
        """),
        FLAGS,
        _d("""
            FROM ubuntu:16.04
            # hand-written, with a comment inside the continuation
            LABEL maintainer="someone" \\
                  ai.backend.kernelspec="1" \\
                  # the distro
                  ai.backend.base-distro="ubuntu22.04"
            CMD ["bash"]
            # Backend.AI kernel labels (cuberun export backendai)
            LABEL ai.backend.features="batch uid-match" \\
                  ai.backend.runtime-type="app"
        """),
        id="flag updates in place, kept labels and comments untouched",
    ),
    pytest.param(
        _d("""
            FROM ubuntu:22.04
            LABEL ai.backend.kernelspec=1 ai.backend.features="batch" other=x
            LABEL ai.backend.features='batch uid-match' \\
                  org.example=y
            RUN true
        """),
        {},
        _d("""
            FROM ubuntu:22.04
            LABEL ai.backend.kernelspec=1 other=x
            LABEL ai.backend.features='batch uid-match' \\
                  org.example=y
            RUN true
            # Backend.AI kernel labels (cuberun export backendai)
            LABEL ai.backend.runtime-type="app"
        """),
        id="duplicate: the earlier one (which Docker overrides) goes",
    ),
    pytest.param(
        _d("""
            FROM ubuntu:22.04
            LABEL a=1 \\
                  ai.backend.base-distro=old
            LABEL ai.backend.base-distro=older
        """),
        FLAGS,
        _d("""
            FROM ubuntu:22.04
            LABEL a=1
            LABEL ai.backend.base-distro="ubuntu22.04"
            # Backend.AI kernel labels (cuberun export backendai)
            LABEL ai.backend.kernelspec="1" \\
                  ai.backend.features="batch uid-match" \\
                  ai.backend.runtime-type="app"
        """),
        id="removing a continued last word ends the instruction cleanly",
    ),
    pytest.param(
        _d("""
            FROM python:3.11 AS build
            LABEL ai.backend.base-distro="debian11"
            RUN pip wheel -w /w numpy
            FROM ubuntu:22.04
            COPY --from=build /w /w
        """),
        FLAGS,
        _d("""
            FROM python:3.11 AS build
            LABEL ai.backend.base-distro="debian11"
            RUN pip wheel -w /w numpy
            FROM ubuntu:22.04
            COPY --from=build /w /w
            # Backend.AI kernel labels (cuberun export backendai)
            LABEL ai.backend.kernelspec="1" \\
                  ai.backend.features="batch uid-match" \\
                  ai.backend.base-distro="ubuntu22.04" \\
                  ai.backend.runtime-type="app"
        """),
        id="multi-stage: earlier stages untouched, labels go to the final stage",
    ),
    pytest.param(
        _d("""
            FROM ubuntu:22.04 AS base
            LABEL ai.backend.kernelspec="1" ai.backend.runtime-type=python
            FROM base
            RUN true
        """),
        {},
        _d("""
            FROM ubuntu:22.04 AS base
            LABEL ai.backend.kernelspec="1" ai.backend.runtime-type=python
            FROM base
            RUN true
            # Backend.AI kernel labels (cuberun export backendai)
            LABEL ai.backend.features="batch uid-match"
        """),
        id="labels inherited from the stage the final one builds on are kept",
    ),
    pytest.param(
        _d("""
            FROM ubuntu:22.04
            LABEL ai.backend.base-distro ubuntu 16.04
        """),
        FLAGS,
        _d("""
            FROM ubuntu:22.04
            LABEL ai.backend.base-distro="ubuntu22.04"
            # Backend.AI kernel labels (cuberun export backendai)
            LABEL ai.backend.kernelspec="1" \\
                  ai.backend.features="batch uid-match" \\
                  ai.backend.runtime-type="app"
        """),
        id="legacy LABEL key value form",
    ),
    pytest.param(
        "# escape=`\nFROM mcr.microsoft.com/windows/servercore\nLABEL a=1 `\n      ai.backend.kernelspec=1\n",
        {},
        "# escape=`\nFROM mcr.microsoft.com/windows/servercore\nLABEL a=1 `\n      ai.backend.kernelspec=1\n"
        "# Backend.AI kernel labels (cuberun export backendai)\n"
        'LABEL ai.backend.features="batch uid-match" `\n      ai.backend.runtime-type="app"\n',
        id="escape directive: backtick continuations",
    ),
]


@pytest.mark.parametrize(("source", "updates", "expected"), REWRITES)
def test_rewrite_golden(source: str, updates: dict[str, str], expected: str) -> None:
    result = rewrite_dockerfile(source, updates, DEFAULTS)
    assert result.text == expected
    again = rewrite_dockerfile(result.text, updates, DEFAULTS)  # idempotent: nothing added twice
    assert again.text == result.text and not again.added


def test_rewrite_report() -> None:
    source = REWRITES[2].values[0]
    result = rewrite_dockerfile(str(source), {"ai.backend.kernelspec": "1"}, DEFAULTS)
    assert result.kept == {"ai.backend.kernelspec": "1", "ai.backend.features": "batch uid-match"}
    assert result.removed_duplicates == ["ai.backend.features"]
    assert result.added == {"ai.backend.runtime-type": "app"}
    own, inherited, base = final_stage_labels("FROM a AS x\nLABEL ai.backend.role=COMPUTE\nFROM x\nLABEL k=v\n")
    assert own == {"k": "v"} and inherited == {"ai.backend.role": "COMPUTE"} and base == "a"
    with pytest.raises(UsageError, match="no FROM"):
        rewrite_dockerfile("LABEL a=1\n", {}, {})


def test_rewrite_cli_in_place_and_stdout(cli: CLI, tmp_path: Path) -> None:
    original = _d("""
        ARG BASE=nonexistent.invalid/cuberun-test/base:0
        FROM ${BASE}
        LABEL maintainer="x" \\
              ai.backend.runtime-type="python"
        ENTRYPOINT ["python3", "main.py"]
    """)
    write_tree(tmp_path, {"Dockerfile": original})
    proc = cli("export", "backendai", "--dockerfile", str(tmp_path / "Dockerfile"), "--no-inspect", "--base-distro=debian12")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "Dockerfile").read_text() == original  # stdout by default
    assert proc.stdout == original + _d("""
        # Backend.AI kernel labels (cuberun export backendai)
        LABEL ai.backend.kernelspec="1" \\
              ai.backend.envs.corecount="OPENBLAS_NUM_THREADS,OMP_NUM_THREADS,NPROC" \\
              ai.backend.features="batch query uid-match user-input" \\
              ai.backend.base-distro="debian12" \\
              ai.backend.resource.min.cpu="1" \\
              ai.backend.resource.min.mem="1g" \\
              ai.backend.runtime-path="/usr/bin/python3"
    """)
    assert "label ai.backend.runtime-type=python (kept)" in proc.stderr
    out = tmp_path / "Dockerfile"
    proc = cli("export", "backendai", "--dockerfile", str(out), "--output", str(out), "--no-inspect", "--runtime-type=app")
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert 'ai.backend.runtime-type="app"' in text and text.count("ai.backend.runtime-type") == 1
    assert 'ai.backend.features="batch uid-match"' in text
    assert "label ai.backend.runtime-type=app (updated, was python)" in proc.stderr
