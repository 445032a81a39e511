"""The one ``Definitions`` of the project, loaded by workspace.yaml, ``dagster dev`` and the CLI.

The data folder comes from the environment (``BACKFILL_DATA_DIR``, set by ``make ui``); Dagster records
the variable's name, not its value. Runs started by the CLI carry their whole configuration as run
config, so the UI shows it and can re-execute them as they were.
"""

from __future__ import annotations

import dagster as dg

from assets.destination import EngramiaDestination
from assets.jobs import ALL_ASSETS, ingest_job, scope_job
from assets.resources import BackfillSettings
from assets.sensors import landing_sensor

defs = dg.Definitions(
    assets=ALL_ASSETS,
    jobs=[ingest_job, scope_job],
    sensors=[landing_sensor],
    resources={
        "settings": BackfillSettings(data_dir=dg.EnvVar("BACKFILL_DATA_DIR")),
        "engramia": EngramiaDestination(),
    },
)
