"""``assistants-backfill``: run the whole asset graph in-process, without the UI.

A run is the project's named jobs, ``ingest_job`` and then ``scope_job`` once per scope, recorded in the
Dagster instance under ``<data-dir>/dagster_home`` (unless DAGSTER_HOME is set): they show up in the UI's
run history next to the sensor's runs, with their configuration, and can be re-executed from there.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from assets.cli.destination import add_rest_options
from assets.cli.rollback import rollback
from assets.cli.run import run
from pipelines.tools import synth


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assistants-backfill", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="ingest dumps and load every scope into Engramia")
    r.add_argument("--input", type=Path, required=True, help="a dump file or a folder of dumps")
    r.add_argument("--data-dir", type=Path, default=Path("data"))
    r.add_argument("--scope-by", choices=["assistant", "tenant", "single"], default="assistant")
    r.add_argument("--tenant", default="default", help="tenant name (scope-by assistant|single)")
    r.add_argument("--project", default="default", help="project name (scope-by tenant|single)")
    r.add_argument("--tenant-map", type=Path, help="CSV/Parquet thread_id,tenant_id (scope-by tenant)")
    r.add_argument("--feedback", type=Path, help="CSV/Parquet of feedback keyed by message_id or thread_id")
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
    r.set_defaults(func=run)
    b = sub.add_parser("rollback", help="delete exactly the patterns this pipeline loaded into a scope")
    b.add_argument("--data-dir", type=Path, default=Path("data"))
    b.add_argument("--scope", required=True, help="the scope key (as in staged/*/scope=<key>)")
    b.add_argument(
        "--embedded", action="store_true", help="the embedded store (default without REST options)"
    )
    b.add_argument("--store", type=Path, help="embedded Engramia store folder (default <data-dir>/engramia)")
    b.add_argument("--dry-run", action="store_true", help="list what would be deleted; delete nothing")
    b.add_argument("--json", action="store_true", help="print the report as JSON")
    add_rest_options(b)
    b.set_defaults(func=rollback)
    s = sub.add_parser("synth", help="generate a synthetic export")
    s.add_argument("rest", nargs=argparse.REMAINDER)
    s.set_defaults(func=lambda a: synth.main(a.rest) or 0)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))
