"""Helpers of the chat-export format tests: run a shape through the pipeline, read back what it made."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.ingest.formats import reader
from pipelines.ingest.formats.base import Record
from pipelines.runner import backfill
from pipelines.tables import DataLayout, parquet_files
from pipelines.tools import shapes

type ThreadPairs = list[tuple[tuple[str, str], ...]]


def records(fmt: str, value: Any, name: str = "f.json") -> list[Record]:
    data = value if isinstance(value, bytes) else json.dumps(value).encode()
    return list(reader(fmt).read(io.BytesIO(data), name))


def run_shape(tmp: Path, shape: str) -> DataLayout:
    shapes.write_shape(shape, tmp / "in")
    layout = DataLayout.at(tmp / "data")
    backfill(layout, tmp / "in", load=False)
    return layout


def patterns(layout: DataLayout) -> pl.DataFrame:
    files = [f for scope in (layout.staged / "patterns").glob("scope=*") for f in parquet_files(scope)]
    return pl.read_parquet(files)


def pairs_per_thread(layout: DataLayout) -> ThreadPairs:
    """Each thread's (task, code) pairs, threads in no particular order: ids may be derived."""
    frame = patterns(layout)
    threads = frame.group_by("thread_id").agg(pl.struct("task", "code"))
    return sorted(tuple(sorted((p["task"], p["code"]) for p in row)) for row in threads["task"].to_list())


def guide_pairs(tmp: Path) -> ThreadPairs:
    return pairs_per_thread(run_shape(tmp, "guide-ndjson"))


def quarantine_reasons(layout: DataLayout) -> dict[str, int]:
    files = list(layout.quarantine().glob("*.parquet"))
    if not files:
        return {}
    return dict(pl.read_parquet(files).group_by("reason").len().rows())


def unpaired_reasons(layout: DataLayout) -> dict[str, int]:
    files = list((layout.staged / "unpaired").glob("scope=*/*.parquet"))
    return dict(pl.read_parquet(files).group_by("reason").len().rows()) if files else {}


def assert_reconciles(layout: DataLayout) -> pl.DataFrame:
    """Per dump: records = staged + quarantined, and the record table has a row per record."""
    manifest = pl.read_parquet(layout.manifest)
    for row in manifest.iter_rows(named=True):
        assert row["lines"] == row["staged"] + row["quarantined"], row
        table = layout.records(row["dump_id"])
        if row["lines"]:
            assert pl.read_parquet(table).height == row["lines"]
    return manifest


def cli_run(tmp: Path, shape: str, *extra: str) -> dict[str, Any]:
    from assets.cli.main import main

    files = shapes.write_shape(shape, tmp / "in")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main(["run", "--input", str(files[0]), "--data-dir", str(tmp / "data"), "--json", *extra])
    text = out.getvalue()
    return json.loads(text[text.index("{") :])
