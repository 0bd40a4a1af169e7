from __future__ import annotations

import pytest

from cuberun.errors import UsageError
from cuberun.gpus import GpuRequest, effective_gpus, parse_gpus
from cuberun.runners.docker import gpus_value


@pytest.mark.parametrize(
    ("value", "request_", "docker", "cuda"),
    [
        ("all", GpuRequest(all=True), "all", None),
        ("2", GpuRequest(count=2), "2", "0,1"),
        ("0", GpuRequest(), None, ""),
        ("", GpuRequest(), None, ""),
        ("device=0,3", GpuRequest(devices=("0", "3")), '"device=0,3"', "0,3"),
        ("device=GPU-1a2b", GpuRequest(devices=("GPU-1a2b",)), '"device=GPU-1a2b"', "GPU-1a2b"),
    ],
)
def test_forms(value: str, request_: GpuRequest, docker: str | None, cuda: str | None) -> None:
    parsed = parse_gpus(value)
    assert parsed == request_
    assert gpus_value(parsed) == docker
    assert parsed.cuda_visible_devices() == cuda


@pytest.mark.parametrize("value", ["foo", "-1", "device=", "device=0,,1", "2.5", "gpu:0"])
def test_invalid(value: str) -> None:
    with pytest.raises(UsageError):
        parse_gpus(value)


def test_cli_wins_over_accelerator_count() -> None:
    assert effective_gpus(None, 2) == GpuRequest(count=2)
    assert effective_gpus("0", 2) == GpuRequest()
    assert effective_gpus(None, 0).wanted is False
