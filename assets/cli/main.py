"""``assistants-backfill``: backfill OpenAI Assistants thread exports into Engramia, without the UI.

A run is the project's named jobs, ``ingest_job`` and then ``scope_job`` once per scope, recorded in the
Dagster instance under ``<data-dir>/dagster_home`` (unless DAGSTER_HOME is set): they show up in the UI's
run history next to the sensor's runs, with their configuration, and can be re-executed from there.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import NoReturn

from assets.cli import status
from assets.cli.exit import run_and_exit
from assets.cli.formatting import parse_args
from assets.cli.worker_start import start_server_early
from pipelines.ingest.catalog import pending_dumps
from pipelines.objectstore.location import is_remote
from pipelines.tables import DEFAULT_DATA_DIR, DataLayout
from pipelines.tools import synth


def _version() -> str:
    try:
        return version("assistants-backfill")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="assistants-backfill", description=__doc__.splitlines()[0].strip("`").replace("``", "")
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    # Imported here, not at the top: they import Dagster (seconds), which ``status`` does not wait for.
    from assets.cli.plan import add_plan_parser
    from assets.cli.rollback import add_rollback_parser
    from assets.cli.run import add_run_parser

    sub = parser.add_subparsers(dest="command", required=True)
    add_run_parser(sub)
    add_plan_parser(sub)
    add_rollback_parser(sub)
    status.add_status_parser(sub)
    # Listed for the overview; its arguments are synth's own (main() hands them over untouched).
    sub.add_parser("synth", help="generate a synthetic export (synth --help for its options)", add_help=False)
    return parser


def _will_ingest(argv: list[str]) -> bool:
    """Whether ``run`` with these arguments certainly has dumps to ingest (a local data folder with no
    manifest, or a dump in ``--input`` not in it), judged from the files alone before Dagster is imported.
    Only then is the workers' server started early: a run with nothing new would spend a core on its
    imports for nothing (0.35 s more for the whole 1.4 s command at 1M messages). Anything unclear
    (object storage, an argument the real parser will refuse) is no: the server then starts when the
    workers are needed."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--input")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    parser.add_argument("-h", "--help", action="store_true")
    try:
        known, _ = parser.parse_known_args(argv)
    except SystemExit:
        return False
    if known.help or not known.input or is_remote(known.input) or is_remote(known.data_dir):
        return False
    layout = DataLayout.at(Path(known.data_dir))
    try:
        return not layout.manifest.exists() or bool(pending_dumps(layout, Path(known.input)))
    except Exception:
        return False


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["synth"]:
        sys.exit(synth.main(argv[1:], prog="assistants-backfill synth") or 0)
    if argv[:1] == ["status"]:
        sys.exit(status.main(argv[1:]))
    if argv[:1] == ["run"] and _will_ingest(argv[1:]):
        # Before Dagster's import below: the workers' server imports it meanwhile on the other core.
        start_server_early()
    args = parse_args(build_parser(), argv)
    sys.exit(args.func(args))


def entry() -> NoReturn:
    """The ``assistants-backfill`` command: :func:`main`, then the process ends (:mod:`assets.cli.exit`)."""
    run_and_exit(main)
