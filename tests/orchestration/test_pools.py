"""Write slots per destination: a pool per destination, made once at the destination's ``writers``, held
around a load's writes, so one destination has at most that many writers while others write beside it."""

from __future__ import annotations

import threading
import time

import pytest

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
