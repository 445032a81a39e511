"""A data directory staged by an earlier version (messages without ``branch``) goes on working: its files
are brought to today's schema once, rows and order unchanged, and new dumps pair with the old ones."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from pipelines.ingest.upgrade import LAYOUT_VERSION, upgrade_layout
from pipelines.runner import backfill
from pipelines.tables import RAW_SCHEMA, DataLayout
from tests.conftest import msg, write_ndjson


def _staged_files(layout: DataLayout) -> list[Path]:
    patterns = ("raw/dump=*/scope=*/*.parquet", "messages/scope=*/*.parquet")
    return sorted(path for pattern in patterns for path in layout.staged.glob(pattern))


def _as_earlier_version(layout: DataLayout) -> dict[Path, pl.DataFrame]:
    """Every staged row and message file without ``branch``, and no layout version: as version 1 left it."""
    before = {}
    for path in _staged_files(layout):
        table = pq.read_table(path)
        # A messages file adopted from its staged file is the same file: it lost the column already.
        old = table.drop_columns(["branch"]) if "branch" in table.column_names else table
        pq.write_table(old, path)
        before[path] = pl.from_arrow(old)
    (layout.staged / "layout-version").unlink()
    return before


def test_an_earlier_layout_is_upgraded_once_and_pairs_with_new_dumps(tmp_path, sample_dir):
    layout = DataLayout.at(tmp_path / "data")
    backfill(layout, sample_dir, load=False)
    patterns_before = backfill_patterns(layout)
    before = _as_earlier_version(layout)
    assert before

    later = [
        msg("thread_abc", "m_new_1", "user", "Parse a TSV file too", 900, "asst_coder"),
        msg("thread_abc", "m_new_2", "assistant", "import csv  # delimiter='\\t'", 901, "asst_coder"),
    ]
    write_ndjson(tmp_path / "more" / "later.ndjson", later)
    run = backfill(layout, tmp_path / "more", load=False)
    assert [d.lines for d in run.dumps] == [2]

    for path, old in before.items():
        now = pl.read_parquet(path)
        assert pq.read_schema(path).remove_metadata().equals(RAW_SCHEMA.remove_metadata()), path
        assert now.drop("branch").equals(old), path
        assert now["branch"].unique().to_list() == ["current"]
    patterns_after = backfill_patterns(layout)
    assert patterns_before <= patterns_after and len(patterns_after) == len(patterns_before) + 1
    assert (layout.staged / "layout-version").read_text().strip() == str(LAYOUT_VERSION)
    # Once current, nothing is read again.
    assert upgrade_layout(layout) == 0


def backfill_patterns(layout: DataLayout) -> set[tuple[str, str]]:
    files = list(layout.staged.glob("patterns/scope=*/*.parquet"))
    frame = pl.read_parquet(files)
    return set(frame.select("task", "code").rows())
