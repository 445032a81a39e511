"""A scope worker that fails outside its Dagster run (the instance's storage, a dead process) fails that
scope with one line; the other scopes are still run and reported."""

from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from assets.cli.instance import open_instance, run_config
from assets.cli.scope_pool import ScopeOutcome, ScopePool, _outcome
from assets.destination import EngramiaDestination
from assets.resources import BackfillSettings

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"


def test_an_exception_in_a_worker_is_a_failed_scope_with_one_line():
    future: Future = Future()
    future.set_exception(OSError("disk I/O error\n(Background on this error at: https://example)"))
    outcome = _outcome(future, "default__asst_a")
    assert outcome == ScopeOutcome("default__asst_a", None, False, error="OSError: disk I/O error")

    reported: Future = Future()
    reported.set_result(ScopeOutcome("default__asst_b", "run-1", True))
    assert _outcome(reported, "default__asst_b").success


class _DeadPool:
    """An executor whose worker processes died: every submit is refused."""

    def submit(self, *args: object) -> Future:
        raise BrokenProcessPool("A child process terminated abruptly")

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def test_a_dead_worker_pool_fails_each_scope_left_and_returns(tmp_path):
    pool = ScopePool(str(tmp_path), {}, progress=False)
    pool.pool = _DeadPool()  # type: ignore[assignment]
    outcomes: list[ScopeOutcome] = []
    try:
        assert pool.run(["default__asst_a", "default__asst_b"], outcomes.append)
    finally:
        pool.__exit__(None, None, None)
    assert [o.scope for o in outcomes] == ["default__asst_a", "default__asst_b"]
    assert not any(o.success for o in outcomes)
    assert all(o.error and o.error.startswith("a scope worker process died") for o in outcomes)


def _holds_gx(barrier: Any) -> bool:
    # Both workers wait here at once, so each serves exactly one of the two calls.
    barrier.wait(timeout=120)
    return "great_expectations" in sys.modules


def test_the_worker_left_idle_by_the_ingest_imports_gx_meanwhile(tmp_path):
    """A worker's first messages step waits for GX (seconds); the worker with nothing to do during the
    ingest imports it then, so one of the first two scope runs does not wait."""
    settings = BackfillSettings(data_dir=str(tmp_path), landing=str(SAMPLE))
    config = run_config(settings, EngramiaDestination(mode="none"))
    with ScopePool(str(tmp_path), config, progress=False, prepare=lambda: open_instance(tmp_path)) as pool:
        assert pool.ingest().success
        with multiprocessing.get_context("spawn").Manager() as manager:
            barrier = manager.Barrier(2)
            calls = [pool.pool.submit(_holds_gx, barrier) for _ in range(2)]
            assert sorted(call.result(timeout=180) for call in calls) == [False, True]
