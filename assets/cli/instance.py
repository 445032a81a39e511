"""The Dagster instance the CLI records its runs in, how it runs the project's jobs there, and the run
config that carries its options.

A CLI run executes in this process, like ``execute_in_process``, but is recorded as a run of the code
location that workspace.yaml names: the UI lists it under its job and can re-execute it, with the same
run config, through the location's own run launcher.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.definitions.repository_definition.valid_definitions import SINGLETON_REPOSITORY_NAME
from dagster._core.execution.api import create_execution_plan, execute_run
from dagster._core.execution.job_execution_result import JobExecutionResult
from dagster._core.instance.ref import InstanceRef
from dagster._core.remote_origin import InProcessCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.utils import make_new_run_id

from assets.abandoned_runs import process_tags
from assets.cli.instance_storage import keeping_connections
from assets.destination import EngramiaDestination
from assets.resources import BackfillSettings

# As workspace.yaml and [tool.dagster] in pyproject.toml name them.
DEFINITIONS_MODULE = "assets.definitions"
CODE_LOCATION = "assistants_backfill"
INSTANCE_TEMPLATE = Path(__file__).parents[1] / "dagster.yaml"


def open_instance(data_dir: Path) -> dg.DagsterInstance:
    """The data folder's instance (``DAGSTER_HOME`` when set): the UI's and the CLI's are one, with the same
    run history, run queue and write pools. Its SQLite storage keeps each database's connection between
    events (:mod:`assets.cli.instance_storage`); the files are Dagster's own."""
    home = Path(os.environ.get("DAGSTER_HOME") or data_dir / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        shutil.copyfile(INSTANCE_TEMPLATE, config)
    # Built from the folder, not from the environment: the caller's DAGSTER_HOME is left as it was.
    ref = InstanceRef.from_dir(str(home))
    return dg.DagsterInstance.from_ref(ref._replace(storage_data=keeping_connections(ref.storage_data)))


def _resource_config(resource: dg.ConfigurableResource) -> dict[str, Any]:
    return {name: v for name in type(resource).model_fields if (v := getattr(resource, name)) is not None}


def run_config(
    settings: BackfillSettings, destination: EngramiaDestination, log_level: str = "CRITICAL"
) -> dict[str, Any]:
    """The whole configuration of a CLI run as run config: the UI shows it and re-executes with it.

    The console log stays quiet by default: the CLI reports each failure itself, in one line.
    """
    return {
        "resources": {
            "settings": {"config": _resource_config(settings)},
            "engramia": {"config": _resource_config(destination)},
        },
        "loggers": {"console": {"config": {"log_level": log_level}}},
    }


def execute(
    instance: dg.DagsterInstance,
    job_name: str,
    config: Mapping[str, Any],
    partition_key: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> JobExecutionResult:
    """Run one of the project's jobs in this process, recorded as a run of the code location."""
    target = LoadableTargetOrigin(
        executable_path=sys.executable, module_name=DEFINITIONS_MODULE, working_directory=os.getcwd()
    )
    job = ReconstructableRepository.for_module(
        DEFINITIONS_MODULE, "defs", working_directory=os.getcwd()
    ).get_reconstructable_job(job_name)
    origin = RemoteJobOrigin(
        RemoteRepositoryOrigin(
            InProcessCodeLocationOrigin(target, location_name=CODE_LOCATION), SINGLETON_REPOSITORY_NAME
        ),
        job_name,
    )
    job_def = job.get_definition()
    # Tagged with this process: a run left running by a process that died is closed by the next CLI run.
    run_id = make_new_run_id()
    run_tags = {**job_def.run_tags, **(tags or {}), **process_tags(run_id)}
    if partition_key is not None:
        run_tags["dagster/partition"] = partition_key
    plan = create_execution_plan(job, run_config=config, instance_ref=instance.get_ref(), tags=run_tags)
    run = instance.create_run_for_job(
        job_def=job_def,
        run_id=run_id,
        run_config=config,
        tags=run_tags,
        remote_job_origin=origin,
        job_code_origin=job.get_python_origin(),
        execution_plan=plan,
    )
    return execute_run(job, run, instance, raise_on_error=False)


def failed_check_names(result: JobExecutionResult) -> list[str]:
    out = []
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed:
            severity = evaluation.severity.value if evaluation.severity else "ERROR"
            out.append(f"{evaluation.asset_key.to_user_string()}.{evaluation.check_name} ({severity})")
    return out


def optional_step_failures(result: JobExecutionResult) -> list[str]:
    """Optional steps that failed without failing their asset (the warehouse views), as reported in
    the materializations' metadata."""
    out = []
    # A load skipped by design (destination none) reports its view refresh on an observation.
    materialized = result.get_asset_materialization_events()
    recorded = [e.step_materialization_data.materialization for e in materialized]
    recorded += [e.asset_observation_data.asset_observation for e in result.get_asset_observation_events()]
    for record in recorded:
        views = record.metadata.get("warehouse_views")
        if views is not None and str(views.value) != "refreshed":
            out.append(f"{record.asset_key.to_user_string()}: warehouse views {views.value}")
    return out


def judge_warnings(result: JobExecutionResult) -> list[str]:
    """What the LLM judge left unanswered in the run, from the scored patterns' ``llm_judge`` metadata:
    those patterns were scored by the next source, which the operator must hear of."""
    out = []
    for event in result.get_asset_materialization_events():
        record = event.step_materialization_data.materialization
        judge = record.metadata.get("llm_judge")
        data = judge.value if judge is not None else None
        if not isinstance(data, dict) or not (data.get("errors") or data.get("stopped")):
            continue
        line = f"{record.partition}: the judge left {data.get('errors', 0) + data.get('skipped', 0)} patterns"
        line += " unanswered (scored by the next source)"
        if data.get("stopped"):
            line += f"; judge stopped: {data['stopped']}"
        out.append(line)
    return out


def first_error(result: JobExecutionResult) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            err = event.step_failure_data.error
            while err.cause is not None and "Error occurred while executing" in err.message:
                err = err.cause
            return err.message.strip().splitlines()[-1] if err.message else "step failed"
    return "run failed"
