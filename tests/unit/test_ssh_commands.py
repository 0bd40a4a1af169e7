"""Golden tests of the ssh runner's pure command builders: the ssh options, the remote command
string and its quoting, the rsync transfers and their filter rules, the remote layout, and the
one-line errors made from ssh/rsync output. Nothing here connects anywhere; the quoting and the
filter rules are also checked by really running /bin/sh and a local rsync on the built strings."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cuberun.errors import UsageError
from cuberun.execute import make_runner
from cuberun.resolve import resolve_task
from cuberun.runners.base import RunOptions
from cuberun.runners.ssh import SSHRunner
from cuberun.runners.ssh.commands import CANCEL_SCRIPT, RUN_WRAPPER
from cuberun.runners.ssh.sync import include_rules, rsync_pattern, rsync_problem, rsync_stats, ssh_problem
from cuberun.spec.load import load_cube

HELLO = """
name: hello_world
docker: {image: "mlcommons/hello_world:0.0.1", build_context: ".", build_file: Dockerfile}
tasks:
  hello:
    parameters:
      inputs: {name: {type: file, default: names/alice.txt}}
      outputs: {chat: {type: file, default: chats/chat_with_alice.txt}}
  train:
    parameters:
      inputs: {data: {type: directory, default: data}}
      outputs: {model: {type: directory, default: model}}
