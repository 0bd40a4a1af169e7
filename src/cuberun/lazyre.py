"""Regular expressions compiled on their first use.

A pattern compiled at import is paid by every cuberun start, also by the runs that never use it
(an error line's pattern, a GPU device list, secret names when no variable is passed): about a
million instructions for a pattern with alternatives or IGNORECASE. `LazyPattern` keeps the
source and compiles it the first time one of its methods is called.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import re
    from collections.abc import Iterator


class LazyPattern:
    """`re.compile(pattern, flags)` when first used; match, fullmatch, search and finditer."""

    __slots__ = ("_compiled", "flags", "pattern")

    def __init__(self, pattern: str, flags: int = 0) -> None:
        self.pattern = pattern
        self.flags = flags
        self._compiled: re.Pattern[str] | None = None

    def compiled(self) -> re.Pattern[str]:
        if self._compiled is None:
            import re

            self._compiled = re.compile(self.pattern, self.flags)
        return self._compiled

    def match(self, string: str) -> re.Match[str] | None:
        return self.compiled().match(string)

    def fullmatch(self, string: str) -> re.Match[str] | None:
        return self.compiled().fullmatch(string)

    def search(self, string: str) -> re.Match[str] | None:
        return self.compiled().search(string)

    def finditer(self, string: str) -> Iterator[re.Match[str]]:
        return self.compiled().finditer(string)
