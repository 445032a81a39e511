"""The Dagster instance the CLI records its runs in, and the run config that carries its options."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import dagster as dg

from assets.resources import BackfillSettings, EngramiaDestination

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


INSTANCE_TEMPLATE = Path(__file__).parents[1] / "dagster.yaml"


def open_instance(data_dir: Path) -> dg.DagsterInstance:
    home = Path(os.environ.get("DAGSTER_HOME") or data_dir / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        # The UI's instance and the CLI's are one: same run queue, same pools, no telemetry.
        shutil.copyfile(INSTANCE_TEMPLATE, config)
    # Built from the folder, not from the environment: the caller's DAGSTER_HOME is left as it was.
    return dg.DagsterInstance.from_config(str(home))


def _resource_config(resource: dg.ConfigurableResource) -> dict[str, Any]:
    return {name: v for name in type(resource).model_fields if (v := getattr(resource, name)) is not None}


def run_config(settings: BackfillSettings, destination: EngramiaDestination) -> dict[str, Any]:
    """The whole configuration of a CLI run as run config: the UI shows it and re-executes with it."""
    return {
        "resources": {
            "settings": {"config": _resource_config(settings)},
            "engramia": {"config": _resource_config(destination)},
        },
        **QUIET,
    }


def failed_check_names(result: dg.ExecuteInProcessResult) -> list[str]:
    out = []
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed:
            severity = evaluation.severity.value if evaluation.severity else "ERROR"
            out.append(f"{evaluation.asset_key.to_user_string()}.{evaluation.check_name} ({severity})")
    return out


def first_error(result: dg.ExecuteInProcessResult) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            err = event.step_failure_data.error
            while err.cause is not None and "Error occurred while executing" in err.message:
                err = err.cause
            return err.message.strip().splitlines()[-1] if err.message else "step failed"
    return "run failed"
