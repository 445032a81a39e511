"""Heavy libraries imported on a thread ahead of their first use.

engramia takes a good part of a second to import and Great Expectations several seconds (scipy, pandas,
sqlalchemy and altair come with it). A process that will need one starts its import beside work that runs
in DuckDB, Polars or Arrow with the GIL released (ingest, staging a scope), instead of paying it on the
critical path at the first call. The first user calls :func:`ready` before its own import: a package with
circular imports (GX has them) imported from two threads at once can hand one of them a partially
initialised module.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading

_started: dict[str, threading.Thread] = {}
_lock = threading.Lock()

GREAT_EXPECTATIONS = "great_expectations"
ENGRAMIA_LOAD = "pipelines.load.embedded"


def _import(module: str) -> None:
    # A failed import leaves nothing behind: the first real use raises it again, where it is reported.
    with contextlib.suppress(Exception):
        importlib.import_module(module)


def import_ahead(module: str) -> threading.Thread:
    """Start importing ``module`` on a daemon thread (once per process); join the thread to wait for it."""
    if module == GREAT_EXPECTATIONS:
        # GX reads this at import: no usage statistics are sent from a pipeline run.
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    with _lock:
        thread = _started.get(module)
        if thread is None:
            thread = threading.Thread(target=_import, args=(module,), daemon=True, name=f"import-{module}")
            _started[module] = thread
            thread.start()
        return thread


def ready(module: str) -> None:
    """Wait for the thread importing ``module``, if one was started."""
    thread = _started.get(module)
    if thread is not None:
        thread.join()
