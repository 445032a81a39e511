"""The one ``Definitions`` of the project, loaded by workspace.yaml and by ``dagster dev``."""

from __future__ import annotations

import dagster as dg

from assets.backfill import BACKFILL_ASSETS
from assets.resources import BackfillSettings, EngramiaDestination
from assets.sensors import ingest_job, landing_sensor, scope_job
from checks.backfill_checks import BACKFILL_CHECKS

defs = dg.Definitions(
    assets=BACKFILL_ASSETS,
    asset_checks=BACKFILL_CHECKS,
    jobs=[ingest_job, scope_job],
    sensors=[landing_sensor],
    resources={"settings": BackfillSettings(), "engramia": EngramiaDestination()},
)
