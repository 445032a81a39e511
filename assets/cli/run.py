"""``assistants-backfill run``: the ingest job, then the scope job once per scope."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from assets.cli.destination import add_rest_options, destination_from_args, progress_factory
from assets.cli.instance import (
    execute,
    failed_check_names,
    first_error,
    open_instance,
    run_config,
)
from assets.cli.summary import print_table, scope_summary, unscoped_quarantined
from assets.jobs import ingest_job, scope_job, scope_run_tags
from assets.resources import BackfillSettings
from pipelines.ingest.catalog import read_scopes
from pipelines.ingest.messages import CONFLICT_POLICIES
from pipelines.progress import progress_bars


def run(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir)
    settings = BackfillSettings(
        data_dir=str(data_dir),
        landing=str(args.input),
        scope_by=args.scope_by,
        tenant=args.tenant,
        project=args.project,
        tenant_map=str(args.tenant_map) if args.tenant_map else None,
        conflicts=args.conflicts,
        pairing=args.pairing,
        task_max_chars=args.task_max_chars,
        code_max_chars=args.code_max_chars,
        score_strategy="feedback" if args.feedback else "neutral",
        feedback=str(args.feedback) if args.feedback else None,
        rating_min=args.rating_min,
        rating_max=args.rating_max,
        # The dumps were named explicitly: read them as they are now.
        settle_seconds=0,
    )
    try:
        destination = destination_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = run_config(settings, destination)
    instance = open_instance(data_dir)

    def say(msg: str) -> None:
        if not args.json or args.verbose:
            print(msg, file=sys.stderr, flush=True)

    say(f"ingesting {args.input} into {settings.layout.root}")
    ingest = execute(instance, ingest_job.name, config)
    if not ingest.success:
        print(f"ingest failed: {first_error(ingest)}", file=sys.stderr)
        return 2
    scopes = read_scopes(settings.layout)["scope"].to_list()
    if destination.is_rest and not destination.servers_file and len(scopes) > 1:
        say(
            f"warning: --engramia-url/--api-key-env send all {len(scopes)} scopes to the ONE project of that "
            "key; give each scope its own key with --servers FILE (or use --scope-by single)"
        )
    failures: dict[str, str] = {}
    failed_checks: dict[str, list[str]] = {}
    bars = progress_factory(args)
    for i, scope in enumerate(scopes, start=1):
        say(f"[{i}/{len(scopes)}] {scope}: messages -> patterns -> scores -> Engramia")
        with progress_bars(bars):
            result = execute(
                instance, scope_job.name, config, partition_key=scope, tags=scope_run_tags(scope)
            )
        if not result.success:
            failures[scope] = first_error(result)
            say(f"    FAILED: {failures[scope]}")
        if bad := failed_check_names(result):
            failed_checks[scope] = bad
            say(f"    checks not passed: {', '.join(bad)}")
    summary: dict[str, Any] = {"scopes": {}, "failed_scopes": failures, "failed_checks": failed_checks}
    for scope in scopes:
        summary["scopes"][scope] = scope_summary(settings, scope)
    summary["unscoped_quarantined"] = unscoped_quarantined(settings)
    summary["data_dir"] = str(settings.layout.root)
    summary["engramia_store"] = (
        str(destination.store(settings.layout)) if args.destination == "embedded" else None
    )
    summary["destination"] = args.destination
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print_table(summary)
    hard_failures = {s: c for s, c in failed_checks.items() if any("(ERROR)" in x for x in c)}
    return 1 if failures or hard_failures else 0


def add_run_parser(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser(
        "run",
        help="ingest dumps and load every scope into Engramia",
        description="Ingest dumps and load every scope into Engramia.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_run_arguments(r)
    r.set_defaults(func=run)


def add_run_arguments(r: argparse.ArgumentParser) -> None:
    """The options of ``run``; ``plan`` takes the same command line and tells what it would do."""
    r.add_argument("--input", type=Path, required=True, help="a dump file or a folder of dumps")
    r.add_argument("--data-dir", type=Path, default=Path("data"))
    r.add_argument("--scope-by", choices=["assistant", "tenant", "single"], default="assistant")
    r.add_argument("--tenant", default="default", help="tenant name (scope-by assistant|single)")
    r.add_argument("--project", default="default", help="project name (scope-by tenant|single)")
    r.add_argument("--tenant-map", type=Path, help="CSV/Parquet thread_id,tenant_id (scope-by tenant)")
    r.add_argument("--feedback", type=Path, help="CSV/Parquet of feedback keyed by message_id or thread_id")
    r.add_argument(
        "--rating-min", type=float, default=1.0, help="lowest value of the feedback file's rating scale"
    )
    r.add_argument(
        "--rating-max", type=float, default=5.0, help="highest value of the feedback file's rating scale"
    )
    r.add_argument(
        "--conflicts",
        choices=CONFLICT_POLICIES,
        default="first",
        help="which copy of a message_id with different content wins: the first staged, or the latest "
        "(a corrected re-export; the copy it replaces is quarantined as superseded)",
    )
    r.add_argument("--pairing", choices=["merge", "strict"], default="merge")
    r.add_argument("--task-max-chars", type=int, default=2_000)
    r.add_argument("--code-max-chars", type=int, default=8_000)
    r.add_argument("--destination", choices=["embedded", "rest-learn", "rest-import"], default="embedded")
    r.add_argument("--store", type=Path, help="embedded Engramia store folder (default <data-dir>/engramia)")
    r.add_argument("--json", action="store_true", help="print the per-scope summary as JSON")
    r.add_argument("--verbose", action="store_true", help="progress on stderr even with --json")
    r.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
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
