"""The options of ``assistants-backfill run``, which ``plan`` takes too (it tells what the same command
line would do). Defined once here; :mod:`assets.cli.run` checks them before any work."""

from __future__ import annotations

import argparse
from pathlib import Path

from assets.cli.destination import add_rest_options
from assets.cli.remote import add_s3_arguments, location_arg
from assets.cli.scoring_args import add_scoring_arguments
from assets.destination import NO_DESTINATION
from pipelines.ingest.formats import FORMATS
from pipelines.ingest.messages import CONFLICT_POLICIES
from pipelines.load.rest.options import MODES
from pipelines.pairing.pairs import Pairing
from pipelines.scopes import ScopeBy
from pipelines.tables import DEFAULT_DATA_DIR

DEFAULT_MAX_QUARANTINE_PCT = 10.0


def add_run_arguments(r: argparse.ArgumentParser) -> None:
    r.add_argument(
        "--input",
        type=location_arg,
        required=True,
        help="a dump file, a folder of dumps, or s3://bucket/prefix",
    )
    r.add_argument(
        "--format",
        choices=list(FORMATS),
        help="read every input file as this shape instead of detecting it from the file's first 64 KB: "
        + "; ".join(f"{name}: {fmt.description}" for name, fmt in FORMATS.items()),
    )
    r.add_argument(
        "--data-dir",
        type=location_arg,
        default=DEFAULT_DATA_DIR,
        help="root of everything a run writes: staged Parquet, the warehouse, the embedded store, the ledger "
        "(a folder, or s3://bucket/prefix)",
    )
    r.add_argument(
        "--scope-by",
        choices=[s.value for s in ScopeBy],
        default=ScopeBy.ASSISTANT.value,
        help="one Engramia (tenant, project) per assistant, per tenant (with --tenant-map), or one for all",
    )
    r.add_argument("--tenant", default="default", help="tenant name (scope-by assistant|single)")
    r.add_argument("--project", default="default", help="project name (scope-by tenant|single)")
    r.add_argument("--tenant-map", type=Path, help="CSV/Parquet thread_id,tenant_id (scope-by tenant)")
    r.add_argument(
        "--assistant-name",
        help="the assistant of ChatGPT exports (instead of the model), ShareGPT and Chat Completions files "
        "(instead of their default: sharegpt, the file's model, chat-completions)",
    )
    r.add_argument("--feedback", type=Path, help="CSV/Parquet of feedback keyed by message_id or thread_id")
    r.add_argument(
        "--rating-min", type=float, default=1.0, help="lowest value of the feedback file's rating scale"
    )
    r.add_argument(
        "--rating-max", type=float, default=5.0, help="highest value of the feedback file's rating scale"
    )
    add_scoring_arguments(r)
    r.add_argument(
        "--conflicts",
        choices=CONFLICT_POLICIES,
        default="first",
        help="which copy of a message_id with different content wins: the first staged, or the latest "
        "(a corrected re-export; the copy it replaces is quarantined as superseded)",
    )
    r.add_argument(
        "--pairing",
        choices=[p.value for p in Pairing],
        default=Pairing.MERGE.value,
        help="merge: consecutive messages of one role form one turn; strict: only direct question/answer "
        "neighbours pair",
    )
    r.add_argument(
        "--task-max-chars", type=int, default=2_000, help="cut a task (the question) to this many characters"
    )
    r.add_argument(
        "--code-max-chars", type=int, default=8_000, help="cut a code (the answer) to this many characters"
    )
    r.add_argument(
        "--destination",
        choices=["embedded", *MODES, NO_DESTINATION],
        default="embedded",
        help="embedded: the engramia package in-process; rest-learn / rest-import: a running Engramia "
        "server; none: transform only (every table and every check that needs no store; nothing is loaded, "
        "the load's checks are skipped, and a later run with a destination loads what was scored)",
    )
    r.add_argument("--store", type=Path, help="embedded Engramia store folder (default <data-dir>/engramia)")
    r.add_argument("--json", action="store_true", help="print the per-scope summary as JSON")
    r.add_argument("--verbose", action="store_true", help="stage lines on stderr even with --no-progress")
    r.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    r.add_argument(
        "--max-quarantine-pct",
        type=float,
        default=DEFAULT_MAX_QUARANTINE_PCT,
        help="fail the run (exit 1) when more of this run's lines than this share are quarantined",
    )
    r.add_argument(
        "--allow-option-change",
        action="store_true",
        help="accept other pairing or truncation options than the data folder was built with "
        "(re-pairs every thread and retracts loaded patterns that change)",
    )
    r.add_argument("--debug", action="store_true", help="show Dagster's log and stack traces of failures")
    add_s3_arguments(r)
    add_rest_options(r)
    r.add_argument("--no-validate", action="store_true", help="skip the check of the server's input limits")
    r.add_argument("--async-import", action="store_true", help="rest-import: Prefer: respond-async + polling")
    r.add_argument(
        "--max-body-bytes",
        type=int,
        default=1_048_576,
        help="the server's request body limit (default 1 MiB); import batches stay under it",
    )
    r.add_argument(
        "--resend-rejected",
        action="store_true",
        help="send again patterns the server rejected (422) or did not store",
    )
