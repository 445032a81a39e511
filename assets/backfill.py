"""The asset chain: raw thread exports -> messages -> paired patterns -> scored patterns -> Engramia.

``raw_thread_exports`` is unpartitioned (a dump holds many scopes and is read once); everything after it
is partitioned by scope, one dynamic partition per Engramia (tenant, project).
"""

import json

import dagster as dg
import polars as pl

from assets.resources import BackfillSettings, EngramiaDestination
from pipelines.ingest.messages import scan_messages, stage_messages
from pipelines.ingest.staging import ingest, read_manifest, read_scopes, scope_names
from pipelines.load.plan import save_load_result
from pipelines.load.records import kept_patterns
from pipelines.pairing.batches import current, pair_scope
from pipelines.scoring.scores import score_scope
from pipelines.warehouse import refresh as refresh_warehouse

SCOPES = dg.DynamicPartitionsDefinition(name="scopes")
GROUP = "assistants_backfill"


def preview(frame: pl.DataFrame | pl.LazyFrame | None, rows: int = 5) -> dg.MetadataValue:
    """A few rows as a Markdown table, long texts shortened, for the asset page."""
    if frame is None:
        return dg.MetadataValue.md("_empty_")
    df = frame.head(rows).collect() if isinstance(frame, pl.LazyFrame) else frame.head(rows)
    df = df.with_columns(
        (pl.col(c).list.join(",") if isinstance(t, pl.List) else pl.col(c).cast(pl.String))
        for c, t in df.schema.items()
        if t != pl.String
    ).with_columns(pl.col(pl.String).str.replace_all(r"[\n|]", " ").str.slice(0, 60))
    with pl.Config(
        tbl_formatting="MARKDOWN",
        tbl_hide_column_data_types=True,
        tbl_hide_dataframe_shape=True,
        tbl_width_chars=2000,
        fmt_str_lengths=60,
        tbl_cols=-1,
    ):
        return dg.MetadataValue.md(str(df))


def refresh_views(context: dg.AssetExecutionContext, settings: BackfillSettings) -> None:
    # An analyst holding the DuckDB file open locks it; the views are a convenience, never a reason to fail.
    try:
        refresh_warehouse(settings.layout)
    except Exception as exc:
        context.log.warning(f"warehouse views not refreshed: {exc}")


def register_scopes(
    context: dg.AssetExecutionContext | dg.SensorEvaluationContext, scopes: list[str]
) -> list[str]:
    known = set(context.instance.get_dynamic_partitions(SCOPES.name))
    new = sorted(set(scopes) - known)
    if new:
        context.instance.add_dynamic_partitions(SCOPES.name, new)
    return new


@dg.asset(
    group_name=GROUP,
    kinds={"duckdb", "parquet"},
    description="NDJSON dumps from the landing folder, parsed line by line into typed rows per scope; "
    "every bad line quarantined with file, line number, raw text and reason.",
)
def raw_thread_exports(context: dg.AssetExecutionContext, settings: BackfillSettings) -> dg.MaterializeResult:
    layout = settings.layout
    results = ingest(
        layout,
        settings.source,
        settings.mapping(),
        settings.chunk_mib * 1024 * 1024,
        context.log.info,
        settle_seconds=settings.settle_seconds,
    )
    new_scopes = register_scopes(context, read_scopes(layout)["scope"].to_list())
    refresh_views(context, settings)
    manifest = read_manifest(layout)
    reasons: dict[str, int] = {}
    for r in results:
        for k, v in r.reasons.items():
            reasons[k] = reasons.get(k, 0) + v
    return dg.MaterializeResult(
        metadata={
            "new_dumps": len(results),
            "lines": sum(r.lines for r in results),
            "staged_rows": sum(r.staged for r in results),
            "quarantined": sum(r.quarantined for r in results),
            "quarantine_reasons": dg.MetadataValue.json(reasons),
            "new_scopes": dg.MetadataValue.json(new_scopes),
            "dumps_total": manifest.height,
            "dagster/row_count": int(manifest["staged"].sum() or 0),
            "manifest": preview(
                manifest.select("seq", "file", "lines", "staged", "quarantined").tail(10), 10
            ),
            "path": dg.MetadataValue.path(str(layout.raw())),
        }
    )


@dg.asset(
    group_name=GROUP,
    partitions_def=SCOPES,
    deps=[raw_thread_exports],
    kinds={"duckdb", "parquet"},
    description="Typed messages of one scope (staged/messages/scope=<key>/), one per message_id: exact "
    "repeats collapse and are counted, conflicting copies are quarantined.",
)
def messages(context: dg.AssetExecutionContext, settings: BackfillSettings) -> dg.MaterializeResult:
    layout, scope = settings.layout, context.partition_key
    stats = stage_messages(layout, scope)
    total = scan_messages(layout, scope)
    for s in stats:
        context.log.info(
            f"{scope} dump {s.dump_id}: {s.rows_in} rows -> {s.messages} messages, {s.repeats} repeats, "
            f"{s.conflicts} conflicts"
        )
    return dg.MaterializeResult(
        metadata={
            "new_dumps": len(stats),
            "new_messages": sum(s.messages for s in stats),
            "repeats": sum(s.repeats for s in stats),
            "conflicts_quarantined": sum(s.conflicts for s in stats),
            "dagster/row_count": 0 if total is None else int(total.select(pl.len()).collect().item()),
            "preview": preview(
                None
                if total is None
                else total.select("thread_id", "message_id", "role", "created_at", "text")
            ),
            "path": dg.MetadataValue.path(str(layout.messages(scope))),
        }
    )


