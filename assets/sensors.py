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
from pathlib import Path, PurePosixPath

import dagster as dg

from assets.destination import EngramiaDestination
from assets.jobs import DATA_DIR_TAG, dump_run_tags, ingest_job, scope_job, scope_run_tags
from assets.partitions import SCOPES
from assets.pools import make_write_pool
from assets.resources import BackfillSettings
from pipelines.ingest.catalog import pending_dumps, read_manifest, read_scopes
from pipelines.ingest.dumps import Dump
from pipelines.ingest.messages import pending_message_dumps
from pipelines.objectstore.landing import object_url, pending_objects
from pipelines.objectstore.sync import pull
from pipelines.tables import DataLayout

PARTITION_TAG = "dagster/partition"
_ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def _ingest_under_way(instance: dg.DagsterInstance, new_dumps: list[str]) -> bool:
    """An ingest run is queued or running, or one is being asked for a dump no run has taken yet (a dump
    whose run failed does not hold the scopes back)."""
    if instance.get_run_ids(dg.RunsFilter(job_name=ingest_job.name, statuses=_ACTIVE), limit=1):
        return True
    return any(not instance.get_run_ids(dg.RunsFilter(tags=dump_run_tags(d)), limit=1) for d in new_dumps)


def _scopes_under_way(instance: dg.DagsterInstance) -> set[str]:
    """Scopes with a run queued or running. A tick during such a run sees only the dumps it has not
    staged yet, a set no run key has named, and would ask for a second run of the scope."""
    runs = instance.get_runs(dg.RunsFilter(job_name=scope_job.name, statuses=_ACTIVE))
    # Every run of the scope job carries its partition, whoever launched it (the UI sets no scope tag).
    return {r.tags[PARTITION_TAG] for r in runs if PARTITION_TAG in r.tags}


def _digest(parts: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()[:16]


@dg.sensor(
    jobs=[ingest_job, scope_job],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="New dumps in the landing folder -> ingest; newly staged scopes -> one scope run each.",
)
def landing_sensor(
    context: dg.SensorEvaluationContext, settings: BackfillSettings, engramia: EngramiaDestination
) -> dg.SensorResult:
    locations = settings.locations()
    layout = _readable_layout(settings)
    # Every run on an s3:// data directory carries its URL: the run queue starts one at a time (each
    # run holds the directory's writer lease while it works).
    extra = {DATA_DIR_TAG: settings.data_dir} if locations.remote_data else {}
    if locations.landing_url:
        requests, dump_ids = _object_requests(settings, layout, extra)
    else:
        # The same settle rule as the ingest run applies, so the run reads exactly the dumps seen here.
        source = settings.source
        dumps = pending_dumps(layout, source, settings.settle_seconds) if source.exists() else []
        dump_ids = [d.dump_id for d in dumps]
        # One run per dump, so dumps are staged side by side (up to the instance's run limit).
        requests = [
            dg.RunRequest(job_name=ingest_job.name, run_key=f"ingest:{d}", tags={**dump_run_tags(d), **extra})
            for d in dump_ids
        ]
    if _ingest_under_way(context.instance, dump_ids):
        # A scope's run waits for the dumps being staged: started now, it would pair and load again once
        # they are in (the result is the same, the work twice).
        return dg.SensorResult(run_requests=requests)
    known = set(context.instance.get_dynamic_partitions(SCOPES.name))
    running = _scopes_under_way(context.instance)
    for scope in read_scopes(layout)["scope"].to_list():
        pending = pending_message_dumps(layout, scope)
        if not pending or scope in running:
            # A running scope's next tick after it ends asks again for whatever it left.
            continue
        if scope not in known:
            # Only the ingest asset registers scopes: one staged into this folder under another
            # Dagster instance is taken up by the next ingest run here.
            context.log.warning(f"scope {scope} is staged but not a partition of this instance yet")
            continue
        # Made here, in the one daemon process, before any scope run of it can start (assets/pools.py).
        make_write_pool(context.instance, layout, engramia, scope)
        requests.append(
            dg.RunRequest(
                job_name=scope_job.name,
                partition_key=scope,
                run_key=f"{scope}:{_digest(pending)}",
                tags={**scope_run_tags(scope), **extra},
            )
        )
    return dg.SensorResult(
        run_requests=requests,
        skip_reason=None if requests else f"no new dumps in {locations.landing_url or settings.source}",
    )


def _readable_layout(settings: BackfillSettings) -> DataLayout:
    """The data directory as the sensor reads it: an s3:// one through a read-only copy of its own (no
    lease: the manifest is published last, so at worst the tick sees the state before a run's)."""
    locations = settings.locations()
    if not locations.remote_data:
        return settings.layout
    view = locations.work / "sensor-view"
    pull(locations.data_store(), view)
    return DataLayout.at(view)


def _object_requests(
    settings: BackfillSettings, layout: DataLayout, extra: dict[str, str]
) -> tuple[list[dg.RunRequest], list[str]]:
    """One ingest run per complete dump object not ingested yet (a listed object is a complete upload;
    temporary names are left out). A zip's members are known only once copied, so its run takes every
    new dump instead of one."""
    store = settings.locations().landing_store()
    requests, dump_ids = [], []
    for obj in pending_objects(store, read_manifest(layout)):
        url = object_url(store, obj)
        tags = dict(extra)
        if PurePosixPath(obj.relative).suffix.lower() != ".zip":
            dump_id = Dump(Path(obj.relative), obj.size, obj.mtime_ns, None, url, obj.etag).dump_id
            tags |= dump_run_tags(dump_id)
            dump_ids.append(dump_id)
        requests.append(
            dg.RunRequest(job_name=ingest_job.name, run_key=f"ingest:{url}:{obj.etag}", tags=tags)
        )
    return requests, dump_ids
