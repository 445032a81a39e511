"""Write slots per destination: a pool per destination, made once at the destination's ``writers``, held
around a load's writes, so one destination has at most that many writers while others write beside it."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import dagster as dg
import pytest
from dagster._core.utils import make_new_run_id

from assets.abandoned_runs import (
    PROCESS_TAG,
    abandoned,
    close_abandoned_runs,
    close_abandoned_runs_after,
    process_tags,
)
from assets.pools import destination_pool, destination_slot, ensure_destination_pool
from pipelines.ingest.catalog import read_scopes
from pipelines.load.embedded import destination_id
from pipelines.load.rest.options import destination_id as rest_destination_id
from pipelines.load.rest.servers import ServerConfig
from tests.support import graph


def test_each_destination_has_a_pool_of_its_own(tmp_path):
    one = destination_pool(destination_id(tmp_path / "a" / "engramia"))
    other = destination_pool(destination_id(tmp_path / "b" / "engramia"))
    server = destination_pool(rest_destination_id(ServerConfig(url="http://127.0.0.1:8000", api_key_env="K")))
    assert len({one, other, server}) == 3
    assert one.startswith("engramia_writes/embedded-") and server.startswith(
        "engramia_writes/rest-127.0.0.1-8000"
    )
    assert destination_pool(destination_id(tmp_path / "a" / "engramia")) == one


def test_the_pool_is_made_once_and_a_limit_set_by_hand_is_kept(pg_instance, layout):
    storage = pg_instance.event_log_storage
    ensure_destination_pool(pg_instance, layout, "engramia_writes/x", 1)
    ensure_destination_pool(pg_instance, layout, "engramia_writes/x", 1)
    assert storage.get_concurrency_info("engramia_writes/x").slot_count == 1
    # As `dagster instance concurrency set engramia_writes/y 3` does, for a Postgres-backed server.
    storage.set_concurrency_slots("engramia_writes/y", 3)
    ensure_destination_pool(pg_instance, layout, "engramia_writes/y", 1)
    assert storage.get_concurrency_info("engramia_writes/y").slot_count == 3


def _hold(instance, pool: str, run_id: str, spans: list, lines: list) -> None:
    with destination_slot(instance, pool, run_id, "engramia_scopes", log=lines.append, poll_seconds=0.05):
        start = time.monotonic()
        time.sleep(1.0)  # long enough that two holders at once overlap, even on a busy machine
        spans.append((start, time.monotonic()))


def _overlaps(spans: list[tuple[float, float]]) -> bool:
    first, second = sorted(spans)
    return second[0] < first[1]


@pytest.mark.parametrize(("writers", "overlap"), [(1, False), (2, True)])
def test_a_destination_has_at_most_its_writers(pg_instance, layout, writers, overlap):
    pool = "engramia_writes/store"
    ensure_destination_pool(pg_instance, layout, pool, writers)
    spans: list = []
    lines: list = []
    threads = [
        threading.Thread(target=_hold, args=(pg_instance, pool, f"run-{i}", spans, lines)) for i in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(spans) == 2
    assert _overlaps(spans) is overlap
    if not overlap:
        # With two slots a holder may still wait a moment: two claims at once can pick the same free slot
        # row, and the one that lost it waits for the other slot (assets.pools._claim). The overlap above
        # is what shows both held at once.
        assert any(line.startswith("waiting for a write slot") for line in lines)
    info = pg_instance.event_log_storage.get_concurrency_info(pool)
    assert (info.slot_count, info.active_slot_count) == (writers, 0)  # every slot given back


@pytest.mark.parametrize("storage_of", ["instance", "pg_instance"])
def test_a_load_queued_after_the_last_holder_left_still_gets_the_slot(request, layout, storage_of):
    """The lost wake-up: a newcomer counts no free slot while another run holds it, that run frees the slot
    (finding nobody queued to hand it to), and only then is the newcomer's claim queued, unassigned."""
    instance = request.getfixturevalue(storage_of)
    storage = instance.event_log_storage
    pool = "engramia_writes/store"
    ensure_destination_pool(instance, layout, pool, 1)
    with destination_slot(instance, pool, "run-1", "engramia_scopes"):
        assert not storage.has_unassigned_slots(pool)
    storage.add_pending_step(pool, "run-2", "engramia_scopes", should_assign=False)
    held: list[str] = []

    def load() -> None:
        with destination_slot(instance, pool, "run-2", "engramia_scopes", log=held.append, poll_seconds=0.05):
            held.append("wrote")

    waiting = threading.Thread(target=load, daemon=True)
    waiting.start()
    waiting.join(timeout=30)
    assert not waiting.is_alive(), "the queued load never got the free slot"
    assert "wrote" in held
    assert storage.get_concurrency_info(pool).active_slot_count == 0


