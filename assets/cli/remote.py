"""``run`` on object storage: ``--input`` and ``--data-dir`` as ``s3://bucket/prefix``.

Order of a run (README: Object storage): the locations are checked with one listing each (a missing
bucket, refused keys or an unreachable endpoint is one line and exit 2, nothing done); the data
directory's writer lease is taken (exit 75 when another run holds it); the data directory is pulled into
the local working copy; the landing prefix's complete dump objects not ingested yet are streamed into
local scratch; the ordinary run works on those local folders; what it wrote is published, the manifest
last, whatever the run's exit code (every file it leaves is consistent); the lease is released.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from assets.cli.destination import destination_from_args
from assets.cli.validate import option_problems
from pipelines.objectstore.lease import LeaseHeld
from pipelines.objectstore.location import is_remote
from pipelines.objectstore.settings import add_s3_options, s3_from_args
from pipelines.objectstore.store import ObjectStoreError
from pipelines.objectstore.working_copy import Locations, WorkingCopy

EXIT_FAILED, EXIT_USAGE, EXIT_BUSY = 1, 2, 75
Refuse = Callable[[argparse.Namespace, list[str], int], int]
Emit = Callable[[argparse.Namespace, dict[str, Any]], None]


def location_arg(value: str) -> Path | str:
    """``--input`` / ``--data-dir``: an ``s3://`` URL stays text (a Path would fold its ``//``)."""
    return value if is_remote(value) else Path(value)


def add_s3_arguments(r: argparse.ArgumentParser) -> None:
    g = r.add_argument_group("object storage (s3:// --input / --data-dir)")
    add_s3_options(g)
    g.add_argument(
        "--work-dir",
        type=Path,
        help="local working copy of an s3:// data directory and scratch for s3:// dumps "
        "(default <system temp>/assistants-backfill/<bucket>/<prefix>)",
    )


def uses_object_storage(args: argparse.Namespace) -> bool:
    return is_remote(args.input) or is_remote(args.data_dir)


def run_on_object_storage(
    args: argparse.Namespace, run_local: Callable[[argparse.Namespace], int], refuse: Refuse, emit: Emit
) -> int:
    data_url, input_url = str(args.data_dir), str(args.input)
    work_dir = str(args.work_dir) if args.work_dir else None
    locations = Locations(data_url, input_url, work_dir, s3_from_args(args), ("--data-dir", "--input"))
    # Options are checked before the lease is taken and the data folder pulled: a typo must not cost a
    # download. What needs the folder itself is checked again on the working copy.
    problems = option_problems(args)
    try:
        destination_from_args(args)
    except ValueError as exc:
        problems.append(str(exc))
    if problems:
        return refuse(args, problems, EXIT_USAGE)
    copy = WorkingCopy(locations)
    try:
        copy.open()
    except (ObjectStoreError, ValueError) as exc:
        return refuse(args, [str(exc)], EXIT_USAGE)
    except LeaseHeld as exc:
        return refuse(
            args, [f"--data-dir {exc}: wait for that run, or remove the lease once it is gone"], EXIT_BUSY
        )
    held: list[dict[str, Any]] = []
    args.held_report = held
    try:
        code = _run_in_copy(args, locations, copy, run_local, refuse)
    finally:
        failure = _close(copy)
        del args.held_report
    report = held[-1] if held else {"ok": code == 0, "exit_code": code, "failures": []}
    if failure:
        # One report: the run's own, failed by its publishing.
        report["failures"] = [
            *report.get("failures", []),
            f"--data-dir {data_url}: publishing the run failed ({failure}): run it again",
        ]
        report["ok"] = False
        code = report["exit_code"] = code or EXIT_FAILED
    elif copy.published:
        _say(args)(
            f"{data_url}: published {copy.published.uploaded} objects, removed {copy.published.deleted}"
        )
    emit(args, report)
    return code


def _run_in_copy(
    args: argparse.Namespace,
    locations: Locations,
    copy: WorkingCopy,
    run_local: Callable[[argparse.Namespace], int],
    refuse: Refuse,
) -> int:
    say = _say(args)
    data_url, input_url = str(args.data_dir), str(args.input)
    if locations.remote_data:
        downloaded = copy.pulled.downloaded if copy.pulled else 0
        say(f"{data_url}: working copy {locations.local_data} ({downloaded} objects downloaded)")
        args.data_dir, args.data_dir_url = locations.local_data, data_url
    if locations.landing_url:
        if not copy.landing_objects:
            return refuse(args, [f"--input {input_url}: no dump object under this prefix"], EXIT_USAGE)
        say(f"{input_url}: {copy.landing_objects} dump objects, {copy.pending_objects} not ingested yet")
        args.input, args.input_url = locations.local_landing, input_url
    return run_local(args)


def _close(copy: WorkingCopy) -> str | None:
    """Publish and release; the first line of what went wrong, if anything did."""
    try:
        copy.close()
    except Exception as exc:
        # The bucket keeps its previous manifest; the next run pulls that state and redoes this run's
        # work (a REST destination then answers `present` for what it already holds).
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return None


def _say(args: argparse.Namespace) -> Callable[[str], None]:
    def say(msg: str) -> None:
        if not getattr(args, "no_progress", False) or getattr(args, "verbose", False):
            print(msg, file=sys.stderr, flush=True)

    return say
