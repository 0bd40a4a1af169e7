"""The run policy (cuberun.policy) mapped onto container engines: what each runner reads from
its config to decide the policy, and the flags that enforce it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cuberun.policy import OFF, Policy, decide
from cuberun.runners.argv import tokens as as_tokens

if TYPE_CHECKING:
    from collections.abc import Sequence

    from cuberun.resolve import Mount, ResolvedTask
    from cuberun.runners.docker import DockerRunner

PRIVATE_TMP = "/tmp:rw,exec,mode=1777"


def _source(raw: dict[str, Any], key: str) -> str:
    return "cube" if key in raw else "settings"


def docker_policy(runner: DockerRunner, task: ResolvedTask) -> Policy:
    cfg = runner.config
    raw = runner.cube.raw_section(runner.section or "docker") or {}
    gpus = runner.task_gpus(task)
    raw_args: list[tuple[str, list[str], str]] = []
    for key in ("gpu_args" if gpus.wanted else "cpu_args", "extra_run_args"):
        tokens = as_tokens(cfg.get(key))
        if tokens:
            raw_args.append((key, tokens, _source(raw, key)))
    env_args = cfg.get("env_args")
    if isinstance(env_args, str) and env_args.strip():
        raw_args.append(("env_args", as_tokens(env_args), _source(raw, "env_args")))
    cube_net = next((str(raw[k]) for k in ("--network", "network") if raw.get(k)), None)
    settings_net = None if cube_net else next((str(cfg[k]) for k in ("--network", "network") if cfg.get(k)), None)
    mode_key = cfg.get("--mount_opts") or None
    input_mode = runner.options.mount or mode_key
    mode_source = "cli" if runner.options.mount else _source(raw, "--mount_opts")
    security = runner.options.security or cfg.get("--security-opt")
    sec_source = "cli" if runner.options.security else _source(raw, "--security-opt")
    return decide(
        need_internet=runner.cube.platform.get("need_internet_access") is True,
        cli_network=runner.options.network,
        settings_network=settings_net,
        cube_network=cube_net,
        input_mode=str(input_mode) if input_mode else None,
        input_mode_source=mode_source,
        host_user=(bool(cfg.get("run_as_user", True)), _source(raw, "run_as_user")),
        remove=(bool(cfg.get("remove", True)), _source(raw, "remove")),
        raw_args=raw_args,
        allow_run_args=runner.options.allow_run_args,
        security_opt=(str(security), sec_source) if security else None,
        writable_inputs=[p.name for p in task.params if p.io == "input" and p.opts == "rw"],
    )


def docker_flags(policy: Policy, user_tokens: list[str]) -> list[str]:
    """`docker run` flags that enforce the policy (the user's own --network, if let through, wins)."""
    flags: list[str] = []
    if not any(t == "--network" or t.startswith("--network=") or t == "--net" or t.startswith("--net=") for t in user_tokens):
        if policy.network == OFF:
            flags.append("--network=none")
        elif policy.network is not None:
            flags.append(f"--network={policy.network}")
    if policy.drop_capabilities:
        flags.append("--cap-drop=ALL")
    if policy.no_new_privileges:
        flags.append("--security-opt=no-new-privileges")
    if policy.private_tmp:
        flags.append(f"--tmpfs={PRIVATE_TMP}")
    return flags


# -- singularity / apptainer ---------------------------------------------------------------------
def singularity_policy(runner: Any, task: ResolvedTask) -> Policy:
    """Unprivileged already (the invoking user, no daemon, nothing left behind): the decisions
    are the network and the input mode."""
    cfg = runner.config
    raw = runner.cube.raw_section("singularity") or {}
    cube_net = str(raw["--network"]) if raw.get("--network") else None
    settings_net = None if cube_net else (str(cfg["--network"]) if cfg.get("--network") else None)
    input_mode = runner.options.mount or cfg.get("--mount_opts") or None
    security = runner.options.security or cfg.get("--security")
    return decide(
        need_internet=runner.cube.platform.get("need_internet_access") is True,
        cli_network=runner.options.network,
        settings_network=settings_net,
        cube_network=cube_net,
        input_mode=str(input_mode) if input_mode else None,
        input_mode_source="cli" if runner.options.mount else _source(raw, "--mount_opts"),
        host_user=(True, "cube"),
        remove=(True, "cube"),
        raw_args=(),
        allow_run_args=runner.options.allow_run_args,
        security_opt=(str(security), "cli" if runner.options.security else _source(raw, "--security")) if security else None,
        writable_inputs=[p.name for p in task.params if p.io == "input" and p.opts == "rw"],
    )


def singularity_flags(policy: Policy, user_tokens: list[str]) -> list[str]:
    """`--containall --cleanenv` (private /tmp, home, PID and IPC; no host environment) and
    `--net --network=none` when the network is off; the host's network for `host` or
    need_internet_access, `--net --network=NAME` (a CNI network) for any other name."""
    flags = [f for f in ("--containall", "--cleanenv") if f not in user_tokens]
    if not any(t == "--network" or t.startswith("--network=") for t in user_tokens):
        if policy.network is not None and policy.network != "host":  # host: no network namespace of its own
            flags += ["--net", f"--network={policy.network}"]
    return flags


# -- charliecloud ----------------------------------------------------------------------------------
# ch-run flags a cube's `run_args` may carry without --allow-run-args (`-b`, `--home`, `-w`, `--unsafe`, ... may not)
CH_ALLOWED = ("--set-env", "--unset-env", "--env-no-expand", "-c", "--cd", "-t", "--private-tmp", "-v", "--verbose", "-j", "--join",
              "--join-ct", "--join-tag")
_CH_TAKES_VALUE = {"-c", "--cd", "--unset-env", "--join-ct", "--join-tag"}
# what makes a new, empty network namespace for ch-run (0.31 has no network isolation of its own)


def ch_disallowed(tokens: list[str]) -> list[str]:
    bad: list[str] = []
    skip = False
    for tok in tokens:
        if skip:
            skip = False
            continue
        name = tok.split("=", 1)[0]
        if name in CH_ALLOWED:
            skip = name in _CH_TAKES_VALUE and "=" not in tok
        else:
            bad.append(tok)
    return bad


def charliecloud_policy(runner: Any, task: ResolvedTask) -> Policy:
    """ch-run runs as the invoking user in an unprivileged user namespace (no daemon, nothing
    left behind). The network is off and the inputs are read-only through cuberun's sandbox around
    ch-run (see charliecloud_prefix); `--network=host` or need_internet_access share the host's
    network; ch-run joins no named networks."""
    from cuberun.errors import UsageError
    from cuberun.policy import Relaxation

    cfg = runner.config
    raw = runner.cube.raw_section("charliecloud") or {}
    if runner.options.network and runner.options.network not in (OFF, "host"):
        raise UsageError(f"--network={runner.options.network}: ch-run joins no named networks",
                         "use --network=none (the default: a network namespace of its own, only a loopback that is down) or --network=host")
    policy = decide(
        need_internet=runner.cube.platform.get("need_internet_access") is True,
        cli_network=runner.options.network,
        settings_network=None,
        cube_network=None,
        input_mode=runner.options.mount or None,
        input_mode_source="cli",
        host_user=(True, "cube"),
        remove=(True, "cube"),
        raw_args=(),
        allow_run_args=runner.options.allow_run_args,
        writable_inputs=[p.name for p in task.params if p.io == "input" and p.opts == "rw"],
    )
    more: list[Relaxation] = []
    if cfg.get("clean_env", True) is False:
        more.append(Relaxation("host-env", "the host environment is passed (clean_env: false)", _source(raw, "clean_env")))
    if cfg.get("private_tmp", True) is False:
        more.append(Relaxation("shared-tmp", "the host's /tmp is shared (private_tmp: false)", _source(raw, "private_tmp")))
    if cfg.get("write", False) is True:
        more.append(Relaxation("writable-image", "the image is mounted read-write (write: true)", _source(raw, "write")))
    tokens = as_tokens(cfg.get("run_args"))
    bad = ch_disallowed(tokens)
    if bad:
        source = _source(raw, "run_args")
        if source == "cube" and not runner.options.allow_run_args:
            raise UsageError(f"the cube's charliecloud.run_args has '{' '.join(bad)}', which the default policy does not allow",
                             f"allowed: {', '.join(a for a in CH_ALLOWED if a.startswith('--'))}; pass --allow-run-args to let it through (recorded)")
        more.append(Relaxation("run-args", f"charliecloud.run_args: {' '.join(bad)}" + (" (--allow-run-args)" if source == "cube" else ""), source))
    if not more:
        return policy
    from cuberun.valueclass import replace

    return replace(policy, private_tmp=policy.private_tmp and cfg.get("private_tmp", True) is not False, relaxations=(*policy.relaxations, *more))


def charliecloud_prefix(policy: Policy, mounts: Sequence[Mount]) -> list[str]:
    """What ch-run runs under: cuberun's sandbox script (runners/charliecloud/sandbox.py) when the
    network is off (`--net`: a network namespace of its own) or an input is read-only (`--ro`: bound
    onto itself read-only in a mount namespace of its own, as ch-run 0.31 binds read-write only; a
    writable output inside such an input is bound again writable, `--rw`)."""
    import sys
    from pathlib import Path

    ro = [m.host for m in mounts if m.readonly]
    rw = [m.host for m in mounts if not m.readonly and any(_inside(m.host, r) for r in ro)]
    if policy.network != OFF and not ro:
        return []
    argv = [sys.executable, "-I", "-S", str(Path(__file__).parent / "charliecloud" / "sandbox.py")]
    if policy.network == OFF:
        argv.append("--net")
    for path in dict.fromkeys(ro):
        argv += ["--ro", path]
    for path in dict.fromkeys(rw):
        argv += ["--rw", path]
    return [*argv, "--"]


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


# -- Backend.AI ------------------------------------------------------------------------------------
def backendai_policy(runner: Any, task: ResolvedTask) -> Policy:
    """The closest Backend.AI comes: the session runs as the agent's unprivileged kernel user in
    its own container, removed when the batch session ends. `--network=NAME` attaches the session
    to that project network (`session create --network`). What the API cannot do is recorded
    with the source `runner`: a session without a network (the manager has no such option), and
    read-only inputs (they are unpacked into the read-write vfolder)."""
    from cuberun.policy import Relaxation
    from cuberun.valueclass import replace

    policy = decide(
        need_internet=runner.cube.platform.get("need_internet_access") is True,
        cli_network=runner.options.network,
        settings_network=None,
        cube_network=None,
        input_mode=runner.options.mount or None,
        input_mode_source="cli",
        host_user=(True, "cube"),
        remove=(True, "cube"),
        raw_args=(),
        allow_run_args=runner.options.allow_run_args,
        writable_inputs=[p.name for p in task.params if p.io == "input" and p.opts == "rw"],
    )
    more: list[Relaxation] = []
    if policy.network == OFF:
        more.append(Relaxation("network", "not isolated: Backend.AI sessions keep the cluster's network (no API option turns it off)", "runner"))
    if policy.inputs_read_only and any(p.io == "input" for p in task.params):
        more.append(Relaxation("writable-inputs", "the inputs are unpacked into the read-write vfolder", "runner"))
    if not more:
        return policy
    return replace(policy, network=None if policy.network == OFF else policy.network, inputs_read_only=False,
                   relaxations=(*policy.relaxations, *more))


def backendai_flags(policy: Policy) -> list[str]:
    """`session create` options of the policy: a named project network."""
    if policy.network not in (None, OFF, "default"):
        return ["--network", str(policy.network)]
    return []
