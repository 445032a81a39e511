"""Asset checks: every count reconciles, the staged tables meet their expectations, and Engramia's own
``pattern_count`` moved by exactly what the ledger says was stored.

Checks on the staged tables are blocking: a scope whose counts or expectations fail is not loaded.

Each check recomputes its figures from the files or from Engramia, never from the asset's own report,
and publishes them as metadata.
"""

import dagster as dg
import polars as pl

from assets.backfill import (
    SCOPES,
    engramia_scopes,
    messages,
    paired_patterns,
    raw_thread_exports,
    scored_patterns,
)
from assets.resources import BackfillSettings, EngramiaDestination
from pipelines.ingest.messages import scan_messages
from pipelines.ingest.staging import scope_names
from pipelines.load.ledger import Ledger
from pipelines.load.plan import latest_load_result
from pipelines.load.records import kept_patterns
from pipelines.quality.expectations import QualityReport, validate_messages, validate_scored
from pipelines.quality.reconcile import dump_line_counts, scope_counts
from pipelines.scoring.scores import scan_scored
from pipelines.tables import DataLayout

DUPLICATE_WARN_SHARE = 0.5
RECALL_SAMPLE = 3


def _quality_result(report: QualityReport) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=report.success,
        metadata={
            "rows": report.rows,
            "failed_expectations": dg.MetadataValue.json(report.failed),
            "expectations": len(report.results),
        },
    )


@dg.asset_check(asset=raw_thread_exports, description="Per dump: lines = staged rows + quarantined rows.")
def dump_lines_reconcile(settings: BackfillSettings) -> dg.AssetCheckResult:
    counts = dump_line_counts(settings.layout)
    bad = counts.filter(~pl.col("ok"))
    return dg.AssetCheckResult(
        passed=bad.is_empty(),
        metadata={
            "dumps": counts.height,
            "lines": int(counts["lines"].sum() or 0),
            "staged": int(counts["staged"].sum() or 0),
            "quarantined": int(counts["quarantined"].sum() or 0),
            "mismatched_dumps": dg.MetadataValue.json(
                bad.select("file", "lines", "staged", "quarantined").to_dicts()
            ),
        },
    )


@dg.asset_check(
    asset=messages,
    partitions_def=SCOPES,
    blocking=True,
    description="Per scope: lines in = messages + quarantined + exact repeats.",
)
def lines_reconcile(
    context: dg.AssetCheckExecutionContext, settings: BackfillSettings
) -> dg.AssetCheckResult:
    c = scope_counts(settings.layout, context.partition_key)
    return dg.AssetCheckResult(
        passed=c.lines_reconcile,
        metadata={
            k: v for k, v in c.as_dict().items() if k in ("lines_in", "messages", "quarantined", "repeats")
        },
    )


@dg.asset_check(
    asset=messages,
    partitions_def=SCOPES,
    blocking=True,
    description="Great Expectations: schema, non-null ids, unique message_id, role in the allowed set.",
)
def messages_quality(
    context: dg.AssetCheckExecutionContext, settings: BackfillSettings
) -> dg.AssetCheckResult:
    frame = scan_messages(settings.layout, context.partition_key)
    if frame is None:
        return dg.AssetCheckResult(passed=True, metadata={"rows": 0})
    return _quality_result(validate_messages(frame))


@dg.asset_check(
    asset=paired_patterns,
    partitions_def=SCOPES,
    blocking=True,
    description="Per scope: messages = messages in patterns + unpaired messages, and no message in both.",
)
def messages_accounted(
    context: dg.AssetCheckExecutionContext, settings: BackfillSettings
) -> dg.AssetCheckResult:
    c = scope_counts(settings.layout, context.partition_key)
    return dg.AssetCheckResult(
        passed=c.messages_reconcile,
        metadata={
            k: v for k, v in c.as_dict().items() if k in ("messages", "in_patterns", "unpaired", "in_both")
        },
    )


@dg.asset_check(
    asset=scored_patterns,
    partitions_def=SCOPES,
    blocking=True,
    description="Great Expectations on the patterns to load: unique non-null ids, eval_score in 0..10, "
    "task and code not blank.",
)
def scored_quality(context: dg.AssetCheckExecutionContext, settings: BackfillSettings) -> dg.AssetCheckResult:
    kept = kept_patterns(settings.layout, context.partition_key)
    if kept is None:
        return dg.AssetCheckResult(passed=True, metadata={"rows": 0})
    return _quality_result(validate_scored(kept))


