"""``assistants-backfill run``: the ingest job, then the scope job once per scope."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from assets.cli.destination import destination_from_args, progress_factory
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
        pairing=args.pairing,
        task_max_chars=args.task_max_chars,
        code_max_chars=args.code_max_chars,
        score_strategy="feedback" if args.feedback else "neutral",
        feedback=str(args.feedback) if args.feedback else None,
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
