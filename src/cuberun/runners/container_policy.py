"""The run policy (cuberun.policy) mapped onto container engines: what each runner reads from
its config to decide the policy, and the flags that enforce it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cuberun.policy import OFF, Policy, decide
from cuberun.runners.argv import tokens as as_tokens

if TYPE_CHECKING:
    from cuberun.resolve import ResolvedTask
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
