"""What every asset of the graph shares: its group, owners and code version, and the warehouse refresh."""

import dagster as dg

from assets.resources import BackfillSettings
from pipelines.ingest.claims import catalog_lock
from pipelines.warehouse import refresh as refresh_warehouse

GROUP = "assistants_backfill"
OWNERS = ["team:data-engineering"]
# Bumped when an asset's logic changes what it writes, so the UI can flag materializations made by
# older code.
CODE_VERSION = "2"


def refresh_views(context: dg.AssetExecutionContext, settings: BackfillSettings) -> dict[str, str]:
    """Refresh the warehouse views; the outcome as materialization metadata (``warehouse_views``), so a
    failure shows in the asset's record as well as in the log."""
    # An analyst holding the DuckDB file open locks it; the views are a convenience, never a reason to fail.
    try:
        # Concurrent runs take turns: DuckDB refuses a second writer of the file instead of waiting.
        with catalog_lock(settings.layout):
            refresh_warehouse(settings.layout)
    except Exception as exc:
        context.log.warning(f"warehouse views not refreshed: {exc}")
        return {"warehouse_views": f"not refreshed: {type(exc).__name__}: {exc}"}
    return {"warehouse_views": "refreshed"}
