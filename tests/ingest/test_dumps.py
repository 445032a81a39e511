"""Dumps are found in name order, named per file, and read in chunks that keep every line and its number."""

from __future__ import annotations

import gzip
import random

import polars as pl
import pytest

from pipelines.ingest.dumps import discover_dumps, line_count, split_chunks
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


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b""])
def test_a_plain_file_is_cut_where_its_stream_would_be(tmp_path, ending):
    """A plain file's chunks are found by looking ahead for the line end, a compressed one's by reading
    on to it: both give the same chunks, lines and numbers, whatever the chunk size (lines longer than
    a chunk and than a look-ahead read included)."""
    rng = random.Random(7)
    lines = [b"x" * rng.choice([0, 1, 5, 40, 900, 70_000]) for _ in range(300)] + [b"last"]
    data = b"\n".join(lines) + ending
    plain = tmp_path / "d.ndjson"
    plain.write_bytes(data)
    packed = tmp_path / "d.ndjson.gz"
    packed.write_bytes(gzip.compress(data))
    for chunk_bytes in (1, 2, 997, 65_536, 1 << 20, len(data), len(data) + 1):
        cut = list(split_chunks(plain, chunk_bytes))
        streamed = list(split_chunks(packed, chunk_bytes))
        assert [c[0] for c in cut] == [c[0] for c in streamed]
        assert b"".join(c[0] for c in cut) == data
        assert all(c[0].endswith(b"\n") for c in cut[:-1])
        numbers = pl.concat([c[1] for c in cut])["line_no"].to_list()
        assert numbers == list(range(1, line_count(data) + 1))
        assert sum(c[1].height for c in cut) == line_count(data) == len(lines)
