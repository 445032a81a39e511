"""The summary a run prints: per scope, the staged state read back from the files, and the load figures
of this run alone (the load record written under this run's id, never another run's).

Per scope the load terms add up: ``kept = loaded + already_loaded + present + not_stored + rejected +
failed + skipped``. A scope whose run stopped before its load reports what the ledger already holds as
``already_loaded`` and the rest as ``failed``.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from pipelines.ingest.catalog import scope_names
from pipelines.ingest.formats.base import LEFT_OUT_KINDS
from pipelines.load.ledger import Ledger
from pipelines.load.plan import LOAD_TERMS, plan_load
from pipelines.pairing.batches import pattern_totals, unpaired_reasons
from pipelines.quality.reconcile import ScopeCounts, scope_counts
from pipelines.scoring.scored import scan_scored
from pipelines.tables import DataLayout, damaged_parquet, parquet_files

TOP_REASONS = 3
# The figures the table prints for each scope.
TABLE_FIGURES = (
    "lines_in",
    "messages",
    "quarantined",
    "repeats",
    "patterns",
    "unpaired",
    "duplicates",
    "filtered",
    "kept",
    *LOAD_TERMS,
    "replaced",
    "retracted",
    "updated",
    "pattern_count_after",
)
# Every figure of a scope in the summary (besides its run, its names and its reasons).
FIGURES = (
    *TABLE_FIGURES,
    "tasks_truncated",
    "codes_truncated",
    "pattern_count_before",
    "lines_reconcile",
    "messages_reconcile",
    "load_adds_up",
    "load_reconciles",
    "load_skipped",
)


def _top(frame: pl.LazyFrame | None) -> dict[str, int]:
    if frame is None:
        return {}
    counts = frame.group_by("reason").len().sort(["len", "reason"], descending=[True, False]).collect()
    return {str(r): int(n) for r, n in counts.iter_rows()}


def quarantine_reasons(layout: DataLayout, scope: str | None) -> dict[str, int]:
    """Quarantined rows by reason, most frequent first (``scope`` None: lines with no scope)."""
    files = parquet_files(layout.quarantine())
    if not files:
        return {}
    rows = pl.scan_parquet(files)
    rows = rows.filter(pl.col("scope").is_null() if scope is None else pl.col("scope") == scope)
    return _top(rows)


def dump_figures(new_dumps: pl.DataFrame) -> list[dict[str, Any]]:
    """Each dump of this run: its file, the shape it was read as, and its records (the lines of a guide
    NDJSON file, the messages a reader found in any other shape) = staged + quarantined."""
    rows = new_dumps.select("file", "format", "lines", "staged", "quarantined").iter_rows(named=True)
    return [
        {
            "file": r["file"],
            "format": r["format"],
            "records": int(r["lines"]),
            "staged": int(r["staged"]),
            "quarantined": int(r["quarantined"]),
        }
        for r in rows
    ]


def this_run_load(layout: DataLayout, scope: str, run_id: str, destination: str) -> dict[str, Any]:
    """The load terms of ``run_id`` for ``scope``, from its own record."""
    path = layout.loads(scope) / f"run={run_id}.parquet"
    if path.exists():
        load = pl.read_parquet(path).to_dicts()[0]
        # records written before ``loaded`` was kept: a replacement is a load too
        loaded = load.get("loaded")
        if loaded is None:
            loaded = int(load.get("stored") or 0) + int(load.get("replaced") or 0)
        return {**load, "loaded": loaded}
    # The run stopped before loading: what the ledger holds is already there, the rest was not loaded.
    plan = plan_load(layout, scope, Ledger(layout, scope, destination).in_store())
    return {"kept": plan.kept, "already_loaded": plan.already, "failed": plan.kept - plan.already}


def scope_summary(
    layout: DataLayout,
    scope: str,
    run_id: str | None,
    destination: str,
    load_skipped: str | None = None,
    counts: ScopeCounts | None = None,
) -> dict[str, Any]:
    """The scope's figures; ``load_skipped``: why this run loaded nothing by design (destination none),
    when it did not: then every kept pattern counts as ``skipped`` and there is no load to reconcile.
    ``counts``: the scope's line and message counts as this run's checks found them, else counted here."""
    counts = counts if counts is not None else scope_counts(layout, scope)
    scored = scan_scored(layout, scope)
    totals = pattern_totals(layout, scope)
    n_patterns = totals.patterns
    kept, filtered = (
        (n_patterns, 0)
        if scored is None
        else scored.select(pl.col("kept").sum(), pl.col("filtered").is_not_null().sum()).collect().row(0)
    )
    if load_skipped is not None:
        load: dict[str, Any] = {"skipped": kept} if run_id else {"failed": kept}
    else:
        load = this_run_load(layout, scope, run_id, destination) if run_id else {"failed": kept}
    tenant_id, project_id = scope_names(layout, scope)
    terms = {t: int(load.get(t) or 0) for t in LOAD_TERMS}
    return {
        "run_id": run_id,
        "tenant_id": tenant_id,
        "project_id": project_id,
        "lines_in": counts.lines.lines_in,
        "messages": counts.lines.messages,
        "quarantined": counts.lines.quarantined,
        "repeats": counts.lines.repeats,
        "patterns": n_patterns,
        "unpaired": counts.pairing.unpaired,
        "duplicates": n_patterns - kept - filtered,
        "filtered": int(filtered),
        "kept": kept,
        **terms,
        # part of loaded: 0.7.x learns that overwrote a weaker near-duplicate under its old key
        "replaced": int(load.get("replaced") or 0),
        "retracted": int(load.get("retracted") or 0),
        "updated": int(load.get("updated") or 0),
        "tasks_truncated": totals.tasks_truncated,
        "codes_truncated": totals.codes_truncated,
        "pattern_count_before": load.get("pattern_count_before"),
        "pattern_count_after": load.get("pattern_count_after"),
        "lines_reconcile": counts.lines_reconcile,
        "messages_reconcile": counts.messages_reconcile,
        "load_adds_up": kept == sum(terms.values()),
        # None: no load ran by design (``load_skipped`` says why), so there was nothing to reconcile.
        "load_reconciles": None if load_skipped is not None else bool(load.get("reconciles", False)),
        "load_skipped": load_skipped,
        "quarantine_reasons": quarantine_reasons(layout, scope),
        "unpaired_reasons": unpaired_reasons(layout, scope),
    }


def unreadable_summary(layout: DataLayout, scope: str, run_id: str | None, exc: Exception) -> dict[str, Any]:
    """A scope's entry when :func:`scope_summary` could not read its files back (a file cut short, a read
    that failed): the same keys, its figures unknown, and ``figures_unreadable`` saying why, so that the
    other scopes' figures and the run's exit code still reach the operator."""
    first_line = next(iter(str(exc).strip().splitlines()), "")
    why = f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__
    try:
        tenant_id, project_id = scope_names(layout, scope)
    except Exception:
        # The scope catalog itself may be what cannot be read.
        tenant_id = project_id = None
    unknown = dict.fromkeys(FIGURES)
    return {
        **unknown,
        "run_id": run_id,
        "tenant_id": tenant_id,
        "project_id": project_id,
        "quarantine_reasons": {},
        "unpaired_reasons": {},
        "figures_unreadable": why + damaged_files_note(layout, scope),
    }


def damaged_files_note(layout: DataLayout, scope: str) -> str:
    """``"; unreadable Parquet files: ..."`` naming the scope's damaged files, or "" when none is."""
    damaged = damaged_parquet(layout, scope)
    if not damaged:
        return ""
    more = f" and {len(damaged) - 5} more" if len(damaged) > 5 else ""
    return f"; unreadable Parquet files: {', '.join(str(p) for p in damaged[:5])}{more}"