"""

CTL = "/tmp/ctl"
RCUBE = re.compile(r"^\.cuberun/remote/cubes/hello_world-[0-9a-f]{10}$")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("MLCUBE_SYSTEM_SETTINGS", str(tmp_path / "no-mlcube.yaml"))
    monkeypatch.setenv("CUBERUN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CUBERUN_SSH_CONTROL_DIR", CTL)
    yield


def cube_dir(root: Path, name: str = "cube") -> Path:
    d = root / name
    (d / "workspace" / "names").mkdir(parents=True)
    (d / "workspace" / "data").mkdir()
    (d / "workspace" / "names" / "alice.txt").write_text("Alice\n")
    (d / "mlcube.yaml").write_text(HELLO)
    (d / "hello.py").write_text("print('hi')\n")
    return d


def runner_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: dict[str, Any], *, cube: Path | None = None,
               options: RunOptions | None = None, params: tuple[str, ...] = ()) -> SSHRunner:
    tmp_path.mkdir(parents=True, exist_ok=True)
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump({"platforms": {"remote": {"runner": "ssh", **config}}}))
    monkeypatch.setenv("CUBERUN_SETTINGS", str(settings))
    c = load_cube(str(cube or cube_dir(tmp_path)), overrides=params)
    runner = make_runner(c, "remote", options or RunOptions(), params)
    assert isinstance(runner, SSHRunner)
    return runner


def task_of(runner: SSHRunner, name: str = "hello", overrides: dict[str, str] | None = None) -> Any:
    return resolve_task(runner.cube, name, overrides or {}, check_inputs=False)


# -------------------------------------------------------------------------------- ssh options


def control(runner: SSHRunner) -> list[str]:
    return ["-o", "ControlMaster=auto", "-o", f"ControlPath={CTL}/{runner.target.tag()}-%C", "-o", "ControlPersist=60"]


def test_default_ssh_options_leave_host_key_checking_to_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = runner_for(tmp_path, monkeypatch, {"host": "gpu-box"})
    assert r.ssh_base() == ["ssh", "-o", "ConnectTimeout=15", *control(r)]
    assert not any("StrictHostKeyChecking" in a for a in r.ssh_base())
    assert r.ssh_argv(["true"]) == [*r.ssh_base(), "--", "gpu-box", "true"]
    assert re.fullmatch(r"[0-9a-f]{8}", r.target.tag())


def test_all_connection_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = runner_for(tmp_path, monkeypatch, {
        "host": "10.0.0.5", "port": 2200, "ssh_config": "/etc/cuberun/ssh config", "known_hosts": "/k/known_hosts",
        "strict_host_key_checking": True, "ssh_options": ["ServerAliveInterval=30", "ProxyJump=bastion"], "connect_timeout": 5,
        "authentication": {"identify_file": "/keys/id_ed25519", "user": "ml"}, "control_persist": 300,
    })
    assert r.ssh_base() == [
        "ssh", "-F", "/etc/cuberun/ssh config", "-o", "ServerAliveInterval=30", "-o", "ProxyJump=bastion", "-p", "2200", "-l", "ml",
        "-i", "/keys/id_ed25519", "-o", "UserKnownHostsFile=/k/known_hosts", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=5",
        "-o", "ControlMaster=auto", "-o", f"ControlPath={CTL}/{r.target.tag()}-%C", "-o", "ControlPersist=300",
    ]
    assert r.target.where() == "ml@10.0.0.5 (port 2200)"


def test_top_level_keys_win_over_the_reference_authentication(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = runner_for(tmp_path, monkeypatch, {"host": "h", "user": "me", "identity_file": "~/k",
                                           "authentication": {"identity_file": "/other", "user": "other"},
                                           "ssh_options": {"Compression": "yes"}, "multiplex": False, "connect_timeout": 0})
    assert r.ssh_base() == ["ssh", "-o", "Compression=yes", "-l", "me", "-i", os.path.expanduser("~/k")]


def test_strict_no_only_when_the_user_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = runner_for(tmp_path, monkeypatch, {"host": "h", "strict_host_key_checking": "accept-new", "multiplex": False})
    assert "StrictHostKeyChecking=accept-new" in r.ssh_base()


def test_different_connection_settings_never_share_a_control_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = runner_for(tmp_path / "a", monkeypatch, {"host": "h"})
    b = runner_for(tmp_path / "b", monkeypatch, {"host": "h", "known_hosts": "/elsewhere"})
    assert a.control_path() != b.control_path()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "has no host"),
        ({"host": "-oProxyCommand=x"}, "not a valid host"),
        ({"host": "h", "authentication": {"identity": "x"}}, "authentication.identity: unknown key"),
        ({"host": "h", "ssh_options": ["-v"]}, "is not an ssh option"),
        ({"host": "h", "remote_env": {"1BAD": "x"}}, "not an environment variable name"),
    ],
)
def test_bad_config_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: dict[str, Any], message: str) -> None:
    r = runner_for(tmp_path, monkeypatch, config)
    with pytest.raises(UsageError, match=re.escape(message)):
        r.run_steps(task_of(r))


def test_reference_interpreter_virtualenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = runner_for(tmp_path, monkeypatch, {"host": "h", "interpreter": {
        "type": "virtualenv", "python": "/opt/py3.11/bin/python3", "location": "~/envs", "name": "mlcube",
        "requirements": "mlcube mlcube-docker==0.0.9 numpy"}})
    assert r.mode == "venv"
    assert r.venv == "envs/mlcube"
    assert r.python == "/opt/py3.11/bin/python3"
    assert r.cuberun_argv() == ["envs/mlcube/bin/cuberun"]
    assert r._extra_requirements() == ["numpy"]  # the reference's own packages are not ours to install


def test_installed_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = runner_for(tmp_path, monkeypatch, {"host": "h", "cuberun_path": "/opt/cr/bin/python -m cuberun"})
    assert r.mode == "installed"
    assert r.cuberun_argv() == ["/opt/cr/bin/python", "-m", "cuberun"]


# -------------------------------------------------------------------------------- remote command


def test_remote_run_command_forwards_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    options = RunOptions(gpus="device=0,1", network="none", memory="4g", cpus="0-3", mount="rw", allow_missing_inputs=True)
    r = runner_for(tmp_path, monkeypatch, {"host": "h", "platform": "docker", "cuberun": "venv", "remote_env": {"API_TOKEN": "s3cret", "X": 1}},
                   options=options, params=("docker.image=me/hello:2", "runner.port=22"))
    rt = task_of(r)
    plan = r.remote_plan(rt)
    assert RCUBE.match(plan.rcube)
    assert plan.rws == plan.rcube + "/workspace"
    pid = r.pid_file(plan, rt)
    assert re.fullmatch(re.escape(plan.rcube) + r"/\.cuberun/pids/hello-[0-9a-f]{8}\.pid", pid)
    expected = [
        "/bin/sh", "-c", RUN_WRAPPER, "sh", pid, "env", "API_TOKEN=s3cret", "X=1",
        ".cuberun/remote/venv/bin/cuberun", "run", f"--mlcube={plan.rcube}", "--task=hello", "--platform=docker",
        f"--workspace={plan.rws}", "--no-deps", "--force", "--handshake=1", "-Pdocker.image=me/hello:2",
        "--gpus=device=0,1", "--network=none", "--memory=4g", "--cpu=0-3", "--mount=rw", "--allow-missing-inputs",
        "name=names/alice.txt", "chat=chats/chat_with_alice.txt",
    ]
    assert r.remote_run_argv(rt, plan) == expected
    # what --dry-run and the run record show hides secret-looking values
    shown = r.run_steps(rt)[1]
    assert shown.purpose == "run" and "API_TOKEN=***" in shlex.split(shown.argv[-1])
    assert "s3cret" not in json.dumps([s.to_json() for s in r.run_steps(rt)])
    # the remote command is one shell-quoted string after the destination
    ssh = r.ssh_argv(expected)
    assert ssh[:-2] == [*r.ssh_base(), "--"] and ssh[-2] == "h"
    assert shlex.split(ssh[-1]) == expected


def test_cancel_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = runner_for(tmp_path, monkeypatch, {"host": "h"})
    rt = task_of(r)
    plan = r.remote_plan(rt)
    assert r.cancel_argv(plan, rt)[-1] == shlex.join(["/bin/sh", "-c", CANCEL_SCRIPT, "sh", r.pid_file(plan, rt)])


NASTY = [
    "my names/it's a file.txt",
    'quote"d $(touch PWNED) `touch PWNED`; touch PWNED & | > < \\ * ? ~ #.txt',
    "~tilde/and $HOME and ${HOME} and $1.txt",
    "new\nline.txt",
]


def fake_cuberun(tmp_path: Path) -> Path:
    script = tmp_path / "bin" / "fake cuberun"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("weird", NASTY)
def test_remote_shell_receives_every_argument_literally(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, weird: str) -> None:
    """Run the exact remote command string through /bin/sh, as the remote login shell would."""
    fake = fake_cuberun(tmp_path)
    root = tmp_path / "remote root's $(touch PWNED)"
    cube = cube_dir(tmp_path, "cube dir 'x'")
    r = runner_for(tmp_path, monkeypatch, {"host": "h", "cuberun_path": shlex.join([str(fake)]), "remote_root": str(root),
                                           "remote_env": {"NOTE": "a 'b' $(touch PWNED)"}}, cube=cube,
                   params=(f"docker.image=img; touch PWNED {weird}",))
    rt = task_of(r, overrides={"name": weird, "chat": f"out/{weird}"})
    plan = r.remote_plan(rt)
    remote = r.ssh_argv(r.remote_run_argv(rt, plan))[-1]
    home = tmp_path / "home"
    home.mkdir()
    proc = subprocess.run(["/bin/sh", "-c", remote], cwd=home, capture_output=True, text=True, env={**os.environ, "HOME": str(home)}, check=False)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got[:8] == ["run", f"--mlcube={plan.rcube}", "--task=hello", "--platform=local", f"--workspace={plan.rws}", "--no-deps", "--force",
                       "--handshake=1"]
    assert f"-Pdocker.image=img; touch PWNED {weird}" in got
    # values are the locally resolved paths (the local side expanded $VARS once), relative to the workspace
    name, chat = plan.items
    assert got[-2:] == [f"name={name.value}", f"chat={chat.value}"]
    assert name.rel == os.path.relpath(name.local, plan.ws) and chat.rel is not None and chat.rel.startswith("out/")
    assert name.value == name.rel or name.value == "./" + name.rel
    assert not list(tmp_path.rglob("PWNED")) and not (Path.cwd() / "PWNED").exists()
    # the wrapper recorded the pid where the cancel command looks for it
    assert Path(r.pid_file(plan, rt)).read_text().strip().isdigit()


def test_external_paths_and_relative_remote_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = runner_for(tmp_path, monkeypatch, {"host": "h"})
    elsewhere = tmp_path / "data dir"
    elsewhere.mkdir()
    (elsewhere / "bob.txt").write_text("Bob\n")
    rt = task_of(r, overrides={"name": str(elsewhere / "bob.txt"), "chat": str(tmp_path / "out" / "chat.txt")})
    plan = r.remote_plan(rt)
    name, chat = plan.items
    assert name.external and chat.external
    assert re.fullmatch(re.escape(plan.rcube) + r"/\.cuberun/external/[0-9a-f]{12}/bob\.txt", name.remote)
    # the remote cuberun expands ~ to the remote $HOME: external outputs must be absolute there
    assert name.value == "~/" + name.remote and chat.value == "~/" + chat.remote
    argvs = r.upload_argvs(plan)
    ext = argvs[-1]
    assert ext[-2:] == [str(elsewhere / "bob.txt"), f"h:{os.path.dirname(name.remote)}/"]
    assert f"--rsync-path=mkdir -p -- {os.path.dirname(name.remote)} && rsync" in ext
    fetch = r.fetch_argvs(plan, rt)
    assert fetch[-1][-2:] == [f"h:{chat.remote}", str(tmp_path / "out") + "/"]


def test_absolute_remote_root_gives_absolute_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = runner_for(tmp_path, monkeypatch, {"host": "h", "remote_root": "/scratch/me/cr"})
    rt = task_of(r, overrides={"chat": str(tmp_path / "elsewhere" / "c.txt")})
    plan = r.remote_plan(rt)
    assert plan.rcube.startswith("/scratch/me/cr/cubes/hello_world-")
    assert plan.items[1].value == plan.items[1].remote and plan.items[1].value.startswith("/scratch/")


def test_tilde_remote_root_is_under_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = runner_for(tmp_path, monkeypatch, {"host": "h", "remote_root": "~/work/cr"})
    assert r.remote_plan().rcube.startswith("work/cr/cubes/")


def test_workspace_outside_the_cube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cube = cube_dir(tmp_path)
    ws = tmp_path / "my ws"
    (ws / "names").mkdir(parents=True)
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump({"platforms": {"remote": {"runner": "ssh", "host": "h"}}}))
    monkeypatch.setenv("CUBERUN_SETTINGS", str(settings))
    c = load_cube(str(cube), workspace=str(ws))
    r = make_runner(c, "remote", RunOptions())
    assert isinstance(r, SSHRunner)
    plan = r.remote_plan(task_of(r))
    assert plan.ws_rel is None
    assert re.fullmatch(re.escape(plan.rcube) + r"/\.cuberun/workspaces/my_ws-[0-9a-f]{10}", plan.rws)
    sources, inputs = r.upload_argvs(plan)
    assert sources[-2:] == [str(cube.resolve()) + "/", f"h:{plan.rcube}/"]
    assert inputs[-2:] == [str(ws.resolve()) + "/", f"h:{plan.rws}/"]
    assert [a for a in inputs if a.startswith("--filter=")] == [
        "--filter=- /.cuberun/", "--filter=+ /names/", "--filter=+ /names/alice.txt", "--filter=+ /names/alice.txt/***",
        "--filter=+ /chats/", "--filter=+ /chats/chat_with_alice.txt", "--filter=+ /chats/chat_with_alice.txt/***", "--filter=- *",
    ]


# -------------------------------------------------------------------------------- rsync


def test_upload_golden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = runner_for(tmp_path, monkeypatch, {"host": "h", "rsync_excludes": ["*.ckpt"], "multiplex": False, "connect_timeout": 0})
    rt = task_of(r)
    plan = r.remote_plan(rt)
    (argv,) = r.upload_argvs(plan)
    assert argv == [
        "rsync", "-a", "--partial", "--protect-args", "-e", "ssh", "--delete", "--copy-unsafe-links",
        "--stats", "--info=progress2", "--no-inc-recursive",  # the run record's numbers; live progress of the whole transfer
        f"--rsync-path=mkdir -p -- {plan.rcube} && rsync",
        "--filter=- /workspace/.cuberun/",
        "--filter=+ /workspace/", "--filter=+ /workspace/names/", "--filter=+ /workspace/names/alice.txt",
        "--filter=+ /workspace/names/alice.txt/***",
        "--filter=+ /workspace/chats/", "--filter=+ /workspace/chats/chat_with_alice.txt",
        "--filter=+ /workspace/chats/chat_with_alice.txt/***",
        "--filter=- /workspace/**",
        "--filter=- .git/", "--filter=- .hg/", "--filter=- .svn/", "--filter=- __pycache__/", "--filter=- *.pyc", "--filter=- .cuberun/",
        "--filter=- .venv/", "--filter=- .mypy_cache/", "--filter=- .pytest_cache/", "--filter=- .ruff_cache/",
        "--filter=- .ipynb_checkpoints/", "--filter=- *.sif", "--filter=- *.simg", "--filter=- *.ckpt",
        str(r.cube.root.resolve()) + "/", f"h:{plan.rcube}/",
    ]


def test_fetch_golden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = runner_for(tmp_path, monkeypatch, {"host": "h", "multiplex": False, "connect_timeout": 0})
    rt = task_of(r, "train")
    plan = r.remote_plan(rt)
    (argv,) = r.fetch_argvs(plan, rt, "20261122-101010-train-abcdef")
    assert argv == [
        "rsync", "-a", "--partial", "--protect-args", "-e", "ssh", "--delete", "--ignore-missing-args",
        "--stats", "--info=progress2", "--no-inc-recursive",
        f"--rsync-path=rm -f -- {r.pid_file(plan, rt)}; rsync", "--relative",
        "--filter=+ /.cuberun/", "--filter=+ /.cuberun/runs/", "--filter=+ /.cuberun/runs/20261122-101010-train-abcdef/***",
        "--filter=- /.cuberun/**",
        f"h:{plan.rws}/./model", f"h:{plan.rws}/./.cuberun/runs/20261122-101010-train-abcdef", plan.ws + "/",
    ]


def test_ipv6_host_in_rsync_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = runner_for(tmp_path, monkeypatch, {"host": "fd00::5"})
    assert r.rsync_spec("/x") == "[fd00::5]:/x"


def test_patterns_escape_wildcards_only_when_rsync_would_read_them() -> None:
    assert rsync_pattern("a\\b c") == "a\\b c"
    assert rsync_pattern("a*b\\c") == "a\\*b\\\\c"
    assert rsync_pattern("a\\b/", wildcards=True) == "a\\\\b/"
    assert include_rules(["x/y [1].txt", "x/z"]) == [
        "+ /x/", "+ /x/y \\[1].txt", "+ /x/y \\[1].txt/***", "+ /x/z", "+ /x/z/***",
    ]


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")
def test_upload_rules_with_a_real_local_rsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same filter rules, run by rsync between two local directories: sources and the task's
    items arrive; the rest of the workspace, VCS data and caches do not; what only the remote
    has (other runs' outputs, its records, external inputs) survives --delete."""
    cube = cube_dir(tmp_path)
    ws = cube / "workspace"
    (ws / "names" / "bob.txt").write_text("Bob\n")  # not an input of this task
    (ws / "data" / "big [1].bin").write_bytes(b"x" * 10)
    (ws / "model").mkdir()
    (ws / ".cuberun" / "runs").mkdir(parents=True)
    (cube / ".git").mkdir()
    (cube / ".git" / "HEAD").write_text("ref\n")
    (cube / "__pycache__").mkdir()
    (cube / "__pycache__" / "x.pyc").write_bytes(b"0")
    r = runner_for(tmp_path, monkeypatch, {"host": "h"}, cube=cube)
    rt = task_of(r, "train")
    plan = r.remote_plan(rt)
    dest = tmp_path / "remote"
    (dest / "workspace" / "chats").mkdir(parents=True)
    (dest / "workspace" / "chats" / "old.txt").write_text("remote only\n")
    (dest / "workspace" / "data").mkdir()
    (dest / "workspace" / "data" / "stale.bin").write_text("deleted locally\n")
    (dest / ".cuberun" / "external").mkdir(parents=True)
    (dest / "stale_source.py").write_text("gone locally\n")
    (argv,) = r.upload_argvs(plan)
    e = argv.index("-e")
    local = [a for a in argv[:e] + argv[e + 2 : -1] if not a.startswith("--rsync-path")] + [str(dest) + "/"]
    subprocess.run(local, check=True, capture_output=True)
    got = sorted(str(p.relative_to(dest)) for p in dest.rglob("*"))
    assert got == sorted([
        ".cuberun", ".cuberun/external", "hello.py", "mlcube.yaml", "workspace", "workspace/chats", "workspace/chats/old.txt",
        "workspace/data", "workspace/data/big [1].bin", "workspace/model",
    ])


