"""``assistants-backfill plan``: what ``run`` with the same options would do, doing none of it.

It takes exactly ``run``'s command line (the options are defined once, in :mod:`assets.cli.run_args`), writes
nothing (no staged file, ledger row, store folder or Dagster run) and asks a REST server only for reads.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from assets.cli.destination import destination_from_args
from assets.cli.formatting import DefaultsHelpFormatter
from assets.cli.run import refuse
from assets.cli.run_args import add_run_arguments
from assets.cli.scoring_args import judge_from_args, judge_plan_lines
from assets.cli.status import format_table
from assets.cli.validate import run_problems
from pipelines.load.rest.options import MODES as REST_MODES
from pipelines.objectstore.location import is_remote
from pipelines.quality.capacity import EmbeddedTarget, RestTarget
from pipelines.quality.run_plan import RunPlan, ScopePlan, plan_run
from pipelines.scopes import ScopeBy, ScopeMapping
from pipelines.tables import DataLayout


def _figure(s: ScopePlan, name: str, value: Any) -> Any:
    if value is None:
        return "-"
    shown = f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"
    return f"~{shown}" if name in s.estimated else shown


def _duration(s: ScopePlan, minutes: float | None) -> str:
    """The time the client's rate limit implies, in the unit that reads best."""
    if minutes is None:
        return "-"
    mark = "~" if "capacity.minutes" in s.estimated else ""
    if minutes < 2:
        return f"{mark}{minutes * 60:.0f}s"
    return f"{mark}{minutes:.1f} min" if minutes < 120 else f"{mark}{minutes / 60:.1f} h"


def _row(s: ScopePlan, rest: bool) -> dict[str, Any]:
    c = s.capacity
    row: dict[str, Any] = {
        "scope": s.scope + (" (new)" if s.new else ""),
        "lines_to_ingest": _figure(s, "lines_to_ingest", s.lines_to_ingest),
        "rows_to_stage": f"{s.rows_to_stage:,}",
        "new_patterns": _figure(s, "new_patterns", s.new_patterns),
        "kept": _figure(s, "kept", s.kept),
        "loaded": f"{s.already_loaded:,}",
        "to_load": _figure(s, "to_load", s.to_load),
        "to_retract": f"{s.to_retract:,}",
        "to_update": f"{s.to_update:,}",
        "count_now": _figure(s, "capacity.pattern_count", c.pattern_count),
        "after": _figure(s, "capacity.projected", c.projected),
        "scope_cap": f"{c.scope_cap:,}",
    }
    if rest:
        row["quota"] = _figure(s, "capacity.quota", c.quota)
        row["requests"] = _figure(s, "capacity.requests", c.requests)
        row["time"] = _duration(s, c.minutes)
    row["fits"] = "?" if c.fits is None else "yes" if c.fits else "NO"
    return row


def print_plan(plan: RunPlan) -> None:
    rest = plan.destination in REST_MODES
    print(f"plan: {plan.input} into {plan.data_dir}, destination {plan.destination} (nothing was done)")
    total = sum(d.size for d in plan.pending_dumps)
    lines = sum(d.lines for d in plan.pending_dumps)
    print(
        f"dumps to ingest: {len(plan.pending_dumps)} ({total:,} bytes, {lines:,} lines); "
        f"already ingested: {plan.ingested_dumps}"
    )
    for d in plan.pending_dumps:
        scopes = ", ".join(f"{k} ~{n:,}" for k, n in d.lines_per_scope.items()) or "no scope"
        print(f"  {d.file}: {d.size:,} bytes, {d.lines:,} lines ({scopes})")
    if plan.unscoped_lines:
        print(f"  ~{plan.unscoped_lines:,} lines reach no scope (they would be quarantined)")
    print(format_table([_row(s, rest) for s in plan.scopes]))
    if any(s.estimated for s in plan.scopes):
        print("~ marks an estimate (figures of dumps not staged yet)")
    for s in plan.scopes:
        c = s.capacity
        if c.error:
            print(f"  {s.scope}: {c.destination}: {c.error}")
        elif rest:
            pace = f"{c.requests_per_minute:g}/min" if c.requests_per_minute else "no client limit"
            print(
                f"  {s.scope} -> {c.destination} ({c.server_version}): quota from {c.quota_source}; "
                f"{c.requests:,} requests at {pace}"
            )
        if c.fits is False:
            print(
                f"  {s.scope}: would NOT fit: {c.projected:,} patterns after the run, over the quota or cap"
            )
    for line in judge_plan_lines(plan.scopes):
        print(line)
    for note in plan.notes:
        print(f"note: {note}")


def plan(args: argparse.Namespace) -> int:
    # Refused as run refuses, in the same words and shape (--json too): plan takes run's options, and a
    # plan for options run would refuse would promise a run that never happens.
    if is_remote(args.input) or is_remote(args.data_dir):
        return refuse(
            args,
            ["plan reads local folders only; for s3:// locations use run (or plan against a local copy)"],
        )
    if not Path(args.input).exists():
        return refuse(args, [f"input not found: {args.input}"])
    problems = run_problems(args)  # reads only, as plan must
    destination = None
    try:
        destination = destination_from_args(args)
    except ValueError as exc:
        problems.append(str(exc))
    if problems or destination is None:
        return refuse(args, problems)
    mapping = ScopeMapping(
        scope_by=ScopeBy(args.scope_by),
        tenant=args.tenant,
        project=args.project,
        tenant_map=Path(args.tenant_map) if args.tenant_map else None,
    )
    layout = DataLayout.at(args.data_dir)
    target: EmbeddedTarget | RestTarget = (
        RestTarget(destination.servers(), destination.rest_options())
        if destination.is_rest
        else EmbeddedTarget(destination.store(layout))
    )
    result = plan_run(
        args.data_dir, Path(args.input), mapping, target, judge=judge_from_args(args), fmt=args.format
    )
    if not destination.loads:
        result.destination = args.destination
        result.notes.append(
            f"destination none (transform only): a run would load nothing; the to_load and capacity "
            f"figures are those of the embedded store {destination.store(layout)}, for a later run with it"
        )
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, default=str))
    else:
        print_plan(result)
    return 0


def add_plan_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="what run would ingest, pair, keep and load per scope, and whether it fits (does nothing)",
        description=(
            "What `run` with the same options would do: dumps to ingest, patterns to pair, keep and load "
            "per scope, and the destination's capacity (for REST: pattern_count, quota, rate limit and "
            "the time it implies). Writes nothing; a REST server only receives reads."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    add_run_arguments(p)
    p.set_defaults(func=plan)
