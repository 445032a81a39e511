"""The manifest lists complete dumps only, in ingest order; rows of any other dump are never read."""

from __future__ import annotations

import polars as pl

from pipelines.ingest.catalog import read_manifest, read_scopes
from pipelines.ingest.staging import ingest
from pipelines.scopes import ScopeMapping
from tests.conftest import msg, staged_raw


def test_rerun_ingests_nothing_and_new_dump_gets_next_sequence(layout, dump, landing):
    dump("a.ndjson", [msg("t", "m1", "user", "q", 0)])
    assert len(ingest(layout, landing, ScopeMapping())) == 1
    assert ingest(layout, landing, ScopeMapping()) == []
    dump("b.ndjson", [msg("t", "m2", "assistant", "a", 1)])
    [r] = ingest(layout, landing, ScopeMapping())
    assert r.file.endswith("b.ndjson")
    manifest = read_manifest(layout).sort("seq")
    assert manifest["seq"].to_list() == [1, 2]
    assert staged_raw(layout).sort("dump_seq")["dump_seq"].to_list() == [1, 2]


def test_files_still_being_written_wait_for_the_settle_time(layout, dump, landing):
    import os
    import time

    old = dump("old.ndjson", [msg("t", "m1", "user", "q", 0)])
    os.utime(old, (time.time() - 60, time.time() - 60))
    dump("new.ndjson", [msg("t", "m2", "user", "q", 1)])
    [r] = ingest(layout, landing, ScopeMapping(), settle_seconds=30)
    assert r.file.endswith("old.ndjson")
    [r] = ingest(layout, landing, ScopeMapping())
    assert r.file.endswith("new.ndjson")


def test_rows_of_a_dump_whose_ingest_crashed_are_not_staged(layout, dump, landing):
    from pipelines.ingest.catalog import scope_dump_rows

    dump("a.ndjson", [msg("t", "m1", "user", "q", 0)])
    ingest(layout, landing, ScopeMapping())
    [scope] = read_scopes(layout)["scope"].to_list()
    assert len(scope_dump_rows(layout, scope)) == 1
    # Staged files of a dump that never reached the manifest (the process died mid-dump).
    orphan = layout.raw("crashed-000000000000") / f"scope={scope}"
    orphan.mkdir(parents=True)
    pl.DataFrame({"message_id": ["x"]}).write_parquet(orphan / "part.parquet")
    assert len(scope_dump_rows(layout, scope)) == 1
    assert "crashed-000000000000" not in scope_dump_rows(layout, scope)
