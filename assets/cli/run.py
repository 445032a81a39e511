"""``assistants-backfill run``: the ingest job, then the scope job once per scope.

What the operator is told is the truth: every option is checked before any work (one line per problem),
the figures are this run's own, and the exit code is one a scheduler can trust:

- 0: every scope loaded (``--destination none``: transformed, nothing loaded by design) and every
  error-severity check passed;
- 1: a scope failed, a check failed, a dump was entirely quarantined, nothing was staged from a
  non-empty input, or the run's quarantined share passed ``--max-quarantine-pct``;
- 2: an option is wrong (nothing was done);
- 75: another run holds the data folder (nothing was done; try again later);
- 130: interrupted (Ctrl-C or SIGTERM): the files are consistent and the same command resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from assets.abandoned_runs import close_abandoned_runs, close_abandoned_runs_after
from assets.cli.destination import add_rest_options, destination_from_args
from assets.cli.formatting import DefaultsHelpFormatter
from assets.cli.guard import FolderBusy, Interrupts, folder_lock
from assets.cli.instance import (
    open_instance,
    run_config,
)
from assets.cli.remote import add_s3_arguments, location_arg, run_on_object_storage, uses_object_storage
from assets.cli.scope_pool import ScopeOutcome, ScopePool, SummaryOf
from assets.cli.scoring_args import add_scoring_arguments, scoring_settings
from assets.cli.summary import (
    dump_failures,
    dump_figures,
    print_table,
    quarantine_reasons,
    unscoped_quarantined,
)
from assets.cli.uptodate import (
    key_warnings,
    nothing_new,
    record_complete,
    up_to_date,
    up_to_date_summary,
)
from assets.cli.validate import run_problems
from assets.destination import LOAD_SKIPPED_REASON, NO_DESTINATION, EngramiaDestination
from assets.resources import BackfillSettings
from pipelines.ingest.catalog import read_manifest, read_scopes
from pipelines.ingest.formats import FORMATS
from pipelines.ingest.messages import CONFLICT_POLICIES
from pipelines.load.rest.options import MODES
from pipelines.objectstore.location import absolute
from pipelines.pairing.pairs import Pairing
from pipelines.scopes import ScopeBy
from pipelines.tables import DEFAULT_DATA_DIR

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUSY, EXIT_INTERRUPTED = 0, 1, 2, 75, 130
DEFAULT_MAX_QUARANTINE_PCT = 10.0


def _emit(args: argparse.Namespace, report: dict[str, Any]) -> None:
    if (held := getattr(args, "held_report", None)) is not None:
        # A run on object storage reports once, after publishing, which can still fail it.
        held.append(report)
        return
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    elif "scopes" in report:
        print_table(report)
    else:
        for failure in report["failures"]:
            print(f"error: {failure}", file=sys.stderr)


def _refuse(args: argparse.Namespace, failures: list[str], code: int = EXIT_USAGE) -> int:
    _emit(args, {"ok": False, "exit_code": code, "failures": failures})
    return code


def _settings(args: argparse.Namespace) -> BackfillSettings:
    return BackfillSettings(
        data_dir=absolute(args.data_dir),
        landing=absolute(args.input),
        scope_by=args.scope_by,
        tenant=args.tenant,
        project=args.project,
        tenant_map=absolute(args.tenant_map) if args.tenant_map else None,
        conflicts=args.conflicts,
        assistant_name=args.assistant_name,
        pairing=args.pairing,
        task_max_chars=args.task_max_chars,
        code_max_chars=args.code_max_chars,
        score_strategy="feedback" if args.feedback else "neutral",
        feedback=absolute(args.feedback) if args.feedback else None,
        rating_min=args.rating_min,
        rating_max=args.rating_max,
        **scoring_settings(args),
        input_format=args.format,
        # The dumps were named explicitly: read them as they are now.
        settle_seconds=0,
    )


def run(args: argparse.Namespace) -> int:
    if uses_object_storage(args):
        return run_on_object_storage(args, _run_local, _refuse, _emit)
    return _run_local(args)


def _run_local(args: argparse.Namespace) -> int:
    problems = run_problems(args)
    destination = None
    try:
        destination = destination_from_args(args)
    except ValueError as exc:
        problems.append(str(exc))
    if problems or destination is None:
        return _refuse(args, problems)
    interrupts = Interrupts()
    try:
        with interrupts.installed(), folder_lock(Path(args.data_dir)):
            return _backfill(args, _settings(args), destination)
    except FolderBusy as exc:
        return _refuse(args, [f"--data-dir {exc}: wait for that run, or use another --data-dir"], EXIT_BUSY)
    except KeyboardInterrupt:
        return _refuse(
            args, ["interrupted before any scope ran: run the same command again"], EXIT_INTERRUPTED
        )
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        return _refuse(args, [f"{type(exc).__name__}: {exc} (--debug shows where)"], EXIT_FAILED)


def _backfill(
    args: argparse.Namespace,
    settings: BackfillSettings,
    destination: EngramiaDestination,
) -> int:
    layout = settings.layout

    def say(msg: str) -> None:
        if not args.no_progress or args.verbose:
            print(msg, file=sys.stderr, flush=True)

    if (settled := nothing_new(settings, destination)) is not None:
        shown = getattr(args, "input_url", args.input)
        say(f"nothing new in {shown}: every scope is as its last complete run left it")
        summary = up_to_date_summary(layout, destination, args.destination, settled)
        _emit(args, summary)
        return summary["exit_code"]
    config = run_config(settings, destination, log_level="INFO" if args.debug else "CRITICAL")
    # Made by the CLI before the workers open it (two processes creating a new instance's tables would
    # race), while they start.
    instance: list[Any] = []

    def prepare() -> None:
        instance.append(open_instance(Path(args.data_dir)))
        # Runs an earlier CLI's killed process left running would hold their scopes and write slots.
        close_abandoned_runs(instance[0], say)

    try:
        with ScopePool(str(args.data_dir), config, not args.no_progress, prepare=prepare) as pool:
            return _ingest_and_scopes(args, settings, destination, config, pool, say)
    finally:
        # A worker killed after an interrupt it did not stop for leaves its run open: closed now.
        if instance:
            close_abandoned_runs_after(instance[0], say)


def _ingest_and_scopes(
    args: argparse.Namespace,
    settings: BackfillSettings,
    destination: EngramiaDestination,
    config: dict[str, Any],
    pool: ScopePool,
    say: Callable[[str], None],
) -> int:
    layout = settings.layout
    known_dumps = read_manifest(layout)["dump_id"].to_list()
    say(f"ingesting {getattr(args, 'input_url', args.input)} into {layout.root}")
    ingest = pool.ingest()
    if ingest.stopped:
        return _refuse(args, ["interrupted while ingesting: run the same command again"], EXIT_INTERRUPTED)
    if not ingest.success:
        return _refuse(args, [f"ingest failed: {ingest.error}"], EXIT_FAILED)
    new_dumps = read_manifest(layout).filter(~pl.col("dump_id").is_in(known_dumps))
    failures = dump_failures(layout, new_dumps, args.max_quarantine_pct)
    scopes = read_scopes(layout)["scope"].to_list()
    warnings = key_warnings(destination, scopes)
    for warning in warnings:
        say(f"warning: {warning}")
    warnings += ingest.warnings
    run_ids: dict[str, str] = {}
    read_back: dict[str, dict[str, Any]] = {}  # each scope's figures, as its worker read them after its run
    failed_scopes: dict[str, str] = {}
    failed_checks: dict[str, list[str]] = {}
    stopped: list[str] = []
    current = up_to_date(settings, destination, scopes)  # scopes the new dumps did not touch
    stages = (
        "messages -> patterns -> scores -> Engramia"
        if destination.loads
        else ("messages -> patterns -> scores (destination none: nothing is loaded)")
    )
    say(f"{len(scopes) - len(current)} of {len(scopes)} scopes to run: {stages}, {pool.workers} at a time")

    def done(outcome: ScopeOutcome) -> None:
        scope = outcome.scope
        if outcome.run_id:
            run_ids[scope] = outcome.run_id
        if outcome.summary is not None:
            read_back[scope] = outcome.summary
        ended = "done" if outcome.success else "stopped" if outcome.stopped else "failed"
        say(f"[{len(run_ids)}/{len(scopes)}] {scope}: {ended} in {outcome.seconds:.1f} s")
        if outcome.stopped:
            stopped.append(scope)
            return
        if not outcome.success:
            failed_scopes[scope] = outcome.error or "run failed"
            failures.append(f"scope {scope}: {failed_scopes[scope]}")
            say(f"    FAILED: {failures[-1]}")
        warnings.extend(outcome.warnings)
        if outcome.failed_checks:
            failed_checks[scope] = outcome.failed_checks
        for check in outcome.failed_checks:
            (failures if check.endswith("(ERROR)") else warnings).append(
                f"scope {scope}: check {check} failed"
            )
            say(f"    check not passed: {check}")

    described = destination.describe(layout)
    skipped = None if destination.loads else LOAD_SKIPPED_REASON
    root = str(layout.root)
    how = {
        scope: SummaryOf(root, destination.describe(layout, scope), None)
        if destination.is_rest
        else SummaryOf(root, described, skipped)
        for scope in scopes
        if scope not in current
    }
    interrupted = not pool.run([s for s in scopes if s not in current], done, how) or bool(stopped)
    if interrupted:
        finished = len(run_ids) - len(failed_scopes) - len(stopped)
        failures.append(
            f"interrupted with {finished} of {len(scopes)} scopes done: run the same command again to "
            "resume; nothing loaded is sent twice"
        )
        say(f"    {failures[-1]}")
    summary: dict[str, Any] = {
        "ok": not failures,
        "exit_code": EXIT_INTERRUPTED if interrupted else EXIT_FAILED if failures else EXIT_OK,
        "failures": failures,
        "warnings": warnings,
        "failed_scopes": failed_scopes,
        "failed_checks": failed_checks,
        "ingest_run_id": ingest.run_id,
        "this_run": {
            "dumps": new_dumps.height,
            "lines": int(new_dumps["lines"].sum() or 0),
            "staged": int(new_dumps["staged"].sum() or 0),
            "quarantined": int(new_dumps["quarantined"].sum() or 0),
            "files": dump_figures(new_dumps),
        },
        "scopes": {
            scope: current[scope]
            if scope in current
            else read_back.get(scope) or how[scope].read(scope, run_ids.get(scope))
            for scope in scopes
        },
        "unscoped_quarantined": unscoped_quarantined(layout),
        "unscoped_quarantine_reasons": quarantine_reasons(layout, None),
        # An s3:// data directory is named as given; the run worked in its local working copy.
        "data_dir": getattr(args, "data_dir_url", None) or str(layout.root),
        "engramia_store": str(destination.store(layout)) if destination.mode == "embedded" else None,
        "destination": args.destination,
        "load_skipped": skipped,
    }
    left = {*failed_scopes, *failed_checks, *stopped}
    clean = {s for s in scopes if s in run_ids and s not in left}
    record_complete(settings, destination, summary["scopes"], clean)
    _emit(args, summary)
    return summary["exit_code"]


def add_run_parser(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser(
        "run",
        help="ingest dumps and load every scope into Engramia",
        description="Ingest dumps and load every scope into Engramia.",
        formatter_class=DefaultsHelpFormatter,
    )
    add_run_arguments(r)
    r.set_defaults(func=run)


def add_run_arguments(r: argparse.ArgumentParser) -> None:
    """The options of ``run``; ``plan`` takes the same command line and tells what it would do."""
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
