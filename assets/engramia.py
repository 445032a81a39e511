"""``engramia_scopes``: one scope's kept patterns loaded into its Engramia (tenant, project).

Loads into one destination are limited by that destination's write slots (assets/pools.py): one writer
by default, which suits an embedded or JSON-backed store; a Postgres-backed server takes more. Scopes bound
for different destinations load side by side.
"""

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import dagster as dg

from assets.common import CODE_VERSION, GROUP, OWNERS, refresh_views
from assets.destination import LOAD_SKIPPED_REASON, EngramiaDestination
from assets.partitions import SCOPES, require_scope
from assets.patterns import scored_patterns
from assets.pools import destination_slot, make_write_pool
from assets.resources import BackfillSettings
from checks.accounting import LOAD_ACCOUNTS_FOR_KEPT, load_accounts_for_kept
from checks.loading import (
    PATTERN_COUNT_RECONCILES,
    RECALL_SPOT_CHECK,
    pattern_count_reconciles,
    recall_spot_check,
)
from pipelines.load.ledger import Ledger
from pipelines.load.plan import LoadResult, latest_load_result, save_load_result
from pipelines.load.records import kept_ids
from pipelines.load.verify import verify_updates_embedded, verify_updates_rest
from pipelines.tables import DataLayout


def count_reconciliation(
    layout: DataLayout, scope: str, engramia: EngramiaDestination, load: LoadResult | None = None
) -> dg.AssetCheckResult:
    """The pattern-count check for ``load`` (default: the scope's last recorded load), with the count
    asked of Engramia now and what the ledger says the store holds."""
    figures = load.as_dict() if load is not None else latest_load_result(layout, scope)
    if figures is None:
        return pattern_count_reconciles(None, 0, 0)
    tenant_id, project_id = require_scope(layout, scope)
    now = engramia.pattern_count(layout, scope, tenant_id, project_id)
    in_ledger = Ledger(layout, scope, engramia.describe(layout, scope)).in_store().height
    return pattern_count_reconciles(figures, now, in_ledger, _updates_held(layout, scope, engramia, figures))


def _updates_held(layout: DataLayout, scope: str, engramia: EngramiaDestination, figures: dict) -> list[dict]:
    """A sample of the patterns the load updated, read back from the store (before any recall)."""
    sample = figures.get("updates") or []
    sample = json.loads(sample) if isinstance(sample, str) else sample
    if not sample:
        return []
    tenant_id, project_id = require_scope(layout, scope)
    if engramia.is_rest:
        server = engramia.server_for(layout, scope, tenant_id, project_id)
        return verify_updates_rest(layout, scope, server, engramia.rest_options(), sample)
    store, dest = engramia.store(layout), engramia.describe(layout, scope)
    return verify_updates_embedded(layout, scope, store, dest, tenant_id, project_id, sample)


def _spot_check(
    layout: DataLayout, scope: str, engramia: EngramiaDestination, result: LoadResult
) -> dg.AssetCheckResult:
    tenant_id, project_id = require_scope(layout, scope)
    method, hits = engramia.spot_check(layout, scope, tenant_id, project_id, result.ledger_run_id)
    return recall_spot_check(hits, method)


def _accounting(
    layout: DataLayout, scope: str, engramia: EngramiaDestination, result: LoadResult
) -> dg.AssetCheckResult:
    """The load's terms against the kept set counted again and the ledger's view of the store."""
    kept = kept_ids(layout, scope)
    in_store = Ledger(layout, scope, engramia.describe(layout, scope)).in_store()
    kept_in_store = in_store.join(kept, on="pattern_id", how="semi").height
    return load_accounts_for_kept(result.as_dict(), kept.height, kept_in_store)


def _rest_metadata(result: LoadResult) -> dict[str, object]:
    return {
        "redacted": result.redacted,
        "redactions": dg.MetadataValue.json(json.loads(result.redactions or "{}")),
        "rejections": dg.MetadataValue.json(result.rejections[:20]),
        "ledger_in_store": result.ledger_in_store,
        "requests": result.requests,
        "rate_limited": result.rate_limited,
        "notes": result.notes,
    }


