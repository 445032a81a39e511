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


def _record_and_read(root: str, seconds: float) -> list[str]:
    """One ingest run's share of the catalog traffic: record a dump now and then, read the manifest and
    the scope catalog in between, as the ingest's checks and the sensor do without the lock."""
    import datetime as dt
    import time
    import uuid

    from pipelines.ingest.catalog import record_dump
    from pipelines.tables import MANIFEST_SCHEMA, DataLayout

    layout = DataLayout.at(root)
    errors, n, end = [], 0, time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            if n % 3 == 0:
                entry: dict = dict.fromkeys(MANIFEST_SCHEMA)
                entry |= {"dump_id": uuid.uuid4().hex, "seq": 1, "file": "f", "size": 1, "mtime_ns": 1,
                          "sha256": "x", "lines": 1, "staged": 1, "quarantined": 0, "scopes": ["s"],
                          "mapping": "m", "ingested_at": dt.datetime.now(dt.UTC)}  # fmt: skip
                record_dump(layout, entry, {f"s{n}": ("t", f"p{n}")})
            read_manifest(layout)
            read_scopes(layout)
        except Exception as exc:
            errors.append(repr(exc)[:200])
        n += 1
    return errors


def test_the_manifest_reads_whole_while_other_runs_replace_it(layout):
    """Concurrent ingest runs each replace the manifest (under the lock, by a rename) while others read it
    without the lock: a read sees one version or the other, never a mix (Polars opens a path more than once;
    read through the path, about one read in fifty failed with a broken page or footer)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # Spawned, as run processes are: a forked copy of this process would inherit Polars' thread pool.
    with ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(_record_and_read, [str(layout.root)] * 4, [6.0] * 4))
    assert [e for errors in results for e in errors] == []
    manifest = read_manifest(layout)
    assert manifest["dump_id"].n_unique() == manifest.height > 0


def test_a_manifest_read_again_is_decoded_once_and_never_stale(layout, dump, landing):
    dump("a.ndjson", [msg("t", "m1", "user", "q", 0)])
    ingest(layout, landing, ScopeMapping())
    first = read_manifest(layout)
    assert read_manifest(layout) is first  # the same bytes: the frame already made of them
    dump("b.ndjson", [msg("t", "m2", "assistant", "a", 1)])
    ingest(layout, landing, ScopeMapping())
    assert read_manifest(layout)["seq"].sort().to_list() == [1, 2]
    # Written back as it was (another run's rename): the older content is read, not the newest frame.
    path = layout.manifest
    newer = path.read_bytes()
    first.write_parquet(path)
    assert read_manifest(layout)["seq"].to_list() == [1]
    path.write_bytes(newer)
    assert read_manifest(layout)["seq"].sort().to_list() == [1, 2]
