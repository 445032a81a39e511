"""The loads' pool is created by the ingest at the instance's default limit, once, and a limit set by hand
is kept."""

from __future__ import annotations

from assets.pools import POOL, ensure_pool


def test_the_pool_is_created_once_at_the_default_limit(pg_instance, layout):
    storage = pg_instance.event_log_storage
    assert POOL not in {p.name for p in storage.get_pool_limits()}
    ensure_pool(pg_instance, layout)
    ensure_pool(pg_instance, layout)
    info = storage.get_concurrency_info(POOL)
    assert (info.limit, info.slot_count) == (1, 1)


def test_a_limit_set_by_hand_is_kept(pg_instance, layout):
    # As `dagster instance concurrency set engramia_writes 3` does, for a Postgres-backed server.
    pg_instance.event_log_storage.set_concurrency_slots(POOL, 3)
    ensure_pool(pg_instance, layout)
    assert pg_instance.event_log_storage.get_concurrency_info(POOL).slot_count == 3
