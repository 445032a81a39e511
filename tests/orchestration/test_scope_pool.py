"""A scope worker that fails outside its Dagster run (the instance's storage, a dead process) fails that
scope with one line; the other scopes are still run and reported."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest

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


def _surroundings(marker: str) -> tuple[str | None, str]:
    os.write(1, f"{marker} on stdout\n".encode())
    os.write(2, f"{marker} on stderr\n".encode())
    return os.environ.get("SCOPE_POOL_TEST_KEY"), os.getcwd()


def test_a_worker_has_the_clis_environment_folder_and_output_of_the_moment_it_starts(tmp_path, monkeypatch):
    """Workers are forked from a server started by the first pool: a second pool's workers must still
    see what the CLI has when they start (a key set since, another folder, its output sent elsewhere
    since), as spawned workers did."""
    first = tmp_path / "first"
    with ScopePool(str(first), {}, progress=False, prepare=lambda: open_instance(first)) as pool:
        assert pool.pool.submit(_surroundings, "first").result(timeout=120)[0] is None

    monkeypatch.setenv("SCOPE_POOL_TEST_KEY", "set after the first pool")
    monkeypatch.chdir(tmp_path)
    second = tmp_path / "second"
    outputs = {fd: tmp_path / f"fd{fd}.txt" for fd in (1, 2)}
    saved = {fd: os.dup(fd) for fd in outputs}
    try:
        for fd, path in outputs.items():
            with path.open("w") as file:
                os.dup2(file.fileno(), fd)
        with ScopePool(str(second), {}, progress=False, prepare=lambda: open_instance(second)) as pool:
            calls = [pool.pool.submit(_surroundings, f"call {n}") for n in range(4)]
            seen = {call.result(timeout=120) for call in calls}
    finally:
        for fd, original in saved.items():
            os.dup2(original, fd)
            os.close(original)
    assert seen == {("set after the first pool", str(tmp_path))}
    out, err = (outputs[fd].read_text() for fd in (1, 2))
    assert all(f"call {n} on stdout" in out and f"call {n} on stderr" in err for n in range(4))


_SERVER_OUTPUT = """
import multiprocessing.forkserver as forkserver, os, sys
from assets.cli.worker_start import start_server_early
start_server_early()
pid = forkserver._forkserver._forkserver_pid
print(os.readlink(f"/proc/{pid}/fd/1"), os.readlink(f"/proc/{pid}/fd/2"))
print("the command's own stderr", file=sys.stderr)
"""


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="reads the server's descriptors in /proc")
def test_the_fork_server_started_early_holds_none_of_the_commands_output():
    """Started at the command's first line, the server may still be importing when a refused or
    nothing-new command ends: it must not hold the command's output open, or a caller reading it to its
    end would wait for those imports. The command keeps its own output."""
    done = subprocess.run(
        [sys.executable, "-c", _SERVER_OUTPUT], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.split() == [os.devnull, os.devnull]
    assert "the command's own stderr" in done.stderr
