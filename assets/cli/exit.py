"""Ending the command's process once its work is done, without tearing the interpreter down.

A run imports ~1,500 modules (Dagster, Polars, DuckDB, Arrow and what they pull in). Tearing them down at
exit (clearing every module, collecting their objects, the extensions' own finalizers) took 0.6-1.1 s of a
2.5 s run with nothing new, after the summary was printed and every file written and closed. What exit
must still do is done here in the order Python does it: threads that are not daemons are waited for, the
``atexit`` handlers run (logging's flush, file locks released, multiprocessing's children joined), the
standard streams are flushed; then the process ends with the command's exit code.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from collections.abc import Callable
from typing import NoReturn


def run_and_exit(main: Callable[[], object]) -> NoReturn:
    """Call ``main`` and end the process with its exit code (``sys.exit``'s rules: None is 0, a message
    goes to stderr and is 1). Any other exception propagates, and Python reports it and exits as usual."""
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = _code(exc.code)
    # What the interpreter itself does first at exit: the threads' exit hooks (a process pool shuts down
    # there), then every thread that is not a daemon is waited for.
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # A reader that went away (`| head`) or a stream already closed: nothing left to deliver.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def _code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1