# -------------------------------------------------------------------------------- errors


WHERE = "cuberun-local (port 2222)"


@pytest.mark.parametrize(
    ("stderr", "start"),
    [
        ("ssh: connect to host 127.0.0.1 port 1: Connection refused\n", "cannot connect to cuberun-local (port 2222): connection refused"),
        ("ssh: connect to host 10.9.9.9 port 22: Connection timed out\n", "cannot connect to cuberun-local (port 2222): connection timed out"),
        ("Connection timed out during banner exchange\n", "cannot connect to cuberun-local (port 2222): connection timed out"),
        ("ssh: connect to host 10.1.1.1 port 22: No route to host\n", "host cuberun-local (port 2222) is unreachable"),
        ("ssh: Could not resolve hostname nowhere.invalid: Name or service not known\n", "cannot resolve the host name"),
        ("root@127.0.0.1: Permission denied (publickey).\n", "authentication refused by cuberun-local (port 2222)"),
        ("No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\nHost key verification failed.\n",
         "host key verification failed for cuberun-local (port 2222)"),
        ("@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\nHost key verification failed.\n", "host key verification failed"),
        ("kex_exchange_identification: read: Connection reset by peer\n", "the connection to cuberun-local (port 2222) was closed"),
        ("/tmp/x/ssh_config: line 3: Bad configuration option: hostnam\n", "ssh rejected its configuration"),
    ],
)
def test_ssh_failures_become_one_line(stderr: str, start: str) -> None:
    problem = ssh_problem(stderr, WHERE, "ssh cuberun-local true")
    assert problem is not None
    assert problem.message.startswith(start)
    assert "\n" not in problem.message + problem.hint and problem.hint


