from __future__ import annotations

import pytest

from cuberun.spec.interpolate import InterpolationError, Interpolator

CONFIG = {
    "name": "mnist",
    "version": "0.0.1",
    "docker": {"image": "mlcommons/${name}:${version}", "build_args": {"n": 3}},
    "runtime": {"root": "/cube", "workspace": "/cube/workspace"},
    "workspace": "/cube/workspace",
    "count": 4,
    "a": "${b}",
    "b": "${a}",
}


def interp(env: dict[str, str] | None = None) -> Interpolator:
    return Interpolator(CONFIG, env or {"HOME": "/home/u", "DATA": "/data"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${workspace}/data", "/cube/workspace/data"),
        ("${runtime.root}/build", "/cube/build"),
        ("${runtime.workspace}", "/cube/workspace"),
        ("${docker.image}", "mlcommons/mnist:0.0.1"),
        ("${name}-${version}", "mnist-0.0.1"),
        ("${oc.env:DATA}/x", "/data/x"),
        ("${oc.env:NOPE,/fallback}/x", "/fallback/x"),
        ("${oc.env:NOPE,'quoted'}", "quoted"),
        ("${env:DATA}", "/data"),
        ("${HOME}/x", "/home/u/x"),  # the reference crashes on this
        ("${oc.env:NOPE,${workspace}}/x", "/cube/workspace/x"),
        ("\\${not.interpolated}", "${not.interpolated}"),
        ("plain", "plain"),
        ("$HOME/x", "$HOME/x"),  # no braces: expanded later, for paths only
    ],
)
def test_resolves_like_omegaconf(text: str, expected: str) -> None:
    assert interp().resolve_string(text) == expected


def test_single_reference_keeps_type() -> None:
    assert interp().resolve_string("${count}") == 4
    assert interp().resolve_string("${docker.build_args}") == {"n": 3}
    assert interp().resolve_string("n=${count}") == "n=4"


def test_resolve_nested_structures() -> None:
    assert interp().resolve({"x": ["${name}", {"y": "${count}"}]}) == {"x": ["mnist", {"y": 4}]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${missing.key}", "interpolation key 'missing.key' not found"),
        ("${NOT_IN_ENV}", "interpolation key 'NOT_IN_ENV' not found"),
        ("${oc.env:NOPE}", "environment variable 'NOPE' is not set"),
        ("${a}", "interpolation cycle: a -> b -> a"),
        ("${name", "unclosed interpolation in '${name'"),
        ("${}", "empty interpolation '${}'"),
        ("${oc.create:x}", "unknown resolver 'oc.create'"),
        ("${.relative}", "relative interpolation '${.relative}' is not supported"),
    ],
)
def test_errors(text: str, message: str) -> None:
    with pytest.raises(InterpolationError) as info:
        interp().resolve_string(text)
    assert info.value.message == message


def test_oc_select_default() -> None:
    assert interp().resolve_string("${oc.select:nope.x,fallback}") == "fallback"
    assert interp().resolve_string("${oc.select:name,fallback}") == "mnist"
