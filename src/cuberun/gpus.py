"""One GPU model for every runner: `--gpus` forms and the cube's accelerator_count; the request
reduced to a count for the runners whose scheduler allocates a number of GPUs (k8s, backendai)."""

from __future__ import annotations

from cuberun.errors import UsageError
from cuberun.lazyre import LazyPattern
from cuberun.valueclass import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from cuberun.resolve import ResolvedTask
    from cuberun.spec.model import Cube

_DEVICE = LazyPattern(r"^device=([A-Za-z0-9-]+(,[A-Za-z0-9-]+)*)$")


@dataclass(frozen=True)
class GpuRequest:
    """all=True, or count=N, or devices=(...). count=0 means no GPU."""

    all: bool = False
    count: int = 0
    devices: tuple[str, ...] = ()

    @property
    def wanted(self) -> bool:
        return self.all or self.count > 0 or bool(self.devices)

    def cuda_visible_devices(self) -> str | None:
        """What CUDA_VISIBLE_DEVICES should be inside the task (None: leave it alone)."""
        if self.devices:
            return ",".join(self.devices)
        if self.count:
            return ",".join(str(i) for i in range(self.count))
        if self.all:
            return None
        return ""


def parse_gpus(value: str | None) -> GpuRequest | None:
    """Parse `--gpus`; None when not given."""
    if value is None:
        return None
    text = value.strip().strip('"').strip("'")
    if text in ("", "0", "none"):
        return GpuRequest()
    if text == "all":
        return GpuRequest(all=True)
    if text.isdigit():
        return GpuRequest(count=int(text))
    m = _DEVICE.match(text)
    if m:
        return GpuRequest(devices=tuple(m.group(1).split(",")))
    raise UsageError(f"invalid --gpus value '{value}'", "use all, a count N (0 = none), or device=0,1 (indexes or UUIDs)")


def effective_gpus(option: str | None, accelerator_count: int) -> GpuRequest:
    """The CLI `--gpus` wins; else the cube's platform.accelerator_count."""
    parsed = parse_gpus(option)
    if parsed is not None:
        return parsed
    return GpuRequest(count=accelerator_count) if accelerator_count > 0 else GpuRequest()


def gpu_count(option: str | None, cube: Cube, task: ResolvedTask | None, *, platform: str, allocates: str,
              refuse: Callable[[GpuRequest], UsageError]) -> int:
    """A number of GPUs, for a scheduler that allocates a number (it cannot be given all GPUs or
    particular ones): `option` (--gpus), else a container_config.yaml task's own run_args.gpus,
    else the cube's accelerator_count. All GPUs or devices as the task's own request are refused
    here in the runner's words (`allocates`: e.g. "Kubernetes schedules"); given with --gpus, by
    the runner's `refuse(request)`."""
    own = task.task.run_args.gpus if task is not None and task.task.run_args is not None else None
    if option is None and own is not None:
        assert task is not None
        request = parse_gpus(own) or GpuRequest()
        if request.all or request.devices:
            which = "all GPUs" if request.all else "particular devices"
            raise UsageError(f"{cube.file}: tasks.{task.name}.run_args.gpus: '{own}' cannot be expressed on {platform}: "
                             f"{allocates} a number of GPUs, not {which}", "pass --gpus=N to run the task with N GPUs")
        return request.count
    request = effective_gpus(option, cube.accelerator_count)
    if request.all or request.devices:
        raise refuse(request)
    return request.count
