"""Starting the CLI's worker processes: forked from a fork server that has imported Dagster once for all of
them, each with the CLI's standard output and error and environment as they are when it starts."""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import os
import signal
import sys
import threading
from multiprocessing import forkserver, reduction
from typing import Any

# Imported once by the fork server the workers are forked from: Dagster and its storage (2.7 s on the
# benchmark machine), which every worker would otherwise import for itself. Nothing that starts a
# thread (Polars and Arrow start theirs at import): a process with threads is not safe to fork.
FORKSERVER_PRELOAD = [
    "dagster",
    "dagster._core.storage.event_log",
    "dagster._core.storage.runs",
    "dagster._core.storage.sqlite_storage",
    "alembic",
    "sqlalchemy",
]


def worker_context() -> multiprocessing.context.BaseContext:
    """Workers forked from a fork server that has imported Dagster (``FORKSERVER_PRELOAD``); spawned
    where there is no fork server."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(FORKSERVER_PRELOAD)
    if threading.current_thread() is threading.main_thread():
        # The server ignores Ctrl-C only once its imports are done; started with SIGINT ignored, it
        # ignores it from the start instead of printing a traceback from the middle of an import.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            forkserver.ensure_running()
        finally:
            signal.signal(signal.SIGINT, previous)
    return context


def start_server_early() -> None:
    """Start the fork server now, at the command's first line, so that its imports of Dagster run beside
    the command's own instead of after them (a 1M-message run started its ingest 4.2 s into the process,
    the core path 0.9 s).

    The server gets no standard output or error of the command's (it writes nothing: its errors reach the
    command as a worker that failed, and each worker takes the command's streams as it starts, see
    :class:`Surroundings`). Otherwise a command refused or with nothing new would end while the server,
    still importing, held its output open: a caller reading that output to its end would wait for the
    server's imports.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        # The server is started synchronously: it holds /dev/null once started, the command its own again.
        for fd in saved:
            os.dup2(null, fd)
        worker_context()
    finally:
        for fd, original in saved.items():
            os.dup2(original, fd)
            os.close(original)
        os.close(null)


class Surroundings:
    """The CLI's standard output and error and its environment, as they are when a worker starts.

    A worker forked from the fork server would otherwise have the server's, those of the moment the
    server started: a key set since, or output captured elsewhere since (a caller that swaps the file
    descriptors), would be missed. Spawned workers had the CLI's; these are the same. (multiprocessing
    itself hands a worker the CLI's working folder.)
    """

    def __init__(self, streams: tuple[Any, Any] | None = None, environ: dict[str, str] | None = None) -> None:
        # Empty in the CLI: what it holds is taken when it is pickled for a starting worker.
        self.streams, self.environ = streams, environ

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as the worker starts: each descriptor is passed to it then, the way multiprocessing
        # passes its own pipes.
        return (Surroundings, ((reduction.DupFd(1), reduction.DupFd(2)), dict(os.environ)))

    def adopt(self) -> None:
        assert self.streams is not None and self.environ is not None, "adopted before it was passed"
        for target, passed in zip((1, 2), self.streams, strict=True):
            fd = passed.detach()
            os.dup2(fd, target)
            os.close(fd)
        os.environ.clear()
        os.environ.update(self.environ)
