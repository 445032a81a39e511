"""One message per message_id: exact repeats collapse and are counted, conflicts are quarantined."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pipelines.ingest.catalog import read_scopes
from pipelines.ingest.messages import MessageStats, pending_message_dumps, scan_messages, stage_messages
from pipelines.ingest.staging import ingest
from pipelines.quality.reconcile import message_counts
from pipelines.scopes import ScopeMapping
from pipelines.tables import DataLayout
from tests.conftest import msg


def _stage_all(layout: DataLayout, landing: Path) -> dict[str, list[MessageStats]]:
    ingest(layout, landing, ScopeMapping())
    return {s: stage_messages(layout, s) for s in read_scopes(layout)["scope"]}


def test_repeats_within_and_across_dumps(layout, dump, landing):
    q = msg("t", "m1", "user", "question", 0)
    a = msg("t", "m2", "assistant", "answer", 5)
    dump("a.ndjson", [q, a, q])
    dump("b.ndjson", [q, {**a, "text": "a different answer"}, msg("t", "m3", "user", "more", 9)])
    [(scope, stats)] = _stage_all(layout, landing).items()
    assert [(s.rows_in, s.messages, s.repeats, s.conflicts) for s in stats] == [(3, 2, 1, 0), (3, 1, 1, 1)]
    messages = scan_messages(layout, scope).collect().sort("line_no")
    assert messages["message_id"].sort().to_list() == ["m1", "m2", "m3"]
    assert messages.filter(pl.col("message_id") == "m2")["text"].item() == "answer"
    q = pl.read_parquet(layout.quarantine() / "*conflicts.parquet")
    assert q.height == 1
    assert "m2 already staged with different content" in q["reason"].item()
    assert "line 2" in q["reason"].item()
    counts = message_counts(layout, scope)
    assert counts.lines_in == 6 and counts.lines_reconcile
    assert (counts.messages, counts.quarantined, counts.repeats) == (3, 1, 2)


def test_conflict_inside_one_dump_keeps_the_first_copy(layout, dump, landing):
    dump("a.ndjson", [msg("t", "m1", "user", "first", 0), msg("t", "m1", "user", "second", 0)])
    [(scope, [stats])] = _stage_all(layout, landing).items()
    assert (stats.messages, stats.conflicts) == (1, 1)
    assert scan_messages(layout, scope).collect()["text"].to_list() == ["first"]


def test_staging_is_incremental_and_idempotent(layout, dump, landing):
    dump("a.ndjson", [msg("t", "m1", "user", "q", 0)])
    [(scope, _)] = _stage_all(layout, landing).items()
    assert stage_messages(layout, scope) == []
    dump("b.ndjson", [msg("t", "m2", "assistant", "a", 1)])
    ingest(layout, landing, ScopeMapping())
    assert len(pending_message_dumps(layout, scope)) == 1
    [stats] = stage_messages(layout, scope)
    assert stats.messages == 1
    assert pending_message_dumps(layout, scope) == []
