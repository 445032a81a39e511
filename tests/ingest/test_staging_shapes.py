"""Ingest's memory-bounded paths give exactly what the simple ones give: chunking never changes what is
staged or quarantined, and a dump without repeats shares its staged file (no timings here)."""

from __future__ import annotations

import json
import random

import polars as pl

from pipelines.ingest.catalog import read_scopes
from pipelines.ingest.messages import stage_messages
from pipelines.ingest.staging import ingest
from pipelines.scopes import ScopeMapping
from pipelines.tables import DataLayout
from tests.conftest import msg, write_ndjson


def _staged(layout: DataLayout) -> tuple[pl.DataFrame, pl.DataFrame]:
    raw = pl.read_parquet(layout.raw() / "**" / "*.parquet", hive_partitioning=True).sort("line_no")
    quarantine = pl.read_parquet(layout.quarantine() / "*.parquet").sort("line_no")
    return raw.drop("dump"), quarantine


def test_chunk_size_does_not_change_the_result(tmp_path):
    rows: list[dict | str] = []
    rng = random.Random(4)
    for i in range(400):
        rows.append(
            msg(f"t{i // 5}", f"m{i}", rng.choice(["user", "assistant"]), "x " * rng.randint(0, 40), i)
        )
    rows[10], rows[50], rows[51], rows[200] = "{broken", "", "   ", '["not", "an object"]'
    path = write_ndjson(tmp_path / "in" / "d.ndjson", rows)
    with path.open("ab") as f:
        f.write(
            b'{"thread_id": "t", "text": "\xff"}\r\n'
            + json.dumps(msg("t9", "m9", "user", "crlf", 1)).encode()
            + b"\r\n"
        )
    outcomes = []
    for chunk in (997, 64 * 1024, 24 * 1024 * 1024):
        layout = DataLayout.at(tmp_path / f"c{chunk}")
        [result] = ingest(layout, path.parent, ScopeMapping(), chunk_bytes=chunk)
        outcomes.append((result.lines, result.staged, result.quarantined, result.reasons, *_staged(layout)))
    for other in outcomes[1:]:
        assert other[:4] == outcomes[0][:4]
        assert other[4].equals(outcomes[0][4]) and other[5].equals(outcomes[0][5])


def test_staged_file_becomes_the_messages_file_when_nothing_repeats(tmp_path, landing, dump):
    dump("a.ndjson", [msg("t", "m1", "user", "q", 0), msg("t", "m2", "assistant", "a", 1)])
    dump("b.ndjson", [msg("t", "m2", "assistant", "a", 1), msg("t", "m3", "user", "again", 2)])
    layout = DataLayout.at(tmp_path / "data")
    ingest(layout, landing, ScopeMapping())
    [scope] = read_scopes(layout)["scope"]
    first, second = stage_messages(layout, scope)
    assert (first.messages, first.repeats) == (2, 0) and (second.messages, second.repeats) == (1, 1)
    files = sorted(layout.messages(scope).glob("*.parquet"))
    staged = {
        p.parent.parent.name.removeprefix("dump="): p for p in layout.raw().glob("dump=*/scope=*/*.parquet")
    }
    adopted = files[0].stat().st_ino == staged[files[0].stem.removeprefix("dump=")].stat().st_ino
    assert adopted  # the dump without repeats shares its staged file
    assert pl.read_parquet(files[1])["message_id"].to_list() == ["m3"]
