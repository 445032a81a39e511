"""``paired_patterns`` and ``scored_patterns``: one scope's messages paired into (user, assistant)
patterns, then scored and cleared of near-duplicates."""

import dagster as dg
import polars as pl

from assets.common import CODE_VERSION, GROUP, OWNERS
from assets.messages import messages
from assets.metadata import first_rows, schema_metadata, table_preview
from assets.partitions import SCOPES
from assets.resources import BackfillSettings
from checks.expectations import SCORED_QUALITY, scored_quality
from checks.scoring import (
    DUPLICATE_SHARE,
    DUPLICATES_ACCOUNTED,
    duplicate_share,
    duplicates_accounted,
)
from checks.staging import MESSAGES_ACCOUNTED, messages_accounted
from pipelines.load.records import kept_patterns
from pipelines.pairing.batches import current, pair_scope, pattern_totals, unpaired_reasons
from pipelines.quality.expectations import TEXT_MEASURES
from pipelines.quality.reconcile import pairing_counts
from pipelines.scoring.scored import filtered_file, scan_scored
from pipelines.scoring.scores import score_scope


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    code_version=CODE_VERSION,
    partitions_def=SCOPES,
    deps=[messages],
    kinds={"polars", "parquet"},
    tags={"stage": "pairing"},
    check_specs=[MESSAGES_ACCOUNTED],
    description="(user, assistant) patterns per thread, and every message left unpaired with its reason. "
    "Only threads touched by new messages are paired again.",
)
def paired_patterns(context: dg.AssetExecutionContext, settings: BackfillSettings) -> dg.MaterializeResult:
    layout, scope = settings.layout, context.partition_key
    result = pair_scope(layout, scope, settings.pairing_options())
    patterns = current(layout, "patterns", scope)
    totals = pattern_totals(layout, scope)
    reasons = unpaired_reasons(layout, scope)
    context.log.info(
        f"{scope}: re-paired {result.threads} threads -> {result.patterns} patterns (batch {result.batch})"
    )
    return dg.MaterializeResult(
        metadata={
            "threads_repaired": result.threads,
            "patterns_in_batch": result.patterns,
            "full_repair": result.full_repair,
            "dagster/row_count": totals.patterns,
            **schema_metadata(patterns),
            "tasks_truncated": totals.tasks_truncated,
            "codes_truncated": totals.codes_truncated,
            "unpaired_by_reason": dg.MetadataValue.json(reasons),
            "preview": table_preview(
                None
                if patterns is None
                else first_rows(patterns.select("pattern_id", "thread_id", "task", "code"), "pattern_id")
            ),
        },
        check_results=[messages_accounted(pairing_counts(layout, scope))],
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    code_version=CODE_VERSION,
    partitions_def=SCOPES,
    deps=[paired_patterns],
    kinds={"polars", "parquet"},
    tags={"stage": "scoring"},
    check_specs=[SCORED_QUALITY, DUPLICATES_ACCOUNTED, DUPLICATE_SHARE],
    description="eval_score per pattern (neutral or from feedback), and near-duplicate tasks (word Jaccard "
    ">= 0.92) removed within the scope; each dropped pattern names the one kept.",
)
def scored_patterns(context: dg.AssetExecutionContext, settings: BackfillSettings) -> dg.MaterializeResult:
    layout, scope = settings.layout, context.partition_key
    result = score_scope(layout, scope, settings.scoring_options(), log=context.log.info)
    context.log.info(
        f"{scope}: {result.patterns} patterns, {result.kept} kept, {result.duplicates} near-duplicates, "
        f"{result.filtered} filtered"
    )
    if result.judge.get("stopped"):
        context.log.warning(f"{scope}: judge stopped: {result.judge['stopped']}")
    if result.feedback_unmatched:
        context.log.warning(
            f"{scope}: {result.feedback_unmatched} feedback rows match no message or thread of the data "
            f"folder and score nothing ({settings.feedback})"
        )
    kept = kept_patterns(layout, scope)
    scored = scan_scored(layout, scope)
    outcomes = (
        None
        if scored is None
        else scored.select("pattern_id", "kept", "duplicate_of", "filtered", "filter_reason").collect()
    )
    listed = filtered_file(layout, scope)
    paired = current(layout, "patterns", scope)
    return dg.MaterializeResult(
        metadata={
            "patterns": result.patterns,
            "kept": result.kept,
            "duplicates": result.duplicates,
            "scored_from_feedback": result.from_feedback,
            "feedback_rows_unmatched": result.feedback_unmatched,
            "filtered": result.filtered,
            "filtered_by_gate": dg.MetadataValue.json(result.filtered_by),
            "score_sources": dg.MetadataValue.json(result.by_source),
            "implicit_signals": dg.MetadataValue.json(result.signals),
            # Token usage and cost of the judge in this run (asked = 0 when every answer was cached).
            "llm_judge": dg.MetadataValue.json(result.judge),
            "llm_tokens_in": int(result.judge.get("tokens_in", 0) or 0),
            "llm_tokens_out": int(result.judge.get("tokens_out", 0) or 0),
            "llm_cost_usd": float(result.judge.get("cost_usd", 0.0) or 0.0),
            "dagster/row_count": result.kept,
            **schema_metadata(kept),
            "preview": table_preview(first_rows(kept, "pattern_id")),
        },
        check_results=[
            scored_quality(kept_patterns(layout, scope, ordered=False, reduced=TEXT_MEASURES)),
            duplicates_accounted(
                outcomes,
                None if paired is None else paired.select("pattern_id").collect(),
                pl.read_parquet(listed, columns=["pattern_id"]) if listed.exists() else None,
            ),
            duplicate_share(outcomes),
        ],
    )