def unscoped_quarantined(layout: DataLayout) -> int:
    return sum(quarantine_reasons(layout, None).values())


def _reasons_line(reasons: dict[str, int]) -> str:
    shown = ", ".join(f"{r} ({n:,})" for r, n in list(reasons.items())[:TOP_REASONS])
    more = len(reasons) - TOP_REASONS
    return shown + (f", and {more} more" if more > 0 else "")


def print_table(summary: dict[str, Any]) -> None:
    rows = [
        {
            "scope": s,
            **{c: v[c] for c in TABLE_FIGURES},
            "ok": v["lines_reconcile"]
            and v["messages_reconcile"]
            and v["load_reconciles"] is not False
            and v["load_adds_up"],
        }
        for s, v in summary["scopes"].items()
    ]
    if rows:
        with pl.Config(
            tbl_rows=-1,
            tbl_cols=-1,
            tbl_width_chars=250,
            tbl_hide_dataframe_shape=True,
            tbl_hide_column_data_types=True,
        ):
            print(pl.DataFrame(rows))
    for scope, v in summary["scopes"].items():
        if v["quarantine_reasons"]:
            print(f"{scope} quarantined: {_reasons_line(v['quarantine_reasons'])}")
        if v["unpaired_reasons"]:
            print(f"{scope} unpaired: {_reasons_line(v['unpaired_reasons'])}")
        if v["tasks_truncated"] or v["codes_truncated"]:
            print(f"{scope} truncated: {v['tasks_truncated']:,} tasks, {v['codes_truncated']:,} answers")
    for d in summary.get("this_run", {}).get("files", []):
        print(
            f"dump {d['file']} ({d['format']}): {d['records']:,} records -> {d['staged']:,} staged, "
            f"{d['quarantined']:,} quarantined"
        )
    unscoped = summary["unscoped_quarantine_reasons"]
    print(f"lines quarantined without a scope: {summary['unscoped_quarantined']:,}", end="")
    print(f" ({_reasons_line(unscoped)})" if unscoped else "")
    data_dir = summary["data_dir"]
    # An s3:// data directory's views are opened over the bucket (README: Object storage), not from a file.
    views = (
        f"python -m pipelines.objectstore.warehouse --data-dir {data_dir}"
        if str(data_dir).startswith("s3://")
        else f"{data_dir}/warehouse.duckdb"
    )
    print(f"staged Parquet: {data_dir}/staged   warehouse: {views}")
    if summary["engramia_store"]:
        print(f"Engramia store (embedded): {summary['engramia_store']}")
    if summary.get("load_skipped"):
        print(f"nothing loaded: {summary['load_skipped']}")
    for failure in summary["failures"]:
        print(f"FAILED: {failure}")


