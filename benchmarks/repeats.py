"""How a row's repeated runs become the one it reports: the median run, and the spread that leads its
details."""

from __future__ import annotations

from collections.abc import Callable


def median[T](runs: list[T], key: Callable[[T], float]) -> T:
    """The run whose ``key`` is the median (the upper one of an even count)."""
    return sorted(runs, key=key)[len(runs) // 2]


def spread(values: list[float], unit: str, fmt: str = ".2f") -> str:
    """How the row's run was chosen, to lead its details ("" for a single run)."""
    if len(values) == 1:
        return ""
    return f"median of {len(values)} runs ({', '.join(format(v, fmt) for v in values)} {unit}); in that run: "
