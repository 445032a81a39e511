"""The landing sensor.

It watches the landing folder for every file the ingest accepts (:func:`pipelines.ingest.dumps.is_dump_name`:
``.ndjson``, ``.jsonl`` and ``.json``, each also ``.gz`` or ``.zst``, and ``.zip`` archives of them, whatever
their shape inside), found as the ingest finds them (:func:`pipelines.ingest.dumps.discover_dumps`). Each
new dump starts an ingest run of its own (which stages it and registers its scopes as partitions); once
no ingest run is under way, every scope with staged rows that its messages have not taken in yet gets a
run of the scope job. Run keys are derived from the dumps involved, so a tick that sees the same state
again requests nothing new.
"""

import hashlib

import dagster as dg

from assets.jobs import dump_run_tags, ingest_job, scope_job, scope_run_tags
from assets.partitions import SCOPES
from assets.pools import destination_pool, ensure_destination_pool
from assets.resources import BackfillSettings, EngramiaDestination
from pipelines.ingest.catalog import pending_dumps, read_scopes
from pipelines.ingest.messages import pending_message_dumps
from pipelines.load.rest.servers import ServerConfigError


def _ingest_under_way(instance: dg.DagsterInstance, new_dumps: list[str]) -> bool:
    """An ingest run is queued or running, or one is being asked for a dump no run has taken yet (a dump
    whose run failed does not hold the scopes back)."""
    active = [
        dg.DagsterRunStatus.QUEUED,
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
    ]
    if instance.get_run_ids(dg.RunsFilter(job_name=ingest_job.name, statuses=active), limit=1):
        return True
    return any(not instance.get_run_ids(dg.RunsFilter(tags=dump_run_tags(d)), limit=1) for d in new_dumps)


def _digest(parts: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()[:16]


def _make_write_pool(
    instance: dg.DagsterInstance, settings: BackfillSettings, engramia: EngramiaDestination, scope: str
) -> None:
    """The scope's destination's write pool, made here, in the one daemon process, before any scope run of
    it can start (assets/pools.py)."""
    try:
        pool = destination_pool(engramia.describe(settings.layout, scope))
    except (ServerConfigError, ValueError):
        return  # the scope's run reports the destination's configuration error
    ensure_destination_pool(instance, settings.layout, pool, engramia.writers)


@dg.sensor(
    jobs=[ingest_job, scope_job],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="New dumps in the landing folder -> ingest; newly staged scopes -> one scope run each.",
)
def landing_sensor(
    context: dg.SensorEvaluationContext, settings: BackfillSettings, engramia: EngramiaDestination
) -> dg.SensorResult:
    layout = settings.layout
    requests: list[dg.RunRequest] = []
    # The same settle rule as the ingest run applies, so the run reads exactly the dumps seen here.
    dumps = (
        pending_dumps(layout, settings.source, settings.settle_seconds) if settings.source.exists() else []
    )
    # One run per dump, so dumps are staged side by side (up to the instance's run limit).
    requests.extend(
        dg.RunRequest(job_name=ingest_job.name, run_key=f"ingest:{d.dump_id}", tags=dump_run_tags(d.dump_id))
        for d in dumps
    )
    if _ingest_under_way(context.instance, [d.dump_id for d in dumps]):
        # A scope's run waits for the dumps being staged: started now, it would pair and load again once
        # they are in (the result is the same, the work twice).
        return dg.SensorResult(run_requests=requests)
    known = set(context.instance.get_dynamic_partitions(SCOPES.name))
    for scope in read_scopes(layout)["scope"].to_list():
        pending = pending_message_dumps(layout, scope)
        if not pending:
            continue
        if scope not in known:
            # Only the ingest asset registers scopes: one staged into this folder under another
            # Dagster instance is taken up by the next ingest run here.
            context.log.warning(f"scope {scope} is staged but not a partition of this instance yet")
            continue
        _make_write_pool(context.instance, settings, engramia, scope)
        requests.append(
            dg.RunRequest(
                job_name=scope_job.name,
                partition_key=scope,
                run_key=f"{scope}:{_digest(pending)}",
                tags=scope_run_tags(scope),
            )
        )
    return dg.SensorResult(
        run_requests=requests,
        skip_reason=None if requests else f"no new dumps in {settings.source}",
    )
