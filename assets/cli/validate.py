"""Every ``run`` option checked before any work: one line per problem, naming the option, its value and
what to do. Nothing here writes.

Each input file not ingested yet must be in a shape some reader knows (its first 64 KB are read, nothing
more), unless ``--format`` names the shape for all of them.

A change of scope mapping, pairing or truncation on a data folder that already holds staged data is
refused here too: it would re-pair every thread and retract loaded patterns, so the user says so with
``--allow-option-change`` (a scope mapping cannot change within one data folder at all).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import duckdb
import polars as pl

from assets.cli.destination import rest_option_problems
from assets.cli.scoring_args import scoring_problems
from pipelines.folder_options import option_changes
from pipelines.ingest.catalog import pending_dumps
from pipelines.ingest.dumps import DUMP_SUFFIXES, discover_dumps
from pipelines.ingest.formats import UnknownFormat, detect_format
from pipelines.load.limits import CODE_MAX_CHARS, TASK_MAX_CHARS
from pipelines.load.rest.options import MODES as REST_MODES
from pipelines.pairing.pairs import Pairing, PairingOptions
from pipelines.scopes import ScopeBy, ScopeMapping, load_tenant_map
from pipelines.scoring.feedback import read_feedback
from pipelines.scoring.options import ScoreStrategy, ScoringOptions
from pipelines.tables import DataLayout

TENANT_MAP_COLUMNS = ("thread_id", "tenant_id")


def _input_problems(source: Path, copied: bool = False) -> list[str]:
    if not source.exists():
        return [f"--input {source}: not found; give a dump file or a folder of dumps"]
    dumps = discover_dumps(source)
    # Scratch copies of an s3:// prefix hold only the objects not ingested yet: none is "nothing new".
    if not dumps and not copied:
        kinds = ", ".join(f"*{s}" for s in DUMP_SUFFIXES)
        return [f"--input {source}: no dump ({kinds}) in this folder"]
    return [f"--input {d.path}: the file is empty" for d in dumps if d.size == 0]


def _format_problems(args: argparse.Namespace) -> list[str]:
    """One line per pending input file whose format cannot be detected (or that cannot be read)."""
    if getattr(args, "format", None):
        return []
    problems = []
    for dump in pending_dumps(DataLayout.at(args.data_dir), args.input):
        if dump.size == 0:
            continue  # reported as empty
        try:
            detect_format(dump.path, dump.member)
        except UnknownFormat as exc:
            problems.append(f"--input {exc}")
        except Exception as exc:  # a damaged archive or compressed file
            problems.append(f"--input {dump.label}: cannot be read ({type(exc).__name__}: {exc})")
    return problems


def _columns(path: Path) -> list[str]:
    if path.suffix == ".parquet":
        return list(pl.read_parquet_schema(path))
    return pl.read_csv(path, n_rows=0, infer_schema=False).columns


def _tenant_map_problems(args: argparse.Namespace) -> list[str]:
    tenant_map = args.tenant_map
    if args.scope_by == ScopeBy.TENANT and tenant_map is None:
        return ["--scope-by tenant: needs --tenant-map FILE (CSV or Parquet: thread_id,tenant_id)"]
    if tenant_map is None:
        return []
    if args.scope_by != ScopeBy.TENANT:
        return [f"--tenant-map {tenant_map}: only used with --scope-by tenant (this run: {args.scope_by})"]
    if not tenant_map.is_file():
        return [f"--tenant-map {tenant_map}: not found"]
    try:
        columns = _columns(tenant_map)
    except Exception as exc:
        return [f"--tenant-map {tenant_map}: not a readable CSV or Parquet file ({exc})"]
    missing = [c for c in TENANT_MAP_COLUMNS if c not in columns]
    if missing:
        return [
            f"--tenant-map {tenant_map}: needs the columns thread_id,tenant_id (found: {', '.join(columns)})"
        ]
    return _tenant_map_content_problems(tenant_map)


def _tenant_map_content_problems(tenant_map: Path) -> list[str]:
    """What ingest's own reader refuses (a thread mapped to two tenants), found before any work. The
    connection is in memory and thrown away: no file is written."""
    con = duckdb.connect(":memory:")
    try:
        load_tenant_map(con, tenant_map)
    except (ValueError, duckdb.Error) as exc:
        # The reader's messages start with the file's path already.
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        prefix = f"{tenant_map}: "
        return [f"--tenant-map {tenant_map}: {text.removeprefix(prefix)}"]
    finally:
        con.close()
    return []


def _limit_problems(args: argparse.Namespace) -> list[str]:
    problems = []
    for option, value, ceiling in (
        ("--task-max-chars", args.task_max_chars, TASK_MAX_CHARS),
        ("--code-max-chars", args.code_max_chars, CODE_MAX_CHARS),
    ):
        if not 1 <= value <= ceiling:
            problems.append(
                f"{option} {value}: give a number of characters from 1 to {ceiling:,} (Engramia's limit)"
            )
    if not 0 <= args.max_quarantine_pct <= 100:
        problems.append(f"--max-quarantine-pct {args.max_quarantine_pct}: give a percentage from 0 to 100")
    if args.destination in REST_MODES:
        problems += rest_option_problems(args)
    return problems


def _feedback_problems(args: argparse.Namespace) -> list[str]:
    if args.feedback is None:
        return []
    if not args.feedback.is_file():
        return [f"--feedback {args.feedback}: not found"]
    try:
        read_feedback(
            ScoringOptions(
                ScoreStrategy.FEEDBACK,
                args.feedback,
                rating_min=getattr(args, "rating_min", 1.0),
                rating_max=getattr(args, "rating_max", 5.0),
            )
        )
    except Exception as exc:
        # The reader's messages start with the file's path already.
        return [
            f"--feedback {exc}"
            if str(exc).startswith(str(args.feedback))
            else f"--feedback {args.feedback}: {exc}"
        ]
    return []


def _data_dir_problems(args: argparse.Namespace) -> list[str]:
    data_dir: Path = args.data_dir
    if data_dir.exists() and not data_dir.is_dir():
        return [f"--data-dir {data_dir}: exists and is not a folder"]
    existing = next((p for p in [data_dir, *data_dir.resolve().parents] if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK):
        return [f"--data-dir {data_dir}: {existing} is not writable"]
    return []


def _option_change_problems(args: argparse.Namespace) -> list[str]:
    layout = DataLayout.at(args.data_dir)
    if not layout.manifest.exists():
        return []
    mapping = ScopeMapping(ScopeBy(args.scope_by), args.tenant, args.project, args.tenant_map)
    pairing = PairingOptions(
        Pairing(args.pairing), args.task_max_chars, args.code_max_chars, task_context=args.task_context
    )
    problems = []
    for change in option_changes(layout, mapping, pairing):
        if not change.allowed_with_flag:
            problems.append(
                f"{change.option} {change.now}: {layout.root} was staged with {change.was}, and a scope "
                "mapping cannot change within one data folder; repeat the old value or use a fresh --data-dir"
            )
        elif not args.allow_option_change:
            problems.append(
                f"{change.option} {change.now}: {layout.root} was paired with {change.was}; changing it "
                "re-pairs every thread and retracts loaded patterns that change. Repeat the old value, or "
                "pass --allow-option-change"
            )
    return problems


def run_problems(args: argparse.Namespace) -> list[str]:
    """Every problem with the ``run`` options, one line each (empty when the run may start)."""
    problems = _input_problems(args.input, copied=bool(getattr(args, "input_url", None)))
    if not problems:
        problems = _format_problems(args)
    problems += [*_data_dir_problems(args), *option_problems(args)]
    if not problems:
        # Only meaningful once the options themselves are sound.
        problems += _option_change_problems(args)
    return problems


def option_problems(args: argparse.Namespace) -> list[str]:
    """The problems of options that need neither the input nor the data folder: an s3:// run checks
    them before it takes the data folder's lease and pulls its working copy."""
    return [
        *_limit_problems(args),
        *_tenant_map_problems(args),
        *_feedback_problems(args),
        *scoring_problems(args),
    ]