def _write_slot(
    context: dg.AssetExecutionContext, settings: BackfillSettings, engramia: EngramiaDestination
) -> AbstractContextManager[None] | None:
    """A slot of the scope's destination's pool, made at ``engramia.writers`` slots when new."""
    pool = make_write_pool(context.instance, settings.layout, engramia, context.partition_key)
    if pool is None:
        return None
    step = context.get_step_execution_context().step.key
    return destination_slot(context.instance, pool, context.run_id, step, log=context.log.info)


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "engramia_scopes",
            deps=[scored_patterns],
            group_name=GROUP,
            owners=OWNERS,
            code_version=CODE_VERSION,
            kinds={"engramia", "python"},
            tags={"stage": "load"},
            description="Kept patterns loaded into Engramia under the scope's (tenant, project); a ledger "
            "records each pattern's outcome so nothing is sent twice.",
            # Destination none (transform only) leaves it unmaterialized: nothing reached Engramia.
            skippable=True,
        )
    ],
    partitions_def=SCOPES,
    check_specs=[PATTERN_COUNT_RECONCILES, RECALL_SPOT_CHECK, LOAD_ACCOUNTS_FOR_KEPT],
    # Subsettable so that a run without a load yields neither the asset nor its checks: Dagster then shows
    # the checks as skipped instead of requiring a result for each.
    can_subset=True,
)
def engramia_scopes(
    context: dg.AssetExecutionContext, settings: BackfillSettings, engramia: EngramiaDestination
) -> Iterator[dg.MaterializeResult | dg.AssetObservation]:
    layout, scope = settings.layout, context.partition_key
    tenant_id, project_id = require_scope(layout, scope)
    if not engramia.loads:
        views = refresh_views(context, settings)
        context.log.info(f"{scope}: {LOAD_SKIPPED_REASON}")
        yield dg.AssetObservation(
            asset_key="engramia_scopes",
            partition=scope,
            metadata={"loaded": 0, "load_skipped": LOAD_SKIPPED_REASON, "destination": "none", **views},
        )
        return
    writes = _write_slot(context, settings, engramia)
    result = engramia.load(layout, scope, tenant_id, project_id, log=context.log.info, writes=writes)
    save_load_result(layout, result, context.run_id)
    views = refresh_views(context, settings)
    rate = result.sent / result.seconds if result.seconds else 0.0
    context.log.info(
        f"{scope} -> {tenant_id}/{project_id}: sent {result.sent}, stored {result.stored}, "
        f"present {result.present}, skipped {result.skipped}, rejected {result.rejected}, "
        f"retracted {result.retracted}, updated {result.updated}, {rate:.1f} patterns/s; pattern_count "
        f"{result.pattern_count_before} -> {result.pattern_count_after}"
    )
    for rejection in result.rejections[:20]:
        context.log.warning(f"{scope}: rejected {rejection['pattern_id']}: {rejection['reason']}")
    if result.error:
        raise dg.Failure(description=result.error, metadata={"scope": scope})
    # In this order: the count is read back before the spot check reads the store.
    checks: list[tuple[str, Callable[[], dg.AssetCheckResult]]] = [
        (PATTERN_COUNT_RECONCILES.name, lambda: count_reconciliation(layout, scope, engramia, result)),
        (RECALL_SPOT_CHECK.name, lambda: _spot_check(layout, scope, engramia, result)),
        (LOAD_ACCOUNTS_FOR_KEPT.name, lambda: _accounting(layout, scope, engramia, result)),
    ]
    selected = {key.name for key in context.selected_asset_check_keys}
    yield dg.MaterializeResult(
        metadata={
            "tenant_id": tenant_id,
            "project_id": project_id,
            "destination": result.destination,
            "kept": result.kept,
            **result.terms(),
            "replaced": result.replaced,
            "sent": result.sent,
            "stored": result.stored,
            "retracted": result.retracted,
            "updated": result.updated,
            "pattern_count_before": result.pattern_count_before,
            "pattern_count_after": result.pattern_count_after,
            "patterns_per_second": round(rate, 1),
            "dagster/row_count": result.pattern_count_after,
            **views,
            **(
                {"server_version": result.server_version or "", **_rest_metadata(result)}
                if engramia.is_rest
                else {}
            ),
        },
        check_results=[check() for name, check in checks if name in selected],
    )
