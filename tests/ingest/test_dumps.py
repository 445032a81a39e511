"""Dumps are found in name order, named per file, and read in chunks that keep every line and its number."""

from __future__ import annotations

import polars as pl
import pytest

from pipelines.ingest.dumps import discover_dumps
from pipelines.ingest.staging import ingest
from pipelines.scopes import ScopeMapping
from tests.conftest import msg, staged_quarantine, staged_raw, write_ndjson


def test_discover_dumps_takes_ndjson_and_jsonl_in_name_order(landing):
    for name in ("b.jsonl", "a.ndjson", "notes.txt", ".hidden.ndjson"):
        (landing / name).write_text("")
    assert [d.path.name for d in discover_dumps(landing)] == ["a.ndjson", "b.jsonl"]
    with pytest.raises(FileNotFoundError):
        discover_dumps(landing / "missing")


def test_same_name_size_and_time_in_two_folders_are_two_dumps(layout, landing):
    import os

    a = write_ndjson(landing / "day1" / "export.ndjson", [msg("t1", "m1", "user", "q", 0)])
    b = write_ndjson(landing / "day2" / "export.ndjson", [msg("t2", "m2", "user", "q", 0)])
    os.utime(b, ns=(a.stat().st_atime_ns, a.stat().st_mtime_ns))
    results = ingest(layout, landing, ScopeMapping())
    assert len(results) == 2 and len({r.dump_id for r in results}) == 2
    assert staged_raw(layout)["message_id"].sort().to_list() == ["m1", "m2"]


def test_lines_reconcile_across_chunk_boundaries(layout, landing):
    rows = [
        msg(f"t{i // 4}", f"m{i}", "user" if i % 2 == 0 else "assistant", f"text {i} " * (i % 7), i)
        for i in range(500)
    ]
    rows[123] = "{broken"
    rows[400] = ""
    write_ndjson(landing / "d.ndjson", rows)
    # A tiny chunk size forces many chunks: line numbers must continue across them.
    [r] = ingest(layout, landing, ScopeMapping(), chunk_bytes=997)
    assert r.lines == 500 and r.staged + r.quarantined == 500
    q = staged_quarantine(layout)
    assert q["line_no"].to_list() == [124, 401]
    raw = staged_raw(layout)
    assert raw.height == 498
    assert raw.select(
        (pl.col("message_id").str.slice(1).cast(pl.Int64) + 1 == pl.col("line_no")).all()
    ).item()


def test_file_without_trailing_newline_and_crlf(layout, landing):
    path = landing / "d.jsonl"
    import json

    lines = [json.dumps(msg("t", "m1", "user", "q", 0)), json.dumps(msg("t", "m2", "assistant", "a", 1))]
    path.write_bytes(("\r\n".join(lines)).encode())
    [r] = ingest(layout, landing, ScopeMapping())
    assert (r.lines, r.staged, r.quarantined) == (2, 2, 0)
    assert staged_raw(layout)["text"].to_list() == ["q", "a"]
