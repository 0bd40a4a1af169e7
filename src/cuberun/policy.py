"""The run policy: strict by default, every relaxation named and recorded. Knows no backend.

Default (what every container runner maps as far as its backend can):
  - no network, unless the cube declares `platform.need_internet_access: true` (then the
    engine's default network) or the user passes `--network` / sets it in the settings;
  - inputs read-only (outputs are the only writable mounts), the host user's uid:gid,
    the container removed when it exits, no privileged mode, every capability dropped and no
    privilege escalation (`no-new-privileges`), a private /tmp;
  - raw run-argument strings from the cube (docker `cpu_args`, `gpu_args`, `extra_run_args`,
    string `env_args`) only when every flag is on the allow-list below, unless the user passes
    `--allow-run-args`.

A relaxation is one `Relaxation(name, detail, source)`; runners put `Policy.to_json()` in the
run record, and `--dry-run` and `report` show `Policy.summary()`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from cuberun.errors import UsageError
from cuberun.valueclass import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# flags a cube's raw run arguments may carry without --allow-run-args (docker/podman spelling)
ALLOWED_FLAGS = (
    "--shm-size", "--gpus", "-e", "--env", "--entrypoint", "--memory", "-m", "--memory-swap", "--cpus", "--cpuset-cpus",
    "--workdir", "-w", "--label", "-l", "--init", "--ulimit", "--pids-limit", "--hostname", "-h", "--tty", "-t",
    "--interactive", "-i", "--rm", "--pull",
)
# flags whose value is the next token when written without '='
_TAKES_VALUE = {"--shm-size", "--gpus", "-e", "--env", "--entrypoint", "--memory", "-m", "--memory-swap", "--cpus", "--cpuset-cpus",
                "--workdir", "-w", "--label", "-l", "--ulimit", "--pids-limit", "--hostname", "-h", "--pull"}
RAW_ARG_KEYS = ("cpu_args", "gpu_args", "extra_run_args", "env_args")
OFF = "none"


@dataclass(frozen=True)
class Relaxation:
    name: str  # network, run-args, writable-inputs, user, keep-container, security-opt
    detail: str
    source: str  # cli | cube | settings; runner: what the backend cannot enforce; host: cuberun itself runs as root

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "detail": self.detail, "source": self.source}


@dataclass(frozen=True)
class Policy:
    network: str | None = OFF  # OFF: no network; None: the engine's default network; else its name
    inputs_read_only: bool = True
    host_user: bool = True
    remove: bool = True
    drop_capabilities: bool = True
    no_new_privileges: bool = True
    private_tmp: bool = True
    relaxations: tuple[Relaxation, ...] = ()

    @property
    def strict(self) -> bool:
        return not self.relaxations

    def to_json(self) -> dict[str, Any]:
        return {
            "strict": self.strict,
            "network": self.network if self.network is not None else "default",
            "inputs_read_only": self.inputs_read_only,
            "host_user": self.host_user,
            "remove": self.remove,
            "drop_capabilities": self.drop_capabilities,
            "no_new_privileges": self.no_new_privileges,
            "private_tmp": self.private_tmp,
            "relaxations": [r.to_json() for r in self.relaxations],
        }

    def summary(self) -> str:
        """One line for --dry-run and reports."""
        return summary_of(self.to_json())


def summary_of(data: Mapping[str, Any]) -> str:
    relax = data.get("relaxations") or []
    if not relax:
        return "policy: strict (no network, inputs read-only, host user, no capabilities, no new privileges, private /tmp)"
    items = "; ".join(f"{r.get('name')}: {r.get('detail')} (from {r.get('source')})" for r in relax if isinstance(r, Mapping))
    return f"policy: relaxed: {items}"


def flag_name(token: str) -> str:
    return token.split("=", 1)[0]


def disallowed(tokens: Sequence[str]) -> list[str]:
    """The tokens of a raw argument list that the allow-list does not cover."""
    bad: list[str] = []
    skip = False
    for tok in tokens:
        if skip:
            skip = False
            continue
        name = flag_name(tok)
        if name in ALLOWED_FLAGS:
            skip = name in _TAKES_VALUE and "=" not in tok
            continue
        if len(name) > 2 and name[:2] in ("-e", "-m", "-w", "-l") and not name.startswith("--"):
            continue  # -eKEY=VALUE
        bad.append(tok)
    return bad


def decide(
    *,
    need_internet: bool,
    cli_network: str | None,
    settings_network: str | None,
    cube_network: str | None,
    input_mode: str | None,
    input_mode_source: str,
    host_user: tuple[bool, str],  # (value, source)
    remove: tuple[bool, str],
    raw_args: Iterable[tuple[str, Sequence[str], str]],  # (key, tokens, source: cube | settings)
    allow_run_args: bool,
    security_opt: tuple[str, str] | None = None,  # (value, source)
    writable_inputs: Sequence[str] = (),  # inputs the cube declares `opts: rw`
) -> Policy:
    """The policy of one run. Raises UsageError for cube run arguments outside the allow-list
    (or a cube network setting) without --allow-run-args."""
    relax: list[Relaxation] = []
    network: str | None = OFF
    if cli_network:
        network = cli_network
        if cli_network != OFF:
            relax.append(Relaxation("network", f"--network={cli_network}", "cli"))
    elif cube_network and cube_network != OFF:
        if not allow_run_args:
            raise UsageError(f"the cube sets the container network to '{cube_network}', which the default policy does not allow",
                             "declare platform.need_internet_access: true in the cube, or pass --network=NAME (or --allow-run-args)")
        network = cube_network
        relax.append(Relaxation("network", f"network={cube_network} (--allow-run-args)", "cube"))
    elif settings_network and settings_network != OFF:
        network = settings_network
        relax.append(Relaxation("network", f"network={settings_network}", "settings"))
    elif need_internet:
        network = None
        relax.append(Relaxation("network", "the engine's default network (platform.need_internet_access: true)", "cube"))
    if input_mode == "rw":
        relax.append(Relaxation("writable-inputs", "inputs mounted read-write", input_mode_source))
    elif writable_inputs:
        relax.append(Relaxation("writable-inputs", "opts: rw on " + ", ".join(writable_inputs), "cube"))
    if not host_user[0]:
        relax.append(Relaxation("user", "runs as the image's user, not the host uid:gid", host_user[1]))
    if not remove[0]:
        relax.append(Relaxation("keep-container", "the container is kept after it exits", remove[1]))
    if security_opt is not None:
        relax.append(Relaxation("security-opt", f"--security-opt={security_opt[0]}", security_opt[1]))
    for key, tokens, source in raw_args:
        bad = disallowed(tokens)
        if not bad:
            continue
        if source == "cube" and not allow_run_args:
            raise UsageError(f"the cube's docker.{key} has '{' '.join(bad)}', which the default policy does not allow",
                             f"allowed: {', '.join(a for a in ALLOWED_FLAGS if a.startswith('--'))}; pass --allow-run-args to let it through (recorded)")
        relax.append(Relaxation("run-args", f"docker.{key}: {' '.join(bad)}" + (" (--allow-run-args)" if source == "cube" else ""), source))
    return Policy(network=network, inputs_read_only=input_mode != "rw", host_user=host_user[0], remove=remove[0], relaxations=tuple(relax))