@dg.asset_check(
    asset=scored_patterns,
    partitions_def=SCOPES,
    blocking=True,
    description="Every dropped near-duplicate names a kept pattern; kept + dropped = patterns.",
)
def duplicates_accounted(
    context: dg.AssetCheckExecutionContext, settings: BackfillSettings
) -> dg.AssetCheckResult:
    scored = scan_scored(settings.layout, context.partition_key)
    if scored is None:
        return dg.AssetCheckResult(passed=True, metadata={"patterns": 0})
    df = scored.select("pattern_id", "kept", "duplicate_of").collect()
    kept_ids = df.filter(pl.col("kept")).select("pattern_id")
    dropped = df.filter(~pl.col("kept"))
    orphans = dropped.join(kept_ids, left_on="duplicate_of", right_on="pattern_id", how="anti")
    return dg.AssetCheckResult(
        passed=orphans.is_empty() and df["pattern_id"].n_unique() == df.height,
        metadata={
            "patterns": df.height,
            "kept": kept_ids.height,
            "dropped": dropped.height,
            "dropped_without_kept_winner": orphans.height,
        },
    )


@dg.asset_check(
    asset=scored_patterns,
    partitions_def=SCOPES,
    description=f"Warns when more than {DUPLICATE_WARN_SHARE:.0%} of a scope's patterns were "
    "near-duplicates.",
)
def duplicate_share(
    context: dg.AssetCheckExecutionContext, settings: BackfillSettings
) -> dg.AssetCheckResult:
    scored = scan_scored(settings.layout, context.partition_key)
    total, dropped = (
        (0, 0) if scored is None else scored.select(pl.len(), (~pl.col("kept")).sum()).collect().row(0)
    )
    share = dropped / total if total else 0.0
    return dg.AssetCheckResult(
        passed=share <= DUPLICATE_WARN_SHARE,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"patterns": total, "duplicates": dropped, "duplicate_share": round(share, 4)},
    )


def count_reconciliation(
    layout: DataLayout, scope: str, engramia: EngramiaDestination
) -> dg.AssetCheckResult:
    last = latest_load_result(layout, scope)
    if last is None:
        return dg.AssetCheckResult(passed=False, metadata={"error": "no load recorded for this scope"})
    tenant_id, project_id = scope_names(layout, scope)
    now = engramia.pattern_count(layout, scope, tenant_id, project_id)
    expected = last["pattern_count_before"] + last["stored"] - last["retracted"]
    # The destination must hold at least what the ledger says it holds (a wiped store fails here).
    in_ledger = Ledger(layout, scope, engramia.describe(layout, scope)).in_store().height
    return dg.AssetCheckResult(
        passed=last["pattern_count_after"] == expected
        and now == last["pattern_count_after"]
        and in_ledger <= now,
        metadata={
            "pattern_count_before": last["pattern_count_before"],
            "stored": last["stored"],
            "retracted": last["retracted"],
            "pattern_count_after": last["pattern_count_after"],
            "pattern_count_now": now,
            "in_store_per_ledger": in_ledger,
        },
    )


@dg.asset_check(
    asset=engramia_scopes,
    partitions_def=SCOPES,
    description="Engramia's pattern_count after the load = before + stored - retracted, still so now, and "
    "at least what the ledger says is stored.",
)
def pattern_count_reconciles(
    context: dg.AssetCheckExecutionContext, settings: BackfillSettings, engramia: EngramiaDestination
) -> dg.AssetCheckResult:
    return count_reconciliation(settings.layout, context.partition_key, engramia)


@dg.asset_check(
    asset=engramia_scopes,
    partitions_def=SCOPES,
    description=f"Recall finds {RECALL_SAMPLE} loaded tasks as duplicate-tier matches of their own pattern.",
)
def recall_spot_check(
    context: dg.AssetCheckExecutionContext, settings: BackfillSettings, engramia: EngramiaDestination
) -> dg.AssetCheckResult:
    layout, scope = settings.layout, context.partition_key
    kept = kept_patterns(layout, scope)
    if kept is None:
        return dg.AssetCheckResult(passed=True, metadata={"checked": 0})
    sample = kept.select("task", "key").head(RECALL_SAMPLE).collect()
    tenant_id, project_id = scope_names(layout, scope)
    hits = engramia.recall_check(layout, tenant_id, project_id, sample["task"], sample["key"])
    return dg.AssetCheckResult(
        passed=all(h["found"] for h in hits),
        metadata={
            "checked": len(hits),
            "found": sum(h["found"] for h in hits),
            "results": dg.MetadataValue.json(hits),
        },
    )


BACKFILL_CHECKS = [
    dump_lines_reconcile,
    lines_reconcile,
    messages_quality,
    messages_accounted,
    scored_quality,
    duplicates_accounted,
    duplicate_share,
    pattern_count_reconciles,
    recall_spot_check,
]
