"""A zip's ``.gz`` / ``.zst`` members are dumps like the same files outside a zip: decompressed by their
own suffix, named without it, every line kept with its number."""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

import polars as pl
import zstandard

from pipelines.ingest.dumps import discover_dumps
from pipelines.ingest.formats.stream import inner_name, open_member
from pipelines.ingest.staging import ingest
from pipelines.scopes import ScopeMapping
from pipelines.tables import DataLayout
from tests.conftest import msg, staged_quarantine, staged_raw


def _ndjson(rows: list[dict | str]) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def _export(folder: Path) -> dict[str, bytes]:
    """Writes ``folder/export.zip``; each member's content, uncompressed. A broken line in each member
    sits at another line number: a member read from the wrong start would shift them."""
    folder.mkdir(parents=True)
    a = _ndjson([msg("ta", "a1", "user", "qa", 0), msg("ta", "a2", "assistant", "aa", 1), "{broken"])
    b = _ndjson([msg("tb", "b1", "user", "qb", 2), "{broken", msg("tb", "b2", "assistant", "ab", 3)])
    c = _ndjson(["{broken", msg("tc", "c1", "user", "qc", 4), msg("tc", "c2", "assistant", "ac", 5)])
    with zipfile.ZipFile(folder / "export.zip", "w") as archive:
        archive.writestr("a.ndjson.gz", gzip.compress(a))
        archive.writestr("b.ndjson.zst", zstandard.ZstdCompressor().compress(b))
        archive.writestr("c.ndjson", c)
    return {"a.ndjson.gz": a, "b.ndjson.zst": b, "c.ndjson": c}


def test_members_are_read_decompressed_and_named_without_the_suffix(tmp_path: Path) -> None:
    content = _export(tmp_path / "in")
    dumps = discover_dumps(tmp_path / "in")
    assert [d.member for d in dumps] == list(content)
    assert [inner_name(d.path, d.member) for d in dumps] == ["a.ndjson", "b.ndjson", "c.ndjson"]
    for d in dumps:
        with open_member(d.path, d.member) as f:
            assert f.read() == content[d.member]


def test_gz_zst_and_plain_members_ingest_with_their_line_numbers(tmp_path: Path) -> None:
    _export(tmp_path / "in")
    layout = DataLayout.at(tmp_path / "data")
    results = ingest(layout, tmp_path / "in", ScopeMapping())
    got = {r.file.rsplit("!", 1)[1]: (r.format, r.lines, r.staged, r.quarantined) for r in results}
    assert got == {
        "a.ndjson.gz": ("guide-ndjson", 3, 2, 1),
        "b.ndjson.zst": ("guide-ndjson", 3, 2, 1),
        "c.ndjson": ("guide-ndjson", 3, 2, 1),
    }
    raw = staged_raw(layout).with_columns(member=pl.col("message_id").str.slice(0, 1))
    lines = {(m, n) for m, n in raw.select("member", "line_no").iter_rows()}
    assert lines == {("a", 1), ("a", 2), ("b", 1), ("b", 3), ("c", 2), ("c", 3)}
    q = staged_quarantine(layout)
    assert sorted((f.rsplit("!", 1)[1], n) for f, n in q.select("file", "line_no").iter_rows()) == [
        ("a.ndjson.gz", 3),
        ("b.ndjson.zst", 2),
        ("c.ndjson", 1),
    ]