def test_a_load_waiting_on_this_machine_takes_the_slot_as_soon_as_it_is_freed(tmp_path, layout):
    """The holder says it freed its slot (a file in the instance's folder): a waiting load asks at once
    instead of at its next poll, here minutes away. Two instances of one folder, as two processes have."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    holder, waiter = (dg.DagsterInstance.from_config(str(home)) for _ in range(2))
    pool = "engramia_writes/store"
    ensure_destination_pool(holder, layout, pool, 1)
    took: list[float] = []

    def load() -> None:
        with destination_slot(waiter, pool, "run-2", "engramia_scopes", poll_seconds=300):
            took.append(time.monotonic())

    with destination_slot(holder, pool, "run-1", "engramia_scopes"):
        waiting = threading.Thread(target=load, daemon=True)
        waiting.start()
        # The waiter has asked once and is watching for the signal by now.
        time.sleep(1.0)
        assert not took
    freed = time.monotonic()
    waiting.join(timeout=60)
    assert not waiting.is_alive(), "the waiting load did not notice the freed slot"
    assert took[0] - freed < 5  # a claim and its settle: well under a second unless the machine is swamped
    assert waiter.event_log_storage.get_concurrency_info(pool).active_slot_count == 0


def test_two_destinations_write_side_by_side(pg_instance, layout):
    for pool in ("engramia_writes/a", "engramia_writes/b"):
        ensure_destination_pool(pg_instance, layout, pool, 1)
    spans: list = []
    threads = [
        threading.Thread(target=_hold, args=(pg_instance, f"engramia_writes/{p}", f"run-{p}", spans, []))
        for p in ("a", "b")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _overlaps(spans)


def test_a_failed_load_gives_its_slot_back(pg_instance, layout):
    pool = "engramia_writes/store"
    ensure_destination_pool(pg_instance, layout, pool, 1)
    with pytest.raises(RuntimeError), destination_slot(pg_instance, pool, "run-1", "engramia_scopes"):
        raise RuntimeError("the load failed")
    assert pg_instance.event_log_storage.get_concurrency_info(pool).active_slot_count == 0
    with destination_slot(pg_instance, pool, "run-2", "engramia_scopes", poll_seconds=0.05):
        pass


def test_a_scope_run_waits_while_its_destination_is_written_by_another_run(layout, sample_dir, instance):
    """Through the graph: the load step claims its store's pool (made by the first scope bound for it) and
    waits, saying so in its log, until the other writer frees the slot."""
    assert graph.ingest(layout, sample_dir, instance).success
    scope = read_scopes(layout)["scope"].to_list()[0]
    pool = destination_pool(destination_id(layout.engramia))
    ensure_destination_pool(instance, layout, pool, 1)
    storage = instance.event_log_storage
    assert storage.claim_concurrency_slot(pool, "other-run", "engramia_scopes").is_claimed

    def release_once_the_load_waits() -> None:
        deadline = time.monotonic() + 120
        while not storage.get_concurrency_info(pool).pending_step_count and time.monotonic() < deadline:
            time.sleep(0.1)
        storage.free_concurrency_slot_for_step("other-run", "engramia_scopes")

    releaser = threading.Thread(target=release_once_the_load_waits)
    releaser.start()
    result = graph.scope_run(layout, sample_dir, instance, scope)
    releaser.join()
    assert result.success
    logs = [r.user_message for r in instance.all_logs(result.run_id)]
    assert any(m.startswith(f"waiting for a write slot of {pool}") for m in logs)
    assert any(m.startswith(f"took a write slot of {pool} after") for m in logs)
    assert storage.get_concurrency_info(pool).active_slot_count == 0
    assert graph.loaded(result)


def _run_of(instance, process_tag: str | None) -> dg.DagsterRun:
    run_id = make_new_run_id()
    tags = {PROCESS_TAG: process_tag.format(run_id=run_id)} if process_tag else {}
    run = dg.DagsterRun(job_name="scope_job", run_id=run_id, status=dg.DagsterRunStatus.STARTED, tags=tags)
    instance.add_run(run)
    return run


def test_a_slot_held_by_a_run_whose_process_died_is_given_back(instance, layout):
    """A worker killed in the middle of its load leaves its run running and its slot taken: the next load
    would wait for it for ever. It takes the slot, and the dead run is recorded as failed."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = socket.gethostname()
    dead = _run_of(instance, f"{host}:{gone.pid}:?:{{run_id}}")
    # A re-execution from the UI carries its parent's tags: not judged by them (the run id differs).
    copied = _run_of(instance, f"{host}:{gone.pid}:?:{dead.run_id}")
    # A live process's run, and a run of another machine, are left as they are.
    live = _run_of(instance, f"{host}:{os.getpid()}:?:{{run_id}}")
    elsewhere = _run_of(instance, f"other-host:{gone.pid}:?:{{run_id}}")
    pool = "engramia_writes/store"
    ensure_destination_pool(instance, layout, pool, 1)
    storage = instance.event_log_storage
    assert storage.claim_concurrency_slot(pool, dead.run_id, "engramia_scopes").is_claimed
    lines: list[str] = []
    holders: list[str] = []

    def load() -> None:
        with destination_slot(instance, pool, "run-2", "engramia_scopes", log=lines.append):
            holders.extend(s.run_id for s in storage.get_concurrency_info(pool).claimed_slots)

    # On a thread: without the fix the load waits for ever, and the test fails instead of hanging.
    waiting = threading.Thread(target=load, daemon=True)
    waiting.start()
    waiting.join(timeout=10)
    assert not waiting.is_alive(), lines
    assert holders == ["run-2"]
    assert any(dead.run_id in line and "had not given it back" in line for line in lines), lines
    assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
    for kept in (copied, live, elsewhere):
        assert instance.get_run_by_id(kept.run_id).status == dg.DagsterRunStatus.STARTED
    assert close_abandoned_runs(instance) == []


