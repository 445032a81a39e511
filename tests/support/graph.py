"""Running the asset graph in-process with ``dg.materialize`` on a data folder, and reading its checks."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from assets.destination import EngramiaDestination
from assets.ingest import raw_thread_exports
from assets.jobs import ALL_ASSETS, SCOPE_ASSETS
from assets.resources import BackfillSettings
from assets.sensors import landing_sensor
from pipelines.tables import DataLayout


def resources(
    layout: DataLayout, source: Path, destination: EngramiaDestination | None = None
) -> dict[str, object]:
    return {
        "settings": BackfillSettings(data_dir=str(layout.root), landing=str(source), settle_seconds=0),
        "engramia": destination or EngramiaDestination(),
    }


def ingest(layout: DataLayout, source: Path, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        ALL_ASSETS,
        selection=dg.AssetSelection.assets(raw_thread_exports),
        resources=resources(layout, source),
        instance=instance,
    )


def scope_run(
    layout: DataLayout,
    source: Path,
    instance: dg.DagsterInstance,
    scope: str,
    destination: EngramiaDestination | None = None,
    **kwargs: object,
) -> dg.ExecuteInProcessResult:
    """The scope's run, into ``destination`` (default: the embedded store)."""
    return dg.materialize(
        ALL_ASSETS,
        selection=dg.AssetSelection.assets(*SCOPE_ASSETS),
        partition_key=scope,
        resources=resources(layout, source, destination),
        instance=instance,
        **kwargs,
    )


def checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def check_metadata(result: dg.ExecuteInProcessResult, name: str) -> dict[str, object]:
    """The metadata values of one check's evaluation in ``result``."""
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return {k: v.value for k, v in evaluation.metadata.items()}


def loaded(result: dg.ExecuteInProcessResult) -> bool:
    """Whether the run materialized the load (a failed blocking check upstream stops it)."""
    return bool(result.asset_materializations_for_node("engramia_scopes"))


def tick(
    instance: dg.DagsterInstance, settings: BackfillSettings, engramia: EngramiaDestination | None = None
) -> dg.SensorResult:
    """One evaluation of the landing sensor (resources are only open inside the context)."""
    resources = {"settings": settings, "engramia": engramia or EngramiaDestination()}
    with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
        return landing_sensor(ctx)
