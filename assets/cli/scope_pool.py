"""The runs of a CLI run in worker processes: the ingest, then the scope runs side by side, at most one per
core (two at most).

Scopes share nothing after ingest, and the core path (:mod:`pipelines.runner`) carries two at a time on
threads. Dagster runs cannot share a process that way: a run mirrors the process's stdout and stderr into
its compute logs at the file-descriptor level, so two runs on threads would write into each other's logs
and restore each other's streams. A worker process executes its scope runs one after another, recorded in
the same instance as the CLI's own runs, and keeps what it imported (Dagster, Polars, DuckDB, engramia,
GX) for every scope it runs. The workers are forked from a fork server that has imported Dagster once
for both (:mod:`assets.cli.worker_start`), started while the CLI makes the instance. One destination is
written by one load at a time across processes (its write slot, :mod:`assets.pools`; the embedded store
also holds :func:`pipelines.load.store.store_writes`), as the core path does with a lock.

Ctrl-C reaches the workers (the terminal signals the whole process group; a signal sent to the CLI alone
is passed on to them): each stops its run as a run in the CLI's own process stops, and reports it.
"""

from __future__ import annotations

import argparse
import atexit
import io
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from assets.cli.worker_start import Surroundings, worker_context

if TYPE_CHECKING:
    from dagster import JobExecutionResult

    from pipelines.quality.reconcile import ScopeCounts

# Seconds the workers get to stop their runs after an interrupt before the CLI reports without them.
STOP_SECONDS = 10.0
MAX_WORKERS = 2


@dataclass
class ScopeOutcome:
    scope: str
    run_id: str | None
    success: bool
    stopped: bool = False
    error: str | None = None
    failed_checks: list[str] = field(default_factory=list)
    # Optional steps that failed without failing the run (the warehouse views).
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # The scope's figures (assets.cli.summary.scope_summary), read back by the worker after a run that
    # succeeded: beside the other worker's run, not all at the end of the CLI's.
    summary: dict[str, Any] | None = None


_instance: Any = None


_interrupted = False


def _note_interrupt(signum: int, frame: object) -> None:
    # Between runs an interrupt is only noted (a worker that died here would take the other worker's
    # report with it); while a run executes, Dagster's own handler stops the run.
    global _interrupted
    _interrupted = True


class _Forwarded(io.TextIOBase):
    """A worker's progress, written into a queue the CLI prints from: the CLI's stderr may not be the
    file descriptor the worker inherited (a caller that captures ``sys.stderr``)."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def write(self, text: str) -> int:
        self.queue.put(text)
        return len(text)

    def isatty(self) -> bool:
        return _tty


_progress_out: _Forwarded | None = None
_tty = False


def _exit_now() -> None:
    """A worker's last exit handler: it ends the process without the interpreter's teardown."""
    # Freeing Dagster's, GX's and Polars' modules one by one takes over a second, and the CLI waits for
    # its workers before it exits. Nothing is left to write by then: the runs are over, multiprocessing
    # has flushed the progress queue before the exit handlers, and the handlers registered after this
    # one (every library's) have run.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _start_worker(progress: Any, tty: bool, surroundings: Surroundings) -> None:
    global _progress_out, _tty
    surroundings.adopt()
    atexit.register(_exit_now)
    signal.signal(signal.SIGINT, _note_interrupt)
    _progress_out, _tty = _Forwarded(progress), tty
    # GX is not imported here: two workers importing it beside the CLI's ingest made the ingest half as
    # slow again (7.7 -> 12.0 s at 1M messages). The worker left idle by the ingest imports it
    # (_import_checks); the other's first messages step imports it ahead.


def _import_checks() -> None:
    """GX, imported by the worker that waits while the other ingests: a worker's first messages step
    otherwise waits seconds for it, before the first scope can load."""
    from pipelines.imports import GREAT_EXPECTATIONS, import_ahead

    import_ahead(GREAT_EXPECTATIONS).join()


@dataclass(frozen=True)
class SummaryOf:
    """What a worker needs to read a scope's figures back after its run (``scope_summary``, or
    ``unreadable_summary`` when its files cannot be read)."""

    data: str  # the layout's root
    destination: str
    load_skipped: str | None

    def read(self, scope: str, run_id: str | None, counts: ScopeCounts | None = None) -> dict[str, Any]:
        from assets.cli.summary import scope_summary, unreadable_summary
        from pipelines.tables import DataLayout

        layout = DataLayout.at(self.data)
        try:
            return scope_summary(layout, scope, run_id, self.destination, self.load_skipped, counts)
        except Exception as exc:
            return unreadable_summary(layout, scope, run_id, exc)


def run_scope(
    data_dir: str, config: dict[str, Any], scope: str, progress: bool, summary: SummaryOf | None = None
) -> ScopeOutcome:
    """One scope run in this worker process, recorded in the data folder's instance; with ``summary``,
    the scope's figures read back after a run that succeeded."""
    from assets.jobs import scope_job, scope_run_tags

    outcome, result = _run_job(data_dir, config, scope_job.name, scope, progress, scope_run_tags(scope))
    if summary is not None and result is not None and outcome.success and not outcome.stopped:
        from checks.staging import counts_of

        # The run's own reconciliation checks counted the scope's lines and messages a moment ago.
        counts = counts_of(result.get_asset_check_evaluations(), scope)
        outcome.summary = summary.read(scope, outcome.run_id, counts)
    return outcome


