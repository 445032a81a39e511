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
from assets.cli.destination import destination_from_args
from assets.cli.formatting import DefaultsHelpFormatter
from assets.cli.guard import FolderBusy, Interrupts, folder_lock
from assets.cli.instance import (
    open_instance,
    run_config,
)
from assets.cli.remote import run_on_object_storage, uses_object_storage
from assets.cli.run_args import add_run_arguments
from assets.cli.scope_pool import ScopeOutcome, ScopePool, SummaryOf
from assets.cli.scoring_args import scoring_settings
from assets.cli.summary import (
    damaged_files_note,
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
from assets.destination import LOAD_SKIPPED_REASON, EngramiaDestination
from assets.resources import BackfillSettings
from pipelines.ingest.catalog import read_manifest, read_scopes
from pipelines.objectstore.location import absolute

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUSY, EXIT_INTERRUPTED = 0, 1, 2, 75, 130


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


def refuse(args: argparse.Namespace, failures: list[str], code: int = EXIT_USAGE) -> int:
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
        return run_on_object_storage(args, _run_local, refuse, _emit)
    return _run_local(args)


def _run_local(args: argparse.Namespace) -> int:
    problems = run_problems(args)
    destination = None
    try:
        destination = destination_from_args(args)
    except ValueError as exc:
        problems.append(str(exc))
    if problems or destination is None:
        return refuse(args, problems)
    interrupts = Interrupts()
    try:
        with interrupts.installed(), folder_lock(Path(args.data_dir)):
            return _backfill(args, _settings(args), destination)
    except FolderBusy as exc:
        return refuse(args, [f"--data-dir {exc}: wait for that run, or use another --data-dir"], EXIT_BUSY)
    except KeyboardInterrupt:
        return refuse(
            args, ["interrupted before any scope ran: run the same command again"], EXIT_INTERRUPTED
        )
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        return refuse(args, [f"{type(exc).__name__}: {exc} (--debug shows where)"], EXIT_FAILED)


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
            try:
                close_abandoned_runs_after(instance[0], say)
            finally:
                # Its kept SQLite connections closed after the workers' (the last to close folds the
                # write-ahead log into the database): the folder is left as Dagster's own storage leaves it.
                instance[0].dispose()


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
        return refuse(args, ["interrupted while ingesting: run the same command again"], EXIT_INTERRUPTED)
    if not ingest.success:
        return refuse(args, [f"ingest failed: {ingest.error}"], EXIT_FAILED)
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
            failed_scopes[scope] = (outcome.error or "run failed") + damaged_files_note(layout, scope)
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
    figures = {
        scope: current[scope]
        if scope in current
        else read_back.get(scope) or how[scope].read(scope, run_ids.get(scope))
        for scope in scopes
    }
    unreadable = {s: v["figures_unreadable"] for s, v in figures.items() if v.get("figures_unreadable")}
    for scope, why in unreadable.items():
        # A scope whose run failed has said so already, naming its damaged files.
        if scope not in failed_scopes:
            failures.append(f"scope {scope}: its figures could not be read back: {why}")
            say(f"    FAILED: {failures[-1]}")
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
        "scopes": figures,
        "unscoped_quarantined": unscoped_quarantined(layout),
        "unscoped_quarantine_reasons": quarantine_reasons(layout, None),
        # An s3:// data directory is named as given; the run worked in its local working copy.
        "data_dir": getattr(args, "data_dir_url", None) or str(layout.root),
        "engramia_store": str(destination.store(layout)) if destination.mode == "embedded" else None,
        "destination": args.destination,
        "load_skipped": skipped,
    }
    left = {*failed_scopes, *failed_checks, *stopped, *unreadable}
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
