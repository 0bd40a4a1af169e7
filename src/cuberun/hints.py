"""Did-you-mean suggestions."""

from __future__ import annotations

from collections.abc import Iterable


def _distance(a: str, b: str) -> int:
    """Damerau-Levenshtein (optimal string alignment) distance."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cost = 0 if ca == cb else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice most like `word`, if it is close enough to be a plausible typo."""
    best: tuple[int, str] | None = None
    low = word.lower()
    for choice in choices:
        d = _distance(low, choice.lower())
        limit = max(1, min(3, len(choice) // 3))
        if (d <= limit or (len(low) >= 3 and (choice.lower().startswith(low) or low.startswith(choice.lower())))) and (
            best is None or d < best[0]
        ):
            best = (d, choice)
    return best[1] if best else None


def did_you_mean(word: str, choices: Iterable[str], what: str = "") -> str:
    """A hint: "did you mean 'x'?" or the list of valid choices."""
    choices = list(choices)
    guess = closest(word, choices)
    if guess is not None:
        return f"did you mean '{guess}'?"
    if not choices:
        return f"no {what} is defined" if what else "nothing is valid here"
    shown = ", ".join(f"'{c}'" for c in choices[:12])
    more = ", ..." if len(choices) > 12 else ""
    return f"expected one of {shown}{more}"
