"""Entry point: errors become one line on stderr and a documented exit code."""

from __future__ import annotations

import os
import sys

from cuberun.errors import EXIT_FAILURE, EXIT_USAGE, CuberunError


def _debug_enabled(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("CUBERUN_DEBUG") == "1"


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
            print(f"cuberun: error: {line}", file=sys.stderr)
        code = exc.exit_code
    except click.exceptions.NoArgsIsHelpError as exc:  # type: ignore[attr-defined,unused-ignore]
        print(exc.ctx.get_help() if exc.ctx else str(exc))
        code = EXIT_USAGE
    except click.UsageError as exc:
        cmd = exc.ctx.command_path if exc.ctx else "cuberun"
        message = exc.format_message().rstrip(".")
        print(f"cuberun: error: {message}. Hint: see '{cmd} --help'", file=sys.stderr)
        code = EXIT_USAGE
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.Abort:
        print("cuberun: interrupted", file=sys.stderr)
        code = 130
    except click.ClickException as exc:
        print(f"cuberun: error: {exc.format_message()}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        print("cuberun: interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:
        code = 0
    except Exception as exc:
        if debug:
            raise
        if isinstance(exc, OSError) and exc.errno in (28, 122):  # ENOSPC, EDQUOT: cuberun's own files (records, locks, state)
            where = f" {exc.filename}" if exc.filename else ""
            print(f"cuberun: error: cannot write{where}: {exc.strerror}. Hint: free space on that file system (df -h), "
                  "or choose another --workspace", file=sys.stderr)
        else:
            print(f"cuberun: internal error: {type(exc).__name__}: {exc}. Hint: re-run with --debug and report it", file=sys.stderr)
        code = EXIT_FAILURE
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    sys.exit(code)
