"""The scored table of a scope (``staged/scored/scope=<key>/scored.parquet``) and its marker.

Invariant: the marker (``scored.json`` beside the table) records what the table was made from and what
it gave; it is removed before the table is rewritten and written, atomically, after. So a table with a
marker is whole, and the marker's inputs are those it was made from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.pairing.batches import ScopeState
from pipelines.tables import DataLayout

# The scored table's columns, as the scoring writes them (warehouse views made before any scoring use it).
SCORED_SCHEMA: dict[str, pl.DataType] = {
    "pattern_id": pl.String(),
    "thread_id": pl.String(),
    "created_at": pl.Datetime("us", "UTC"),
    "eval_score": pl.Float64(),
    "score_source": pl.String(),
    "score_reason": pl.String(),
    "filtered": pl.String(),
    "filter_reason": pl.String(),
    "kept": pl.Boolean(),
    "duplicate_of": pl.String(),
    "similarity": pl.Float64(),
}
# The filtered table: the scored rows a curation gate caught, with the gate and its reason.
FILTERED_COLUMNS = (
    "pattern_id",
    "thread_id",
    "created_at",
    "eval_score",
    "score_source",
    "filtered",
    "filter_reason",
)


def scored_file(layout: DataLayout, scope: str) -> Path:
    return layout.scored(scope) / "scored.parquet"


def filtered_file(layout: DataLayout, scope: str) -> Path:
    """The patterns a curation gate filtered, with the gate and its reason (a projection of the scored
    table, written with it)."""
    return layout.filtered(scope) / "filtered.parquet"


def marker(target: Path) -> Path:
    return target.with_name("scored.json")


def made(target: Path) -> dict[str, Any] | None:
    """What the scored table was made from and what it gave (its marker), if both are there."""
    path = marker(target)
    return json.loads(path.read_text()) if target.exists() and path.exists() else None


def write_marker(target: Path, inputs: dict[str, Any], result: dict[str, Any]) -> None:
    """Record, once the table is written, what it was made from and what it gave."""
    path = marker(target)
    tmp = path.with_name(".scored.json.tmp")
    tmp.write_text(json.dumps({"inputs": inputs, "result": result}))
    tmp.replace(path)


def scored_in_step(layout: DataLayout, scope: str) -> bool:
    """Whether the scored table was made from the scope's current batches, and so holds exactly the
    current patterns (its marker is removed before the table is rewritten and written after)."""
    record = made(scored_file(layout, scope))
    if record is None:
        return False
    inputs = record.get("inputs", {})
    state = ScopeState.load(layout, scope)
    return inputs.get("batches") == state.batches and inputs.get("pairing") == state.pairing


def scan_scored(layout: DataLayout, scope: str) -> pl.LazyFrame | None:
    path = scored_file(layout, scope)
    return pl.scan_parquet(path) if path.exists() else None