def test_host_key_hint_never_suggests_turning_checking_off() -> None:
    problem = ssh_problem("Host key verification failed.\n", WHERE, "ssh h true")
    assert problem is not None
    assert "known_hosts" in problem.hint and "StrictHostKeyChecking=no" not in problem.hint


def test_task_output_is_not_an_ssh_failure() -> None:
    assert ssh_problem("Traceback ...\nValueError: bad value\n", WHERE, "ssh h true") is None


@pytest.mark.parametrize(
    ("stderr", "code", "direction", "start"),
    [
        ('rsync: [receiver] write failed on "/r/x": No space left on device (28)\n', 11, "upload", "the remote host is out of disk space"),
        ('rsync: write failed on "/l/x": No space left on device (28)\n', 11, "download", "this machine is out of disk space"),
        ("bash: line 1: rsync: command not found\nrsync: connection unexpectedly closed\n", 12, "upload", "rsync is not installed on"),
        ("sh: 1: /opt/rsync: not found\n", 127, "upload", "rsync is not installed on"),
    ],
)
def test_rsync_failures_become_one_line(stderr: str, code: int, direction: str, start: str) -> None:
    problem = rsync_problem(stderr, code, WHERE, direction)
    assert problem is not None and problem.message.startswith(start), problem


def test_rsync_stats_are_summed() -> None:
    text = (
        "Number of regular files transferred: 1\nTotal transferred file size: 209,715,200 bytes\nTotal bytes sent: 209,767,018\n"
        "Total bytes received: 50\n\nNumber of regular files transferred: 0\nTotal transferred file size: 0 bytes\n"
        "Total bytes sent: 610\nTotal bytes received: 31\n"
    )
    assert rsync_stats(text) == {"files": 1, "transferred_bytes": 209715200, "bytes_sent": 209767628, "bytes_received": 81}