@dg.asset(
    group_name=GROUP,
    partitions_def=SCOPES,
    deps=[messages],
    kinds={"polars", "parquet"},
    description="(user, assistant) patterns per thread, and every message left unpaired with its reason. "
    "Only threads touched by new messages are paired again.",
)
def paired_patterns(context: dg.AssetExecutionContext, settings: BackfillSettings) -> dg.MaterializeResult:
    layout, scope = settings.layout, context.partition_key
    result = pair_scope(layout, scope, settings.pairing_options())
    patterns = current(layout, "patterns", scope)
    unpaired = current(layout, "unpaired", scope)
    totals = (
        {}
        if patterns is None
        else patterns.select(
            pl.len().alias("patterns"),
            pl.col("task_truncated").sum().alias("tasks_truncated"),
            pl.col("code_truncated").sum().alias("codes_truncated"),
        )
        .collect()
        .to_dicts()[0]
    )
    reasons = {} if unpaired is None else dict(unpaired.group_by("reason").len().collect().iter_rows())
    context.log.info(
        f"{scope}: re-paired {result.threads} threads -> {result.patterns} patterns (batch {result.batch})"
    )
    return dg.MaterializeResult(
        metadata={
            "threads_repaired": result.threads,
            "patterns_in_batch": result.patterns,
            "full_repair": result.full_repair,
            "dagster/row_count": int(totals.get("patterns", 0)),
            "tasks_truncated": int(totals.get("tasks_truncated", 0) or 0),
            "codes_truncated": int(totals.get("codes_truncated", 0) or 0),
            "unpaired_by_reason": dg.MetadataValue.json({k: int(v) for k, v in reasons.items()}),
            "preview": preview(
                None if patterns is None else patterns.select("pattern_id", "thread_id", "task", "code")
            ),
        }
    )


@dg.asset(
    group_name=GROUP,
    partitions_def=SCOPES,
    deps=[paired_patterns],
    kinds={"polars", "parquet"},
    description="eval_score per pattern (neutral or from feedback), and near-duplicate tasks (word Jaccard "
    ">= 0.92) removed within the scope; each dropped pattern names the one kept.",
)
def scored_patterns(context: dg.AssetExecutionContext, settings: BackfillSettings) -> dg.MaterializeResult:
    layout, scope = settings.layout, context.partition_key
    result = score_scope(layout, scope, settings.scoring_options())
    context.log.info(
        f"{scope}: {result.patterns} patterns, {result.kept} kept, {result.duplicates} near-duplicates"
    )
    return dg.MaterializeResult(
        metadata={
            "patterns": result.patterns,
            "kept": result.kept,
            "duplicates": result.duplicates,
            "scored_from_feedback": result.from_feedback,
            "dagster/row_count": result.kept,
            "preview": preview(kept_patterns(layout, scope)),
        }
    )


@dg.asset(
    group_name=GROUP,
    partitions_def=SCOPES,
    deps=[scored_patterns],
    kinds={"python"},
    description="Kept patterns loaded into Engramia under the scope's (tenant, project); a ledger records "
    "each pattern's outcome so nothing is sent twice.",
)
def engramia_scopes(
    context: dg.AssetExecutionContext, settings: BackfillSettings, engramia: EngramiaDestination
) -> dg.MaterializeResult:
    layout, scope = settings.layout, context.partition_key
    tenant_id, project_id = scope_names(layout, scope)
    result = engramia.load(layout, scope, tenant_id, project_id, log=context.log.info)
    save_load_result(layout, result, context.run_id)
    refresh_views(context, settings)
    rate = result.sent / result.seconds if result.seconds else 0.0
    context.log.info(
        f"{scope} -> {tenant_id}/{project_id}: sent {result.sent}, stored {result.stored}, "
        f"present {result.present}, skipped {result.skipped}, rejected {result.rejected}, "
        f"retracted {result.retracted}, {rate:.1f} patterns/s; pattern_count "
        f"{result.pattern_count_before} -> {result.pattern_count_after}"
    )
    for rejection in result.rejections[:20]:
        context.log.warning(f"{scope}: rejected {rejection['pattern_id']}: {rejection['reason']}")
    if result.error:
        raise dg.Failure(description=result.error, metadata={"scope": scope})
    return dg.MaterializeResult(
        metadata={
            "tenant_id": tenant_id,
            "project_id": project_id,
            "destination": result.destination,
            "server_version": result.server_version or "",
            "sent": result.sent,
            "stored": result.stored,
            "present": result.present,
            "not_stored": result.not_stored,
            "rejected": result.rejected,
            "retracted": result.retracted,
            "already_loaded": result.already_loaded,
            "pattern_count_before": result.pattern_count_before,
            "pattern_count_after": result.pattern_count_after,
            "patterns_per_second": round(rate, 1),
            "dagster/row_count": result.pattern_count_after,
            # REST destinations (pipelines/load/rest/scope_load.py)
            "skipped": result.skipped,
            "replaced": result.replaced,
            "failed": result.failed,
            "redacted": result.redacted,
            "redactions": dg.MetadataValue.json(json.loads(result.redactions or "{}")),
            "rejections": dg.MetadataValue.json(result.rejections[:20]),
            "ledger_in_store": result.ledger_in_store,
            "requests": result.requests,
            "rate_limited": result.rate_limited,
            "notes": result.notes,
        }
    )


BACKFILL_ASSETS = [raw_thread_exports, messages, paired_patterns, scored_patterns, engramia_scopes]
SCOPE_ASSETS = [messages, paired_patterns, scored_patterns, engramia_scopes]
