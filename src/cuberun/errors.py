"""One error hierarchy; the CLI turns each error into one line per problem and an exit code."""

from __future__ import annotations

from cuberun.valueclass import dataclass

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_BUSY = 75  # EX_TEMPFAIL: another run holds a lock
EXIT_BACKEND = 125  # like docker: the backend itself failed before the task ran


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)} | {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}


def one_line(text: str) -> str:
    """An error line as it is printed: control characters from user input (a newline in a key,
    an escape sequence in a path) shown escaped, so one problem is always one line."""
    return text.translate(_CONTROL)


@dataclass(frozen=True)
class Issue:
    """One problem found in an input file or on the command line."""

    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    key: str | None = None
    hint: str | None = None
    severity: str = "error"  # "error" or "warning"

    def render(self) -> str:
        where = ""
        if self.file:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
                if self.column is not None:
                    where += f":{self.column}"
            where += ": "
        key = f"{self.key}: " if self.key else ""
        text = f"{where}{key}{self.message}"
        if self.hint:
            text += f". Hint: {self.hint}"
        return one_line(text)


class CuberunError(Exception):
    """Base class of every error a user can cause or fix."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def lines(self) -> list[str]:
        text = self.message
        if self.hint:
            text += f". Hint: {self.hint}"
        return [one_line(text)]


class UsageError(CuberunError):
    exit_code = EXIT_USAGE


class SpecError(CuberunError):
    """A cube, settings or parameter file is invalid; carries every issue found at once."""

    exit_code = EXIT_USAGE

    def __init__(self, issues: list[Issue]) -> None:
        errors = [i for i in issues if i.severity == "error"]
        super().__init__(errors[0].render() if errors else "invalid input")
        self.issues = errors

    def lines(self) -> list[str]:
        return [i.render() for i in self.issues]


class RunnerUnavailable(CuberunError):
    """The backend cannot be used here (not installed, daemon down, extra missing)."""

    exit_code = EXIT_BACKEND


class BackendError(CuberunError):
    """The backend failed while preparing or running a task (build failed, pull failed, ...)."""

    exit_code = EXIT_BACKEND

    def __init__(self, message: str, hint: str | None = None, exit_code: int | None = None) -> None:
        super().__init__(message, hint)
        if exit_code is not None:
            self.exit_code = exit_code


class BusyError(CuberunError):
    exit_code = EXIT_BUSY


class TaskFailed(CuberunError):
    """A task ran and exited non-zero (or was killed); the exit code is passed through."""

    def __init__(self, message: str, exit_code: int, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.exit_code = exit_code
        self.timeout: float | None = None  # the time limit (s) at which the task was stopped, when it was


def split_words(text: str, what: str) -> list[str]:
    """`text` split into arguments as a POSIX shell would (no shell runs), or a one-line error
    naming `what` ("local.command", "task 't' entrypoint") when its quotes do not balance."""
    import shlex

    try:
        return shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"{what} {quote_problem(text, exc)}", "balance the quotes (or escape them with \\), or write it as a list") from None


def quote_problem(text: str, exc: ValueError) -> str:
    shown = text if len(text) <= 120 else text[:117] + "..."
    if "closing quotation" in str(exc):
        return f"has a quote that is never closed: {shown!r}"
    return f"cannot be split into arguments ({str(exc).lower()}): {shown!r}"
