"""Jobs and the landing sensor.

The sensor watches the landing folder. New dumps start an ingest run; once they are staged, every scope
with staged rows that its messages have not taken in yet is registered as a partition (if new) and gets
a run of the scope job. Run keys are derived from the dumps involved, so a tick that sees the same
state again requests nothing new.
"""

import hashlib

import dagster as dg

from assets.backfill import SCOPE_ASSETS, SCOPES, raw_thread_exports
from assets.resources import BackfillSettings
from pipelines.ingest.messages import pending_message_dumps
from pipelines.ingest.staging import pending_dumps, read_scopes

ingest_job = dg.define_asset_job(
    "ingest_job", selection=dg.AssetSelection.assets(raw_thread_exports), description="Stage new dumps."
)
scope_job = dg.define_asset_job(
    "scope_job",
    selection=dg.AssetSelection.assets(*SCOPE_ASSETS),
    partitions_def=SCOPES,
    description="Messages -> patterns -> scores -> Engramia for one scope.",
)


def _digest(parts: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()[:16]


@dg.sensor(
    jobs=[ingest_job, scope_job],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="New dumps in the landing folder -> ingest; newly staged scopes -> one scope run each.",
)
def landing_sensor(context: dg.SensorEvaluationContext, settings: BackfillSettings) -> dg.SensorResult:
    layout = settings.layout
    requests: list[dg.RunRequest] = []
    if settings.source.exists():
        # The same settle rule as the ingest run applies, so the run reads exactly the dumps seen here.
        settled = pending_dumps(layout, settings.source, settings.settle_seconds)
        if settled:
            requests.append(
                dg.RunRequest(
                    job_name=ingest_job.name, run_key=f"ingest:{_digest([d.dump_id for d in settled])}"
                )
            )
    known = set(context.instance.get_dynamic_partitions(SCOPES.name))
    new_scopes: list[str] = []
    for scope in read_scopes(layout)["scope"].to_list():
        pending = pending_message_dumps(layout, scope)
        if not pending:
            continue
        if scope not in known:
            new_scopes.append(scope)
        requests.append(
            dg.RunRequest(job_name=scope_job.name, partition_key=scope, run_key=f"{scope}:{_digest(pending)}")
        )
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[SCOPES.build_add_request(new_scopes)] if new_scopes else [],
        skip_reason=None if requests else f"no new dumps in {settings.source}",
    )


__all__ = ["ingest_job", "landing_sensor", "scope_job"]
