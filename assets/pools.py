"""The pool the loads run in, made to exist before any scope run can claim it.

Dagster creates a pool's slots when a step first claims it. On the Postgres instance, two scope runs that
claimed ``engramia_writes`` before it existed both got a slot, and two loads wrote the embedded store at
once (seen in tests/orchestration/test_parallel_runs.py). So the ingest run, which registers the scopes
before any scope run can exist, creates the pool at the instance's default limit, one ingest run at a time
(under the data directory's catalog lock); a limit already set (``dagster instance concurrency set``) is
left as it is.
"""

import dagster as dg

from pipelines.ingest.claims import catalog_lock
from pipelines.tables import DataLayout

POOL = "engramia_writes"


def ensure_pool(instance: dg.DagsterInstance, layout: DataLayout) -> None:
    storage = instance.event_log_storage
    # Without a default limit an unknown pool is unlimited, and creating it would give it no slot at all.
    if not storage.supports_global_concurrency_limits or instance.global_op_concurrency_default_limit is None:
        return
    with catalog_lock(layout):
        if POOL not in {pool.name for pool in storage.get_pool_limits()}:
            storage.initialize_concurrency_limit_to_default(POOL)
