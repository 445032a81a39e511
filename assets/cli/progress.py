"""Progress of a CLI run on stderr: what stage is running and how far it is, with or without ``--json``.

On a terminal each long stage (a dump's ingest, a scope's load) shows a tqdm bar. Where stderr is a file
or a pipe (a scheduler's log), a bar's carriage returns would pile up into one endless line, so the same
progress is written as plain lines, at most one every :data:`LINE_SECONDS` per stage, and one when it ends.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

from pipelines.progress import BarFactory, ProgressBar

LINE_SECONDS = 10.0


def _amount(n: float, unit: str) -> str:
    return f"{n / 1e6:,.0f} MB" if unit == "B" else f"{n:,.0f} {unit}s"


def _of(n: float, total: float, unit: str) -> str:
    """``537/1,251 MB``, ``10/10 patterns``: the count and the total, tqdm's way."""
    if unit == "B":
        return f"{n / 1e6:,.0f}/{total / 1e6:,.0f} MB"
    return f"{n:,.0f}/{total:,.0f} {unit}s"


class LineProgress:
    """A progress bar as periodic lines: ``ingest m1M.ndjson: 41% 512/1,251 MB, 9 s``."""

    def __init__(
        self, desc: str, total: int | None, unit: str, out: TextIO, every: float = LINE_SECONDS
    ) -> None:
        self.desc, self.total, self.unit, self.out, self.every = desc, total, unit, out, every
        self.n = 0
        self.postfix = ""
        self.started = self.shown = time.monotonic()

    def _line(self, done: bool = False) -> str:
        if self.total:
            amount = f"{self.n / self.total:.0%} {_of(self.n, self.total, self.unit)}"
        else:
            amount = ("done, " if done else "") + _amount(self.n, self.unit)
        post = f", {self.postfix}" if self.postfix else ""
        return f"{self.desc}: {amount}{post}, {time.monotonic() - self.started:.0f} s"

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self.shown >= self.every:
            self.shown = time.monotonic()
            print(self._line(), file=self.out, flush=True)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def close(self) -> None:
        print(self._line(done=True), file=self.out, flush=True)


def progress_factory(args: argparse.Namespace, out: TextIO | None = None) -> BarFactory | None:
    """Progress on stderr (or ``out``: a scope worker's way to the CLI's stderr) for every long stage (off
    with ``--no-progress``); ``--json`` keeps it, as stdout holds only the JSON summary."""
    if args.no_progress:
        return None
    stream = out or sys.stderr
    if not stream.isatty():

        def lines(desc: str, total: int | None, unit: str) -> ProgressBar:
            return LineProgress(desc, total, unit, stream)

        return lines
    from tqdm import tqdm

    def bar(desc: str, total: int | None, unit: str) -> Any:
        return tqdm(
            total=total,
            desc=desc,
            unit=unit,
            unit_scale=unit == "B",
            file=stream,
            dynamic_ncols=True,
            mininterval=0.5,
        )

    return bar