def test_the_cli_closes_the_runs_its_dead_processes_left_running(instance):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = _run_of(instance, f"{socket.gethostname()}:{gone.pid}:?:{{run_id}}")
    untagged = _run_of(instance, None)
    said: list[str] = []
    assert close_abandoned_runs(instance, said.append) == [dead.run_id]
    assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(untagged.run_id).status == dg.DagsterRunStatus.STARTED
    assert said and "recorded as failed" in said[0]


class _FullDisk:
    """An instance whose run storage can no longer be read (the disk filled during the run)."""

    def get_runs(self, *args: object, **kwargs: object) -> list:
        raise sqlite3.OperationalError("disk I/O error")


def test_the_sweep_after_the_workers_never_replaces_the_commands_own_outcome():
    said: list[str] = []
    close_abandoned_runs_after(_FullDisk(), said.append)  # type: ignore[arg-type]
    assert said == [
        "warning: runs a stopped worker left running were not looked for: OperationalError: disk I/O error"
    ]


def test_a_run_is_judged_by_the_process_its_tag_names():
    run_id = make_new_run_id()
    running = dg.DagsterRun(job_name="j", run_id=run_id, status=dg.DagsterRunStatus.STARTED)
    assert not abandoned(running.with_tags(process_tags(run_id)))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host, _, started, _ = process_tags(run_id)[PROCESS_TAG].split(":")
    assert abandoned(running.with_tags({PROCESS_TAG: f"{host}:{gone.pid}:{started}:{run_id}"}))
    # The process id alive, but another process's start: the id was taken again.
    assert abandoned(running.with_tags({PROCESS_TAG: f"{host}:{os.getpid()}:1:{run_id}"}))
