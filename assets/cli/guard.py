"""What keeps a CLI run honest about its surroundings: one run per data folder at a time, and an
interrupt (Ctrl-C, SIGTERM) that stops the whole run instead of only the step it lands in.

Every write of the pipeline is atomic (a temporary file renamed into place) and the load ledger is
flushed batch by batch, so a run stopped anywhere leaves consistent files and the next run with the
same options completes exactly what was left.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from dagster._core.execution.job_execution_result import JobExecutionResult

LOCK_FILE = ".assistants-backfill.lock"
# What the interrupted step reports: Dagster turns SIGINT inside a run into this error.
_INTERRUPT_ERRORS = {"DagsterExecutionInterruptedError", "KeyboardInterrupt"}


class FolderBusy(Exception):
    """Another run holds the data folder."""


@contextmanager
def folder_lock(data_dir: Path) -> Iterator[None]:
    """Hold the data folder for this run; :class:`FolderBusy` names the run that holds it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    # Opened without truncating: the holder's line must survive until we hold the lock ourselves.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            holder = path.read_text().strip() or "another run"
            raise FolderBusy(f"{data_dir} is in use by {holder}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        yield
    finally:
        os.close(fd)


class Interrupts:
    """SIGINT and SIGTERM stop the run: outside a Dagster run they raise KeyboardInterrupt; inside one,
    Dagster fails the running step, and :meth:`stopped` recognises that result."""

    def __init__(self) -> None:
        self.received = False

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self.received = True
        raise KeyboardInterrupt

    @staticmethod
    def _on_sigterm(signum: int, frame: FrameType | None) -> None:
        # Dagster listens for SIGINT during a run; SIGTERM takes the same road.
        signal.raise_signal(signal.SIGINT)

    @contextmanager
    def installed(self) -> Iterator[Interrupts]:
        previous = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGINT, self._on_sigint)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous[0])
            signal.signal(signal.SIGTERM, previous[1])

    def stopped(self, result: JobExecutionResult) -> bool:
        """Whether ``result`` is a run that an interrupt stopped (and remember it)."""
        for event in result.all_events:
            if not (event.is_step_failure and event.step_failure_data and event.step_failure_data.error):
                continue
            err = event.step_failure_data.error
            seen = [err]
            while seen:
                e = seen.pop()
                if e.cls_name in _INTERRUPT_ERRORS:
                    self.received = True
                seen += [x for x in (e.cause, e.context) if x is not None]
        return self.received
