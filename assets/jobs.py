"""The two jobs every run goes through, whether the sensor, the UI or the CLI starts it.

A scope run executes in one process: its four steps are short and sequential, and a process per step
would spend most of the run starting interpreters and importing Polars, DuckDB and engramia again.
"""

import dagster as dg

from assets.engramia import engramia_scopes
from assets.ingest import DUMP_TAG, raw_thread_exports
from assets.messages import messages
from assets.partitions import SCOPES
from assets.patterns import paired_patterns, scored_patterns

SCOPE_ASSETS = [messages, paired_patterns, scored_patterns, engramia_scopes]
ALL_ASSETS = [raw_thread_exports, *SCOPE_ASSETS]

# Run tags the instance's run queue limits (assets/dagster.yaml): one run per dump and one run per scope
# at a time. Ingest runs of different dumps run side by side: each dump is staged by the run that claims
# it (pipelines/ingest/claims.py).
INGEST_TAG = "assistants_backfill/ingest"
SCOPE_TAG = "assistants_backfill/scope"
# Runs on an s3:// data directory (set by the landing sensor): one at a time per directory, since each
# run works in a copy it publishes whole (pipelines/objectstore/lease.py).
DATA_DIR_TAG = "assistants_backfill/data_dir"

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets(raw_thread_exports),
    description="Stage new dumps: every line becomes a staged row or a quarantined one.",
    tags={INGEST_TAG: "landing"},
    executor_def=dg.in_process_executor,
)
scope_job = dg.define_asset_job(
    "scope_job",
    selection=dg.AssetSelection.assets(*SCOPE_ASSETS),
    partitions_def=SCOPES,
    description="Messages -> patterns -> scores -> Engramia for one scope.",
    executor_def=dg.in_process_executor,
)


def scope_run_tags(scope: str) -> dict[str, str]:
    return {SCOPE_TAG: scope}


def dump_run_tags(dump_id: str) -> dict[str, str]:
    """An ingest run that takes this one dump (an ingest run without the tag takes every new dump)."""
    return {DUMP_TAG: dump_id}
