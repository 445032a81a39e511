"""The per-scope summary a run prints: figures read back from the files and the load records."""

from __future__ import annotations

from typing import Any

import polars as pl

from assets.resources import BackfillSettings
from pipelines.ingest.catalog import scope_names
from pipelines.load.plan import latest_load_result
from pipelines.pairing.batches import current
from pipelines.quality.reconcile import scope_counts
from pipelines.scoring.scored import scan_scored


def scope_summary(settings: BackfillSettings, scope: str) -> dict[str, Any]:
    layout = settings.layout
    counts = scope_counts(layout, scope)
    scored = scan_scored(layout, scope)
    patterns = current(layout, "patterns", scope)
    n_patterns = 0 if patterns is None else int(patterns.select(pl.len()).collect().item())
    kept = n_patterns if scored is None else int(scored.select(pl.col("kept").sum()).collect().item())
    load = latest_load_result(layout, scope) or {}
    tenant_id, project_id = scope_names(layout, scope)
    return {
        "tenant_id": tenant_id,
        "project_id": project_id,
        "lines_in": counts.lines.lines_in,
        "messages": counts.lines.messages,
        "quarantined": counts.lines.quarantined,
        "repeats": counts.lines.repeats,
        "patterns": n_patterns,
        "unpaired": counts.pairing.unpaired,
        "duplicates": n_patterns - kept,
        "kept": kept,
        "loaded": load.get("stored", 0),
        "already_loaded": load.get("already_loaded", 0),
        "rejected": load.get("rejected", 0),
        "retracted": load.get("retracted", 0),
        "pattern_count_before": load.get("pattern_count_before"),
        "pattern_count_after": load.get("pattern_count_after"),
        "lines_reconcile": counts.lines_reconcile,
        "messages_reconcile": counts.messages_reconcile,
        "load_reconciles": bool(load.get("reconciles", False)),
    }


def unscoped_quarantined(settings: BackfillSettings) -> int:
    files = sorted(settings.layout.quarantine().glob("*.parquet"))
    if not files:
        return 0
    return int(pl.scan_parquet(files).filter(pl.col("scope").is_null()).select(pl.len()).collect().item())


def print_table(summary: dict[str, Any]) -> None:
    cols = [
        "messages",
        "quarantined",
        "repeats",
        "patterns",
        "unpaired",
        "duplicates",
        "loaded",
        "pattern_count_before",
        "pattern_count_after",
    ]
    rows = [
        {
            "scope": s,
            **{c: v[c] for c in cols},
            "ok": v["lines_reconcile"] and v["messages_reconcile"] and v["load_reconciles"],
        }
        for s, v in summary["scopes"].items()
    ]
    if rows:
        with pl.Config(
            tbl_rows=-1,
            tbl_cols=-1,
            tbl_width_chars=200,
            tbl_hide_dataframe_shape=True,
            tbl_hide_column_data_types=True,
        ):
            print(pl.DataFrame(rows))
    print(f"lines quarantined without a scope: {summary['unscoped_quarantined']}")
    print(f"staged Parquet: {summary['data_dir']}/staged   warehouse: {summary['data_dir']}/warehouse.duckdb")
    if summary["engramia_store"]:
        print(f"Engramia store (embedded): {summary['engramia_store']}")
    for scope, err in summary["failed_scopes"].items():
        print(f"FAILED {scope}: {err}")
