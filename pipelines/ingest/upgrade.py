"""Staged tables written by earlier versions, brought to today's schema once, before anything reads them.

A data directory records the version of its staged layout (``staged/layout-version``). Readers scan many
files at once and need one schema across them, so a file of an older layout is rewritten in place
(written beside it, then renamed over it) rather than read with special cases:

- version 2: staged rows and messages carry ``branch`` (files before it hold only the current branch).

Invariant: after :func:`upgrade_layout`, every staged row and messages file has :data:`RAW_SCHEMA`'s
columns, and rows, values and order are unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.tables import ARROW_INTERMEDIATE_COMPRESSION, RAW_SCHEMA, DataLayout

LAYOUT_VERSION = 2
_MARKER = "layout-version"


def _version(layout: DataLayout) -> int:
    marker = layout.staged / _MARKER
    try:
        return int(marker.read_text().strip())
    except (FileNotFoundError, ValueError):
        return 1


def _add_branch(path: Path) -> bool:
    """``path`` with a ``branch`` column of "current" when it has none; True when it was rewritten."""
    if "branch" in pq.read_schema(path).names:
        return False
    table = pq.read_table(path)
    table = table.append_column("branch", pa.repeat(pa.scalar("current", pa.large_string()), table.num_rows))
    table = table.select(RAW_SCHEMA.names).cast(RAW_SCHEMA)
    tmp = path.with_name(path.name + ".upgrade")
    pq.write_table(table, tmp, compression=ARROW_INTERMEDIATE_COMPRESSION)
    os.replace(tmp, path)
    return True


def upgrade_layout(layout: DataLayout) -> int:
    """Bring the staged tables under ``layout`` to :data:`LAYOUT_VERSION`; the number of files rewritten.
    Costs one small file read when the layout is current."""
    if _version(layout) >= LAYOUT_VERSION:
        return 0
    rewritten = 0
    if layout.staged.exists():
        for pattern in ("raw/dump=*/scope=*/*.parquet", "messages/scope=*/*.parquet"):
            rewritten += sum(_add_branch(p) for p in sorted(layout.staged.glob(pattern)))
    layout.staged.mkdir(parents=True, exist_ok=True)
    tmp = layout.staged / f"{_MARKER}.tmp"
    tmp.write_text(f"{LAYOUT_VERSION}\n")
    os.replace(tmp, layout.staged / _MARKER)
    return rewritten
