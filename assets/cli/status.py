"""``assistants-backfill status``: where each scope of a data directory stands, read-only.

It imports neither Dagster nor the Engramia package and writes nothing, so it answers in about a second
whatever the size of the data directory and can be run beside a run that is writing it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from assets.cli.formatting import DefaultsHelpFormatter, parse_args
from pipelines.quality.status import BackfillStatus, NothingStaged, ScopeStatus, backfill_status
from pipelines.tables import DEFAULT_DATA_DIR

COLUMNS = (
    "lines_in",
    "messages",
    "quarantined",
    "repeats",
    "patterns",
    "unpaired",
    "kept",
    "duplicates",
    "filtered",
    "loaded",
    "pending_dumps",
    "pending_load",
)


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC") if at else "never"


def _state(s: ScopeStatus) -> str:
    if not s.lines_reconcile:
        return "LINES DO NOT ADD UP"
    return "up to date" if s.up_to_date else "pending"


def _row(s: ScopeStatus) -> dict[str, Any]:
    last = s.last_destination()
    return {
        "scope": s.scope,
        "lines_in": s.lines_in,
        "messages": s.messages,
        "quarantined": s.quarantined,
        "repeats": s.repeats,
        "patterns": s.patterns,
        "unpaired": s.unpaired,
        "kept": s.kept,
        "duplicates": s.duplicates,
        "filtered": s.filtered,
        "loaded": last.loaded if last else 0,
        "pending_dumps": len(s.pending_dumps),
        "pending_load": s.pending_load,
        "last_run": _when(s.last_run_at),
        "state": _state(s),
    }


NUMBER = re.compile(r"~?[\d,.]+")


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain aligned table: numbers (``~`` marks an estimate) right-aligned, text left-aligned."""
    if not rows:
        return ""
    names = list(rows[0])
    width = {n: max(len(n), *(len(str(r[n])) for r in rows)) for n in names}

    def cell(name: str, value: Any, header: bool) -> str:
        text = str(value)
        numeric = not header and (isinstance(value, int | float) or NUMBER.fullmatch(text) is not None)
        return text.rjust(width[name]) if numeric else text.ljust(width[name])

    def line(values: dict[str, Any], header: bool = False) -> str:
        return "  ".join(cell(n, values[n], header) for n in names).rstrip()

    return "\n".join([line({n: n for n in names}, header=True), *(line(r) for r in rows)])


def print_status(status: BackfillStatus) -> None:
    print(
        f"{status.data_dir}: {status.dumps} dumps ingested, {status.lines:,} lines "
        f"({status.unscoped_quarantined:,} quarantined without a scope); last ingest "
        f"{_when(status.last_ingest_at)}, last run {_when(status.last_run_at)}"
    )
    print(format_table([_row(s) for s in status.scopes]))
    print("loaded per destination (from the ledger):")
    for s in status.scopes:
        if not s.destinations and s.kept:
            print(f"  {s.scope}: not loaded anywhere yet ({s.kept:,} kept patterns to load)")
        for d in s.destinations:
            extra = "".join(
                f", {name} {n:,}"
                for name, n in (
                    ("to retract", d.to_retract),
                    ("rejected", d.rejected),
                    ("not stored", d.not_stored),
                    ("awaiting an answer", d.uncertain),
                )
                if n
            )
            print(
                f"  {s.scope} -> {d.destination}: loaded {d.loaded:,}, pending {d.pending:,}{extra}; "
                f"last {_when(d.last_at)}"
            )
        if s.last_load and s.last_load.error:
            print(f"  {s.scope}: the last load failed: {s.last_load.error}")
        for stage, items in (("messages", s.pending_dumps), ("pairing", s.unpaired_dumps)):
            if items:
                print(f"  {s.scope}: {len(items)} dumps not taken in by {stage} yet: {', '.join(items)}")
        if not s.scored_in_step and s.patterns:
            print(f"  {s.scope}: the scored table is older than the pairing (kept is as of the last scoring)")
    if status.landing_pending:
        total = sum(d.size for d in status.landing_pending)
        print(f"landing: {len(status.landing_pending)} dumps not ingested yet ({total:,} bytes):")
        for d in status.landing_pending:
            print(f"  {d.file} ({d.size:,} bytes)")


def _refuse(args: argparse.Namespace, failure: str) -> int:
    if args.json:
        print(json.dumps({"ok": False, "exit_code": 2, "failures": [failure]}, indent=2))
    else:
        print(f"error: {failure}", file=sys.stderr)
    return 2


def status(args: argparse.Namespace) -> int:
    if str(args.data_dir).startswith("s3:"):
        return _refuse(
            args,
            "--data-dir: status reads a local data directory; for an s3:// one give a run's working copy, "
            "<work-dir>/data (README: Object storage)",
        )
    try:
        result = backfill_status(args.data_dir)
    except NothingStaged as exc:
        first = f"assistants-backfill run --input DUMPS --data-dir {args.data_dir}"
        return _refuse(args, f"{exc}; run `{first}` first")
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, default=str))
    else:
        print_status(result)
    return 0


def add_status_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "status",
        help="what each scope has staged, paired, kept, loaded and still pending (read-only)",
        description=(
            "Per scope: lines in, messages, quarantined, patterns, unpaired, kept, loaded per destination, "
            "what is still pending and when it last ran. Reads file footers and ids only; writes nothing."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="the data folder of the runs")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(func=status)
    return p


def main(argv: list[str]) -> int:
    """``status`` on its own parser: the full command line would import every subcommand (and Dagster)."""
    parser = argparse.ArgumentParser(prog="assistants-backfill")
    add_status_parser(parser.add_subparsers(dest="command", required=True))
    args = parse_args(parser, ["status", *argv])
    return args.func(args)