def run_ingest(data_dir: str, config: dict[str, Any], progress: bool) -> ScopeOutcome:
    """The run's ingest in this worker process (``scope`` is empty in its outcome)."""
    from assets.jobs import ingest_job

    return _run_job(data_dir, config, ingest_job.name, None, progress, {})[0]


def _run_job(
    data_dir: str,
    config: dict[str, Any],
    job_name: str,
    scope: str | None,
    progress: bool,
    tags: dict[str, str],
) -> tuple[ScopeOutcome, JobExecutionResult | None]:
    from assets.cli.guard import Interrupts
    from assets.cli.instance import (
        execute,
        failed_check_names,
        first_error,
        judge_warnings,
        optional_step_failures,
    )
    from assets.cli.progress import progress_factory
    from pipelines.progress import progress_bars

    _warm(data_dir)
    started = time.monotonic()
    if _interrupted:
        return ScopeOutcome(scope=scope or "", run_id=None, success=False, stopped=True), None
    with progress_bars(progress_factory(argparse.Namespace(no_progress=not progress), _progress_out)):
        result = execute(_instance, job_name, config, partition_key=scope, tags=tags)
    outcome = ScopeOutcome(
        scope=scope or "",
        run_id=result.run_id,
        success=result.success,
        # A run that finished before the interrupt reached it is done, not stopped.
        stopped=not result.success and (Interrupts().stopped(result) or _interrupted),
        error=None if result.success else first_error(result),
        failed_checks=failed_check_names(result),
        warnings=[*optional_step_failures(result), *judge_warnings(result)],
        seconds=time.monotonic() - started,
    )
    return outcome, result


def _import_modules() -> None:
    """What a worker's runs import (Dagster and the definitions), imported while the CLI makes the
    instance."""
    import assets.cli.instance
    import assets.jobs  # noqa: F401


def _warm(data_dir: str) -> None:
    """Imports and the instance of a worker, made while the CLI ingests."""
    global _instance
    if _instance is None:
        from pathlib import Path

        from assets.cli.instance import open_instance

        _instance = open_instance(Path(data_dir))


def _outcome(future: Future, scope: str) -> ScopeOutcome:
    """The worker's report, or a failed scope naming what went wrong where the worker itself failed (a
    storage error outside the run, a worker that died): the other scopes go on, and the summary says it."""
    try:
        return future.result()
    except Exception as exc:
        first_line = next(iter(str(exc).strip().splitlines()), "")
        error = f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__
        return ScopeOutcome(scope=scope, run_id=None, success=False, error=error)


