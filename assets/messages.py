"""``messages``: one scope's typed messages, one per message id."""

import dagster as dg
import polars as pl

from assets.common import CODE_VERSION, GROUP, OWNERS
from assets.ingest import raw_thread_exports
from assets.metadata import schema_metadata, table_preview
from assets.partitions import SCOPES, require_scope
from assets.resources import BackfillSettings
from checks.expectations import MESSAGES_QUALITY, messages_quality
from checks.staging import LINES_RECONCILE, lines_reconcile
from pipelines.imports import GREAT_EXPECTATIONS, import_ahead
from pipelines.ingest.messages import scan_messages, stage_messages
from pipelines.quality.reconcile import message_counts
from pipelines.settled import unsettle


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    code_version=CODE_VERSION,
    partitions_def=SCOPES,
    deps=[raw_thread_exports],
    kinds={"duckdb", "parquet"},
    tags={"stage": "ingest"},
    check_specs=[LINES_RECONCILE, MESSAGES_QUALITY],
    description="Typed messages of one scope (`staged/messages/scope=<key>/`), one per message_id: exact "
    "repeats collapse and are counted, conflicting copies are quarantined.",
)
def messages(context: dg.AssetExecutionContext, settings: BackfillSettings) -> dg.MaterializeResult:
    layout, scope = settings.layout, context.partition_key
    require_scope(layout, scope)
    # The scope's state changes from here on, whoever started the run and with whatever options.
    unsettle(layout, scope)
    # The quality check below needs GX, seconds to import in a fresh run process: beside the staging.
    import_ahead(GREAT_EXPECTATIONS)
    stats = stage_messages(layout, scope, settings.conflicts)
    total = scan_messages(layout, scope)
    for s in stats:
        context.log.info(
            f"{scope} dump {s.dump_id}: {s.rows_in} rows -> {s.messages} messages, {s.repeats} repeats, "
            f"{s.conflicts} conflicts, {s.superseded} earlier messages superseded"
        )
    return dg.MaterializeResult(
        metadata={
            "new_dumps": len(stats),
            "new_messages": sum(s.messages for s in stats),
            "repeats": sum(s.repeats for s in stats),
            "conflicts_quarantined": sum(s.conflicts for s in stats),
            "superseded_quarantined": sum(s.superseded for s in stats),
            "dagster/row_count": 0 if total is None else int(total.select(pl.len()).collect().item()),
            **schema_metadata(total),
            "preview": table_preview(
                None
                if total is None
                else total.select("thread_id", "message_id", "role", "created_at", "text")
            ),
            "path": dg.MetadataValue.path(str(layout.messages(scope))),
        },
        check_results=[lines_reconcile(message_counts(layout, scope)), messages_quality(total)],
    )
