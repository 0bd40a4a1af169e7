"""Entry point: errors become one line on stderr and a documented exit code."""

from __future__ import annotations

import os
import sys

from cuberun import handshake
from cuberun.errors import EXIT_FAILURE, EXIT_USAGE, CuberunError


def _debug_enabled(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("CUBERUN_DEBUG") == "1"


def _stderr(text: str) -> None:
    """One message on stderr; a closed pipe or a full disk under it never changes the exit code."""
    try:
        print(text, file=sys.stderr)
    except OSError:
        pass


def _option(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg[len(name) + 1 :]
    return None


def _start_code_identity(args: list[str]) -> None:
    """`cuberun run` on the local platform: start the cube folder's code identity in a forked
    child now, so that walking the folder overlaps with start-up (see codeid.start_early). Any
    guess made here that turns out wrong only means the result is not used."""
    if not args or args[0] != "run" or any(a in ("--dry-run", "--help", "-h") for a in args):
        return
    if _option(args, "--platform") not in (None, "local"):
        return
    mlcube = _option(args, "--mlcube")
    path = os.path.abspath(os.path.expanduser(mlcube)) if mlcube else os.getcwd()
    root = path if os.path.isdir(path) else os.path.dirname(path)
    if not os.path.isfile(os.path.join(root, "mlcube.yaml")) or os.path.realpath(root) in (os.sep, os.path.realpath(os.path.expanduser("~"))):
        return
    from pathlib import Path

    from cuberun import codeid
    from cuberun.paths import cache_dir

    workspace = _option(args, "--workspace")
    ws = os.path.normpath(os.path.abspath(os.path.expanduser(workspace))) if workspace else os.path.join(root, "workspace")
    codeid.start_early(Path(root), [ws, os.path.join(root, "workspace"), os.path.join(root, "mlcube.yaml"), str(cache_dir())])


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        _start_code_identity(args)
    except Exception:  # only a head start: the run computes it itself
        pass

    import click

    from cuberun.cli.commands import cli

    debug = _debug_enabled(args)
    try:
        rv = cli.main(args=args, prog_name="cuberun", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except CuberunError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        for line in exc.lines():
            _stderr(f"cuberun: error: {line}")
        code = exc.exit_code
        handshake.emit("error", message=exc.lines()[0], kind=type(exc).__name__, exit_code=code)
    except click.exceptions.NoArgsIsHelpError as exc:  # type: ignore[attr-defined,unused-ignore]
        print(exc.ctx.get_help() if exc.ctx else str(exc))
        code = EXIT_USAGE
    except click.UsageError as exc:
        cmd = exc.ctx.command_path if exc.ctx else "cuberun"
        message = exc.format_message().rstrip(".")
        _stderr(f"cuberun: error: {message}. Hint: see '{cmd} --help'")
        code = EXIT_USAGE
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.Abort:
        _stderr("cuberun: interrupted")
        code = 130
    except click.ClickException as exc:
        _stderr(f"cuberun: error: {exc.format_message()}")
        code = exc.exit_code
    except KeyboardInterrupt:
        _stderr("cuberun: interrupted")
        code = 130
    except BrokenPipeError:
        code = 0
    except Exception as exc:
        if debug:
            raise
        if isinstance(exc, OSError) and exc.errno in (28, 122):  # ENOSPC, EDQUOT: cuberun's own files (records, locks, state)
            where = f" {exc.filename}" if exc.filename else ""
            _stderr(f"cuberun: error: cannot write{where}: {exc.strerror}. Hint: free space on that file system (df -h), "
                    "or choose another --workspace")
        else:
            _stderr(f"cuberun: internal error: {type(exc).__name__}: {exc}. Hint: re-run with --debug and report it")
        code = EXIT_FAILURE
    try:
        sys.stdout.flush()
    except OSError:  # a closed pipe, a full disk
        pass
    handshake.emit("end", exit_code=code)
    sys.exit(code)