def test_dry_run_needs_no_connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = runner_for(tmp_path, monkeypatch, {"host": "127.0.0.1", "port": 1, "cuberun": "venv"})
    steps = r.configure_steps() + r.run_steps(task_of(r))
    purposes = [s.purpose for s in steps]
    assert purposes[-3:] == ["sync", "run", "fetch"]
    assert "install" in purposes and "configure" in purposes
    assert not Path(CTL).exists() or Path(CTL).is_dir()


def test_fingerprint_ignores_the_control_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = runner_for(tmp_path, monkeypatch, {"host": "h"})
    rt = task_of(r)
    before = r.fingerprint(rt)
    monkeypatch.setenv("CUBERUN_SSH_CONTROL_DIR", "/tmp/other")
    assert r.fingerprint(rt) == before
    assert before["host"] == "h"


@pytest.mark.parametrize("shell", ["/bin/sh", "/bin/dash", "/bin/bash"])
def test_probe_script_answers_the_same_in_every_shell(shell: str) -> None:
    """The remote probe for rsync/cuberun: dash's `command -v` exits 127 for a missing program,
    bash's 1; the probe names its own answer so both read the same (the CI failure of
    test_remote_rsync_missing: dash's 127 was read as "present")."""
    from cuberun.runners.ssh.connection import PROBE_ABSENT, PROBE_SCRIPT

    if not Path(shell).exists():
        pytest.skip(f"{shell} is not on this machine")
    missing = subprocess.run([shell, "-c", PROBE_SCRIPT, "sh", "/nonexistent/rsync"], timeout=30, check=False)
    absent_name = subprocess.run([shell, "-c", PROBE_SCRIPT, "sh", "no-such-program-cuberun"], timeout=30, check=False)
    present = subprocess.run([shell, "-c", PROBE_SCRIPT, "sh", "sh"], timeout=30, check=False)
    assert (missing.returncode, absent_name.returncode, present.returncode) == (PROBE_ABSENT, PROBE_ABSENT, 0)