class ScopePool:
    """Worker processes for a run's scope runs, started before the ingest so that they import what they
    need meanwhile (``with ScopePool(...) as pool: ...; pool.run(scopes, done)``)."""

    def __init__(
        self,
        data_dir: str,
        config: dict[str, Any],
        progress: bool,
        prepare: Callable[[], object] | None = None,
    ) -> None:
        self.data_dir, self.config, self.progress = data_dir, config, progress
        # Work of the CLI's own (making the instance) done while the workers start and import.
        self.prepare = prepare
        # Two scopes bound for one destination still write one at a time: each load waits for its
        # destination's write slot (assets/pools.py), the embedded store's also for the store's own lock.
        self.workers = max(1, min(MAX_WORKERS, os.cpu_count() or 1))
        self.interrupted = False
        context = worker_context()
        self.progress_queue = context.Queue()
        self.pool = ProcessPoolExecutor(
            self.workers,
            mp_context=context,
            initializer=_start_worker,
            initargs=(self.progress_queue, sys.stderr.isatty(), Surroundings()),
        )
        self.printer = threading.Thread(target=self._print_progress, daemon=True, name="worker-progress")
        self.printer.start()

    def _print_progress(self) -> None:
        while (text := self.progress_queue.get()) is not None:
            sys.stderr.write(text)
            sys.stderr.flush()

    def __enter__(self) -> ScopePool:
        try:
            # Starting a worker waits for the fork server's imports: ``prepare`` runs meanwhile.
            with ThreadPoolExecutor(1, thread_name_prefix="prepare") as side:
                prepared = side.submit(self.prepare or (lambda: None))
                for _ in range(self.workers):
                    self.pool.submit(_import_modules)
                prepared.result()
            # After ``prepare``: the workers open the instance the CLI has made.
            for _ in range(self.workers):
                self.pool.submit(_warm, self.data_dir)
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        stopping = self.interrupted or exc[0] is not None
        # A worker still in a run after an interrupt (a long native call) is not waited for.
        workers = list(getattr(self.pool, "_processes", {}).values())
        self.pool.shutdown(wait=not stopping, cancel_futures=True)
        for process in workers if stopping else ():
            process.join(timeout=1)
            if process.is_alive():
                process.terminate()
                process.join(timeout=1)
            # A worker that has run a Dagster run keeps Dagster's SIGTERM handler: idle, it outlives
            # terminate(), and the executor, broken by the other worker's end, waits for it for ever.
            if process.is_alive():
                process.kill()
        self.progress_queue.put(None)
        self.printer.join(timeout=5)

    def ingest(self) -> ScopeOutcome:
        """The run's ingest, in a worker: the memory it takes (a good part of it kept by the allocators
        after it ends) is then not held by the CLI's own process through every scope run."""
        future = self.pool.submit(run_ingest, self.data_dir, self.config, self.progress)
        if self.workers > 1:
            # Taken by the next idle worker: one core's worth of import beside the ingest's two.
            self.pool.submit(_import_checks)
        try:
            return _outcome(future, "")
        except KeyboardInterrupt:
            self.interrupted = True
            finished = self._stop_workers([future])
            outcome = _outcome(future, "") if finished else ScopeOutcome("", None, False)
            outcome.stopped = True
            return outcome

    def _stop_workers(self, running: list[Future]) -> set[Future]:
        """Pass an interrupt on to the workers and wait a while for their runs to stop."""
        for process in list(getattr(self.pool, "_processes", {}).values()):
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGINT)
        finished, _ = wait(running, timeout=STOP_SECONDS)
        return finished

    def run(
        self,
        scopes: list[str],
        done: Callable[[ScopeOutcome], None],
        summaries: Mapping[str, SummaryOf] | None = None,
    ) -> bool:
        """Run every scope, ``done`` called with each outcome as it arrives (with the scope's figures
        when ``summaries`` says how to read them); False if interrupted (the scopes not reported then
        did not run, or did not finish)."""
        # Handed out one per free worker: the executor queues ahead what it is given, and a queued run
        # could no longer be held back when the run is interrupted.
        todo = list(reversed(scopes))
        running: dict[Future, str] = {}
        try:
            while todo or running:
                while todo and len(running) < self.workers:
                    scope = todo.pop()
                    try:
                        summary = (summaries or {}).get(scope)
                        future = self.pool.submit(
                            run_scope, self.data_dir, self.config, scope, self.progress, summary
                        )
                    except BrokenProcessPool as exc:
                        done(ScopeOutcome(scope, None, False, error=f"a scope worker process died: {exc}"))
                        continue
                    running[future] = scope
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    done(_outcome(future, running.pop(future)))
            return True
        except KeyboardInterrupt:
            for future in self._stop_workers(list(running)):
                if future.exception() is None:
                    outcome = future.result()
                    # A run the interrupt ended reports a failure that may not name the interrupt.
                    outcome.stopped = outcome.stopped or not outcome.success
                    done(outcome)
            self.interrupted = True
            return False
