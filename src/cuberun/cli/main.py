"""Entry point: errors become one line on stderr and a documented exit code."""

from __future__ import annotations

import os
import sys

from cuberun.errors import EXIT_FAILURE, EXIT_USAGE, CuberunError


def _debug_enabled(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("CUBERUN_DEBUG") == "1"


def _stderr(text: str) -> None:
    """One message on stderr; a closed pipe or a full disk under it never changes the exit code."""
    try:
        print(text, file=sys.stderr)
    except OSError:
        pass


def main(argv: list[str] | None = None) -> None:
    import click

    from cuberun.cli.commands import cli

    args = sys.argv[1:] if argv is None else argv
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
    sys.exit(code)
