"""Heavy libraries imported on a thread ahead of their first use.

engramia takes a good part of a second to import and Great Expectations several seconds (scipy, pandas,
sqlalchemy and altair come with it). A process that will need one starts its import beside work that runs
in DuckDB, Polars or Arrow with the GIL released (ingest, staging a scope), instead of paying it on the
critical path at the first call. The first user calls :func:`ready` before its own import: a package with
circular imports (GX has them) imported from two threads at once can hand one of them a partially
initialised module.

GX imports every expectation it ships when it is imported, and one of them (the KL divergence, which this
project never runs) brings ``scipy.stats`` and ``altair``: about a quarter of GX's import. Those two are
:func:`deferred`: present in ``sys.modules`` at once, executed at their first use, if any.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import threading
import types
from collections.abc import Iterable

_started: dict[str, threading.Thread] = {}
_lock = threading.Lock()

GREAT_EXPECTATIONS = "great_expectations"
ENGRAMIA_LOAD = "pipelines.load.embedded"

# Imported by GX only for expectations this project does not use (see the module's docstring).
GX_UNUSED = ("scipy.stats", "altair")


class _Deferred(types.ModuleType):
    """A module whose code runs at the first access to a name it has not defined yet.

    Unlike :class:`importlib.util.LazyLoader`, whose module runs on any attribute access, ``__spec__``
    included, its import attributes are plain attributes: Python 3.12's import statement reads
    ``__spec__`` of a module already in ``sys.modules``, which would run a lazy module at once.
    """

    def __getattr__(self, name: str) -> object:
        # Called only for names not in the module's namespace: before its code ran, or a name it lacks.
        # Another thread waits for the code to finish, as it would for an import in progress.
        with _deferred_lock:
            if not self.__dict__.get("_deferred_ran", False):
                self.__dict__["_deferred_ran"] = True
                try:
                    self.__spec__.loader.exec_module(self)
                except BaseException:
                    _forget(self.__name__)
                    raise
        if name in self.__dict__:
            return self.__dict__[name]
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")


_deferred_lock = threading.RLock()


def _forget(name: str) -> None:
    sys.modules.pop(name, None)
    parent, _, child = name.rpartition(".")
    if parent in sys.modules:
        with contextlib.suppress(AttributeError):
            delattr(sys.modules[parent], child)


def deferred(modules: Iterable[str]) -> None:
    """Put each of ``modules`` not imported yet into ``sys.modules`` as a :class:`_Deferred` module.

    Its parent packages are imported now (they are light for the modules named here). A module that
    cannot be found is left alone: importing it later fails as it would have.
    """
    for name in modules:
        if name in sys.modules:
            continue
        with contextlib.suppress(ImportError, ValueError):
            spec = importlib.util.find_spec(name)
            if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
                continue
            module = importlib.util.module_from_spec(spec)
            module.__class__ = _Deferred
            sys.modules.setdefault(name, module)
            parent, _, child = name.rpartition(".")
            if parent:
                setattr(sys.modules[parent], child, sys.modules[name])


def _import(module: str) -> None:
    if module == GREAT_EXPECTATIONS:
        deferred(GX_UNUSED)
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