def _left_out(layout: DataLayout, dump_ids: list[str]) -> int:
    """Quarantined records of these dumps that their shape leaves out by design (branches, hidden and
    tool messages): counted, but no sign of a bad input."""
    files = [f for d in dump_ids for f in parquet_files(layout.quarantine(), f"dump={d}-c*.parquet")]
    if not files:
        return 0
    kinds = pl.scan_parquet(files).select(pl.col("reason").str.replace(":.*", "").alias("kind"))
    return kinds.filter(pl.col("kind").is_in(list(LEFT_OUT_KINDS))).select(pl.len()).collect().item()


def dump_failures(layout: DataLayout, new_dumps: pl.DataFrame, max_pct: float) -> list[str]:
    """What this run's dumps say about the input: wholly quarantined dumps, and too high a share."""
    failures = []
    for row in new_dumps.iter_rows(named=True):
        if row["lines"] and not row["staged"]:
            files = parquet_files(layout.quarantine(), f"dump={row['dump_id']}-c*.parquet")
            reasons = (
                pl.scan_parquet(files).group_by("reason").len().sort("len", descending=True).collect()
                if files
                else pl.DataFrame()
            )
            shown = ", ".join(f"{r} ({n:,})" for r, n in reasons.head(3).iter_rows()) if files else "?"
            failures.append(f"dump {row['file']}: all {row['lines']:,} lines quarantined: {shown}")
    lines = int(new_dumps["lines"].sum() or 0)
    quarantined = int(new_dumps["quarantined"].sum() or 0)
    if lines and quarantined / lines * 100 > max_pct:
        quarantined -= _left_out(layout, new_dumps["dump_id"].to_list())
    if lines and quarantined / lines * 100 > max_pct:
        failures.append(
            f"{quarantined / lines:.1%} of this run's {lines:,} lines were quarantined, above "
            f"--max-quarantine-pct {max_pct:g}"
        )
    return failures
