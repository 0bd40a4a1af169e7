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


class _ClosedStdout:
    """Standard output when the caller closed it (`describe >&-`): writing is a one-line error.
    (`run` carries on: the task's output still goes to its log.)"""

    encoding = "utf-8"
    errors = "strict"

    def write(self, text: str) -> int:
        from cuberun.errors import UsageError

        if not text:
            return 0
        raise UsageError("cannot write the output: standard output is closed", "redirect it (> FILE or > /dev/null) instead of closing it")

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def _standard_streams() -> None:
    """File descriptors 0, 1 and 2 open (on /dev/null when the caller closed them), so that no
    file cuberun opens later becomes a standard stream of its tasks."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        try:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
        except OSError:
            pass
        if fd == 1:
            sys.stdout = _ClosedStdout()  # type: ignore[assignment,unused-ignore]
        elif fd == 2:
            sys.stderr = open(os.devnull, "w", encoding="utf-8")
        else:
            sys.stdin = open(os.devnull, encoding="utf-8")


def _ascii_locale() -> None:
    """An ASCII-only locale (LC_ALL=C with PYTHONUTF8=0 and no locale coercion): non-ASCII text
    is printed with escapes rather than failing; file names it cannot encode are one-line errors."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            pass


ASCII_HINT = "use a UTF-8 locale (export LC_ALL=C.UTF-8) or Python's UTF-8 mode (export PYTHONUTF8=1)"


def _cwd_gone() -> bool:
    try:
        os.getcwd()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return False


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


def _dispatch(args: list[str]) -> object:
    """`run` in its plain spellings without click (see cli/run_cmd.py), everything else through click."""
    if args and args[0] == "run":
        from cuberun.cli.run_cmd import parse_plain, run_command

        kwargs = parse_plain(args[1:])
        if kwargs is not None:
            return run_command(**kwargs)
    from cuberun.cli.commands import cli

    return cli.main(args=args, prog_name="cuberun", standalone_mode=False)


def _other_error(exc: BaseException, debug: bool) -> int | None:
    """The exit code of an error other than a CuberunError, after its one line on stderr; None:
    raise it (--debug). Click's own errors can only come when click was imported."""
    click = sys.modules.get("click")
    if click is not None:
        if isinstance(exc, click.exceptions.NoArgsIsHelpError):
            print(exc.ctx.get_help() if exc.ctx else str(exc))
            return EXIT_USAGE
        if isinstance(exc, click.UsageError):
            cmd = exc.ctx.command_path if exc.ctx else "cuberun"
            message = exc.format_message().rstrip(".")
            _stderr(f"cuberun: error: {message}. Hint: see '{cmd} --help'")
            return EXIT_USAGE
        if isinstance(exc, click.exceptions.Exit):
            return int(exc.exit_code)
        if isinstance(exc, click.Abort):
            _stderr("cuberun: interrupted")
            return 130
        if isinstance(exc, click.ClickException):
            _stderr(f"cuberun: error: {exc.format_message()}")
            return int(exc.exit_code)
    if isinstance(exc, KeyboardInterrupt):
        _stderr("cuberun: interrupted")
        return 130
    if isinstance(exc, BrokenPipeError):
        return 0
    if debug:
        return None
    code = EXIT_FAILURE
    if isinstance(exc, OSError) and exc.errno in (28, 122) and not exc.filename:  # the output stream (> /dev/full)
        _stderr(f"cuberun: error: cannot write the output: {exc.strerror}. Hint: check where the output goes")
        code = EXIT_USAGE
    elif isinstance(exc, OSError) and exc.errno in (28, 122):  # ENOSPC, EDQUOT: cuberun's own files (records, locks, state)
        where = f" {exc.filename}" if exc.filename else ""
        _stderr(f"cuberun: error: cannot write{where}: {exc.strerror}. Hint: free space on that file system (df -h), "
                "or choose another --workspace")
    elif isinstance(exc, UnicodeError) and sys.getfilesystemencoding() == "ascii":
        what = exc.object[exc.start : exc.end] if isinstance(exc, (UnicodeEncodeError, UnicodeDecodeError)) else ""
        _stderr(f"cuberun: error: the locale is ASCII-only, and {what!r} is not ASCII text. Hint: {ASCII_HINT}")
        code = EXIT_USAGE
    elif isinstance(exc, FileNotFoundError) and not exc.filename and _cwd_gone():
        where = f" {os.environ['PWD']}" if os.environ.get("PWD") else ""
        _stderr(f"cuberun: error: the current directory{where} no longer exists. Hint: cd to an existing directory, or give absolute paths")
        code = EXIT_USAGE
    elif isinstance(exc, OSError) and exc.filename:
        from cuberun.errors import one_line
        from cuberun.safeio import os_problem, shown

        _stderr(one_line(f"cuberun: error: {shown(exc.filename)}: {os_problem(exc)}") + ". Hint: check the path and its permissions")
        code = EXIT_USAGE
    else:
        _stderr(f"cuberun: internal error: {type(exc).__name__}: {exc}. Hint: re-run with --debug and report it")
    return code


def main(argv: list[str] | None = None) -> None:
    _standard_streams()
    if sys.getfilesystemencoding() == "ascii" and not sys.flags.utf8_mode:
        _ascii_locale()
    args = sys.argv[1:] if argv is None else argv
    try:
        _start_code_identity(args)
    except Exception:  # only a head start: the run computes it itself (a deleted cwd, an odd path)
        pass

    debug = _debug_enabled(args)
    try:
        rv = _dispatch(args)
        code = rv if isinstance(rv, int) else 0
    except CuberunError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        for line in exc.lines():
            _stderr(f"cuberun: error: {line}")
        code = exc.exit_code
        stopped = getattr(exc, "timeout", None)  # a task stopped at its time limit: the outer cuberun words and records it so
        handshake.emit("error", message=exc.lines()[0], kind=type(exc).__name__, exit_code=code, **({"timeout": stopped} if stopped else {}))
    except (Exception, KeyboardInterrupt) as exc:
        handled = _other_error(exc, debug)
        if handled is None:
            raise
        code = handled
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (`| head`): not an error
        pass
    except (OSError, ValueError) as exc:  # a full disk (> /dev/full)
        if code == 0:
            _stderr(f"cuberun: error: cannot write the output: {getattr(exc, 'strerror', None) or exc}. Hint: check where the output goes")
            code = EXIT_USAGE
    handshake.emit("end", exit_code=code)
    sys.exit(code)
