"""The CLI commands other than run, through the real `python -m cuberun`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from cuberun import __version__
from tests.conftest import CLI, EXAMPLES, write_tree


def test_version_and_help(cli: CLI) -> None:
    got = cli("--version")
    assert (got.returncode, got.stdout) == (0, f"cuberun {__version__}\n")
    got = cli("--help")
    assert got.returncode == 0
    for command in ("run", "configure", "describe", "show-config", "inspect", "validate", "create", "config", "runs"):
        assert command in got.stdout


def test_python_dash_m_and_no_args(cli: CLI) -> None:
    got = cli()
    assert got.returncode in (0, 2) and "Usage" in got.stdout + got.stderr


def test_describe_human_and_json(cli: CLI) -> None:
    got = cli("describe", f"--mlcube={EXAMPLES / 'mnist'}")
    assert got.returncode == 0, got.stderr
    assert got.stdout.splitlines()[0] == "mnist:0.1"
    assert "    input  data_config = data.yaml  (file, inferred)" in got.stdout  # untyped: a file, as run decides
    assert "    input  data_dir = data/  (directory)" in got.stdout
    data = json.loads(cli("describe", f"--mlcube={EXAMPLES / 'mnist'}", "--json").stdout)
    assert list(data["tasks"]) == ["download", "train", "evaluate"]
    assert data["tasks"]["download"]["inputs"]["data_config"] == {"type": "file", "default": "data.yaml", "inferred": True}
    assert data["tasks"]["train"]["outputs"]["model_dir"] == {"type": "directory", "default": "model/"}
    assert data["platform"]["host_memory_gb"] == 2
    assert data["workspace"] == str(EXAMPLES / "mnist" / "workspace")


def test_describe_accepts_the_yaml_file_and_workspace(cli: CLI, tmp_path: Path) -> None:
    got = cli("describe", f"--mlcube={EXAMPLES / 'hello_world' / 'mlcube.yaml'}", f"--workspace={tmp_path / 'w s'}", "--json")
    assert json.loads(got.stdout)["workspace"] == str(tmp_path / "w s")


def test_unknown_top_level_key_warns(cli: CLI, tmp_path: Path) -> None:
    write_tree(tmp_path, {"mlcube.yaml": "name: x\nmetadata_extra: {a: 1}\ntasks: {t: {}}\n"})
    got = cli("validate")
    assert got.returncode == 0
    assert got.stderr == f"cuberun: warning: {tmp_path}/mlcube.yaml:2:1: metadata_extra: unknown top-level key 'metadata_extra' is ignored\n"
    assert got.stdout == f"{tmp_path}/mlcube.yaml: ok (1 task, 1 warning)\n"


def test_show_config_unresolved_and_resolved(cli: CLI, tmp_path: Path) -> None:
    write_tree(tmp_path, {"mlcube.yaml": "name: demo\nversion: 1.0\ndocker: {image: 'repo/${name}:${version}'}\nlocal: {command: python3 x.py}\ntasks: {t: {}}\n"})
    raw = yaml.safe_load(cli("show-config").stdout)
    assert raw["docker"]["image"] == "repo/${name}:${version}"
    assert raw["runner"] == {"runner": "local", "command": "python3 x.py", "packages": [], "env": "managed", "env_vars": {}, "workdir": None,
                             "requirements": None, "python": None, "relax_pins": False,
                             "derived": {"from": "local section", "command": ["python3", "x.py"], "workdir": str(tmp_path), "env": {}}}
    resolved = yaml.safe_load(cli("show_config", "--resolve", "-Pversion=2.10").stdout)
    assert resolved["docker"]["image"] == "repo/demo:2.10"
    assert resolved["workspace"] == str(tmp_path / "workspace")


def test_inspect_local_json_only_on_stdout(cli: CLI, tmp_path: Path) -> None:
    write_tree(tmp_path, {"mlcube.yaml": "name: demo\nlocal: {command: python3 x.py, env: current}\ntasks: {t: {}}\n"})
    got = cli("inspect", "--platform=local")
    assert got.returncode == 0
    info = json.loads(got.stdout)
    assert info["runner"] == "local" and info["command"] == ["python3", "x.py"]
    out = tmp_path / "info.yaml"
    assert cli("inspect", "--format=yaml", f"--output-file={out}").stdout == ""
    assert yaml.safe_load(out.read_text())["workdir"] == str(tmp_path)


def test_create_scaffolds_a_runnable_cube(cli: CLI, tmp_path: Path) -> None:
    got = cli("create", "my_cube", f"--dir={tmp_path}", "--task=train")
    assert got.returncode == 0, got.stderr
    cube = tmp_path / "my_cube"
    assert sorted(p.name for p in cube.iterdir()) == [".dockerignore", "Dockerfile", "README.md", "mlcube.yaml", "my_cube.py", "requirements.txt", "workspace"]
    assert cli("validate", f"--mlcube={cube}").returncode == 0
    run = cli("run", f"--mlcube={cube}", "--task=train", "-Plocal.env=current")
    assert run.returncode == 0, run.stderr
    result = json.loads((cube / "workspace" / "output" / "result.json").read_text())
    assert result["status"] == "ok"
    again = cli("create", "my_cube", f"--dir={tmp_path}")
    assert again.returncode == 2 and "already exists and is not empty" in again.stderr
    bad = cli("create", "1bad name", f"--dir={tmp_path}")
    assert bad.returncode == 2 and bad.stderr.startswith("cuberun: error: '1bad name' is not a valid cube name")


def test_config_operations(cli: CLI, tmp_path: Path) -> None:
    settings = tmp_path / "settings" / "settings.yaml"
    assert cli("config", "path").stdout.strip() == str(settings)
    assert cli("config", "create-platform", "local", "host2").returncode == 0
    assert yaml.safe_load(settings.read_text())["platforms"]["host2"]["runner"] == "local"
    assert cli("config", "set", "platforms.host2.env", "current").returncode == 0
    assert cli("config", "get", "platforms.host2.env").stdout == "current\n"
    assert cli("config", "copy-platform", "host2", "host3").returncode == 0
    assert cli("config", "rename-platform", "host3", "host4").returncode == 0
    data = yaml.safe_load(settings.read_text())["platforms"]
    assert set(data) == {"host2", "host4"} and data["host4"]["env"] == "current"
    assert cli("config", "set", "default_platform", "host4").returncode == 0
    assert cli("config", "remove-platform", "host4").returncode == 0
    assert "default_platform" not in yaml.safe_load(settings.read_text())
    listing = json.loads(cli("config", "list", "--json").stdout)
    assert listing["origin"]["host2"] == str(settings) and listing["origin"]["local"] == "built-in"
    # errors
    got = cli("config", "get", "platforms.nope")
    assert (got.returncode, got.stderr) == (2, "cuberun: error: no settings key 'platforms.nope'. Hint: expected one of 'local', 'docker', 'podman', 'singularity', "
                                  "'apptainer', 'charliecloud', 'ssh', 'slurm', 'k8s', 'kubeflow', 'backendai', 'host2'\n")
    got = cli("config", "set", "platforms.host2.comand", "x")
    assert got.returncode == 2 and "runner 'local' has no setting 'comand'. Hint: did you mean 'command'?" in got.stderr
    got = cli("config", "remove-platform", "docker")
    assert got.returncode == 2 and "is not defined in" in got.stderr
    got = cli("config", "create-platform", "nosuchrunner", "x")
    assert got.returncode == 2 and "unknown runner 'nosuchrunner'" in got.stderr


def test_reference_settings_platforms_are_read(cli: CLI, tmp_path: Path) -> None:
    ref = tmp_path / "mlcube.yaml.settings"
    ref.write_text("platforms:\n  myhost: {runner: local, env: current, '--network': null}\n")
    write_tree(tmp_path / "cube", {"mlcube.yaml": "name: demo\nlocal: {command: python3 x.py}\ntasks: {t: {}}\n"})
    got = cli("show-config", f"--mlcube={tmp_path / 'cube'}", "--platform=myhost", env={"MLCUBE_SYSTEM_SETTINGS": str(ref)})
    assert got.returncode == 0, got.stderr
    runner = yaml.safe_load(got.stdout)["runner"]
    assert runner["env"] == "current"


def test_runs_lists_records(cli: CLI, tmp_path: Path) -> None:
    cube = tmp_path / "hello"
    shutil.copytree(EXAMPLES / "hello_world", cube)
    assert cli("run", f"--mlcube={cube}", "--task=hello").returncode == 0
    assert cli("run", f"--mlcube={cube}", "--task=bye").returncode == 0
    runs = json.loads(cli("runs", f"--mlcube={cube}", "--json").stdout)
    assert [r["task"] for r in runs] == ["hello", "bye"]
    assert all(r["status"] == "succeeded" and r["exit_code"] == 0 for r in runs)
    only = json.loads(cli("runs", f"--workspace={cube / 'workspace'}", "--task=bye", "--json").stdout)
    assert [r["task"] for r in only] == ["bye"]
    text = cli("runs", f"--mlcube={cube}").stdout
    header, *rows = text.splitlines()
    assert header.split() == ["RUN", "TASK", "PLATFORM", "STATUS", "EXIT", "SECONDS", "STARTED"]
    assert [row.split()[1:5] for row in rows] == [["hello", "local", "succeeded", "0"], ["bye", "local", "succeeded", "0"]]
    for column in ("TASK", "PLATFORM", "STATUS", "STARTED"):  # every column starts where its heading does
        at = header.index(column)
        assert all(row[at - 1] == " " and row[at] != " " for row in rows), (column, text)
    for column in ("EXIT", "SECONDS"):  # numbers are right-aligned under their heading
        end = header.index(column) + len(column)
        assert all(row[end - 1] != " " and row[end] == " " for row in rows), (column, text)


def test_show_finds_a_run_by_any_unique_part_of_its_id(cli: CLI, tmp_path: Path) -> None:
    cube = tmp_path / "hello"
    shutil.copytree(EXAMPLES / "hello_world", cube)
    assert cli("run", f"--mlcube={cube}", "--task=hello").returncode == 0
    assert cli("run", f"--mlcube={cube}", "--task=bye").returncode == 0
    runs = json.loads(cli("runs", f"--mlcube={cube}", "--json").stdout)
    hello_id = runs[0]["run_id"]
    for part in ("hello", hello_id, hello_id[-6:], hello_id[9:15] + "-hel"):  # a middle part, the task name, a suffix
        got = cli("show", f"--mlcube={cube}", part, "--json")
        assert got.returncode == 0, (part, got.stderr)
        assert json.loads(got.stdout)["run_id"] == hello_id
    got = cli("show", f"--mlcube={cube}", "-")  # in both ids
    assert got.returncode == 2 and "run id '-' is ambiguous: 2 runs match" in got.stderr and hello_id in got.stderr
    got = cli("show", f"--mlcube={cube}", "nosuch")
    assert got.returncode == 2 and "no run 'nosuch'" in got.stderr


def test_config_help_example_works_on_a_fresh_install(cli: CLI, tmp_path: Path) -> None:
    help_text = cli("config", "--help").stdout
    assert "e.g. platforms.docker.docker" in " ".join(help_text.split())
    got = cli("config", "get", "platforms.docker.docker")  # no settings file: the runner's default
    assert (got.returncode, got.stdout, got.stderr) == (0, "docker\n", "")
    assert cli("config", "get", "platforms.podman.docker").stdout == "podman\n"
    assert cli("config", "get", "platforms.local.env").stdout == "managed\n"
    assert not (tmp_path / "settings").exists()  # reading never writes
    set_help = " ".join(cli("config", "set", "--help").stdout.split())
    assert "platforms.docker.docker podman" in set_help
    assert cli("config", "set", "platforms.docker.docker", "podman").returncode == 0
    assert cli("config", "get", "platforms.docker.docker").stdout == "podman\n"


def test_dry_run_escapes_control_characters(cli: CLI, tmp_path: Path) -> None:
    nasty = "ws\x1b[2J\nrm -rf x\a"
    write_tree(tmp_path, {"mlcube.yaml": "name: demo\nlocal: {command: python3 x.py, env: current}\n"
                                         "tasks: {t: {parameters: {outputs: {o: {type: directory, default: out/}}}}}\n"})
    got = cli("run", f"--workspace={tmp_path / nasty}", "--dry-run")
    assert got.returncode == 0, got.stderr
    assert not any(ord(ch) < 0x20 and ch != "\n" for ch in got.stdout), repr(got.stdout)
    line = got.stdout.strip()
    assert "\n" not in line and "$'" in line
    import subprocess

    echoed = subprocess.run(["bash", "-c", "printf '%s\\0' " + line.split(" && ", 1)[1].split(" ", 2)[2]], capture_output=True, text=True)
    assert echoed.stdout.split("\0")[1] == f"--o={tmp_path / nasty}/out"  # pasted into bash: the same argument
