"""``raw_thread_exports``: new dumps read once, every line staged or quarantined.

It is unpartitioned (one dump holds many scopes; a run takes one dump or every new one) and registers
each scope it finds as a partition of everything downstream.
"""

import dagster as dg

from assets.common import CODE_VERSION, GROUP, OWNERS, refresh_views
from assets.metadata import table_preview
from assets.partitions import register_scopes
from assets.resources import BackfillSettings
from checks.staging import DUMP_LINES_RECONCILE, dump_lines_reconcile
from pipelines.ingest.catalog import read_manifest, read_scopes
from pipelines.ingest.staging import ingest

# A run with this tag takes that one dump (the sensor starts one per dump); without it, every new dump.
DUMP_TAG = "assistants_backfill/dump"


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    code_version=CODE_VERSION,
    kinds={"duckdb", "parquet"},
    tags={"stage": "ingest"},
    check_specs=[DUMP_LINES_RECONCILE],
    description="Dumps from the landing folder (the guide's NDJSON, Assistants API messages and pages, "
    "compressed or zipped), each read in its detected or forced format into typed rows per scope; every bad "
    "line or record quarantined with file, position, raw text and reason.",
)
def raw_thread_exports(context: dg.AssetExecutionContext, settings: BackfillSettings) -> dg.MaterializeResult:
    layout = settings.layout
    results = ingest(
        layout,
        settings.source,
        settings.mapping(),
        settings.chunk_mib * 1024 * 1024,
        context.log.info,
        settle_seconds=settings.settle,
        fmt=settings.input_format,
        only=[dump_id] if (dump_id := context.run.tags.get(DUMP_TAG)) else None,
    )
    new_scopes = register_scopes(context.instance, read_scopes(layout)["scope"].to_list())
    views = refresh_views(context, settings)
    manifest = read_manifest(layout)
    reasons: dict[str, int] = {}
    formats: dict[str, int] = {}
    for r in results:
        formats[r.format] = formats.get(r.format, 0) + 1
        for k, v in r.reasons.items():
            reasons[k] = reasons.get(k, 0) + v
    return dg.MaterializeResult(
        metadata={
            "new_dumps": len(results),
            "lines": sum(r.lines for r in results),
            "staged_rows": sum(r.staged for r in results),
            "quarantined": sum(r.quarantined for r in results),
            "quarantine_reasons": dg.MetadataValue.json(reasons),
            "formats": dg.MetadataValue.json(formats),
            "new_scopes": dg.MetadataValue.json(new_scopes),
            "dumps_total": manifest.height,
            "dagster/row_count": int(manifest["staged"].sum() or 0),
            "manifest": table_preview(
                manifest.select("seq", "file", "format", "lines", "staged", "quarantined").tail(10), rows=10
            ),
            "path": dg.MetadataValue.path(str(layout.raw())),
            **views,
        },
        check_results=[dump_lines_reconcile(layout)],
    )
