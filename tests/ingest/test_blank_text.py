"""A text of white space alone is blank whatever the white space: Unicode's (as the quality checks'
``\\S`` counts it), not only ASCII's. Blank messages are unpaired as "empty text", never a task or an
answer that the scored patterns' check then finds blank."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pipelines.ingest.catalog import read_scopes
from pipelines.pairing.batches import current
from pipelines.runner import backfill
from pipelines.tables import DataLayout, parquet_files
from tests.conftest import msg, write_ndjson

WHITE = ["\u202f\u2028\x0b", "\u3000\u1680\u205f", "\x85\u2029", "\u00a0\u200b\t", " \x1c"]


def test_unicode_white_space_is_blank_and_unpaired(layout: DataLayout, landing: Path) -> None:
    rows = []
    for i, text in enumerate(WHITE):
        rows += [
            msg(f"q{i}", f"q{i}_u", "user", text, 0),
            msg(f"q{i}", f"q{i}_a", "assistant", f"answer {i}", 1),
            msg(f"a{i}", f"a{i}_u", "user", f"question {i}", 0),
            msg(f"a{i}", f"a{i}_a", "assistant", text, 1),
        ]
    write_ndjson(landing / "d.ndjson", rows)
    backfill(layout, landing, load=False)
    [scope] = read_scopes(layout)["scope"].to_list()

    messages = pl.read_parquet(parquet_files(layout.messages(scope)))
    blank = messages.filter(pl.col("is_blank"))["text"].to_list()
    assert sorted(blank) == sorted(WHITE * 2)
    unpaired = current(layout, "unpaired", scope)
    assert unpaired is not None
    empty = unpaired.filter(pl.col("reason") == "empty text").collect()
    assert empty.height == 2 * len(WHITE)
    patterns = current(layout, "patterns", scope)
    assert patterns is not None
    texts = patterns.select("task", "code").collect()
    assert texts.filter(~pl.col("task").str.contains(r"\S") | ~pl.col("code").str.contains(r"\S")).is_empty()
