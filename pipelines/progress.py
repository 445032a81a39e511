"""Progress of long stages (ingest, loads), shown only when a front end asks for it.

The pipeline never depends on a terminal: a stage calls :func:`open_bar` and gets ``None`` unless the
caller (the CLI, with a bar factory) is inside :func:`progress_bars`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol


class ProgressBar(Protocol):
    def update(self, n: int = 1) -> Any: ...
    def set_postfix_str(self, s: str = "", refresh: bool = True) -> Any: ...
    def close(self) -> Any: ...


# (description, total or None, unit)
BarFactory = Callable[[str, int | None, str], ProgressBar]

_bar_factory: BarFactory | None = None


@contextmanager
def progress_bars(factory: BarFactory | None) -> Iterator[None]:
    """Show progress of every long stage while inside (the CLI passes its bar factory)."""
    global _bar_factory
    previous, _bar_factory = _bar_factory, factory
    try:
        yield
    finally:
        _bar_factory = previous


def open_bar(desc: str, total: int | None, unit: str = "pattern") -> ProgressBar | None:
    return _bar_factory(desc, total, unit) if _bar_factory else None
