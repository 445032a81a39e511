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
from contextlib import ExitStack
from pathlib import Path

from pipelines.ingest.catalog import read_manifest
from pipelines.objectstore.landing import complete_dumps, copy_to_scratch, ingested
from pipelines.objectstore.lease import LeaseHeld, writer_lease
from pipelines.objectstore.location import S3Location, is_remote
from pipelines.objectstore.settings import DEFAULT_KEY_ID_ENV, DEFAULT_SECRET_ENV, S3Settings
from pipelines.objectstore.store import ObjectStore, ObjectStoreError, check_access
from pipelines.objectstore.sync import publish, pull
from pipelines.objectstore.working_copy import default_work_dir
from pipelines.tables import DataLayout

EXIT_FAILED, EXIT_USAGE, EXIT_BUSY = 1, 2, 75
Refuse = Callable[[argparse.Namespace, list[str], int], int]


def location_arg(value: str) -> Path | str:
    """``--input`` / ``--data-dir``: an ``s3://`` URL stays text (a Path would fold its ``//``)."""
    return value if is_remote(value) else Path(value)


def add_s3_arguments(r: argparse.ArgumentParser) -> None:
    g = r.add_argument_group("object storage (s3:// --input / --data-dir)")
    g.add_argument(
        "--s3-endpoint-url",
        help="an S3-compatible endpoint, e.g. http://127.0.0.1:9000 (default $AWS_ENDPOINT_URL, else AWS)",
    )
    g.add_argument("--s3-region", help="the bucket's region (default $AWS_REGION, else us-east-1)")
    g.add_argument(
        "--s3-allow-http",
        action="store_true",
        help="allow a plain-HTTP endpoint on a host other than 127.0.0.1",
    )
    g.add_argument(
        "--s3-key-id-env",
        default=DEFAULT_KEY_ID_ENV,
        help="NAME of the environment variable holding the access key id",
    )
    g.add_argument(
        "--s3-secret-env",
        default=DEFAULT_SECRET_ENV,
        help="NAME of the environment variable holding the secret access key",
    )
    g.add_argument(
        "--work-dir",
        type=Path,
        help="local working copy of an s3:// data directory and scratch for s3:// dumps "
        "(default <system temp>/assistants-backfill/<bucket>/<prefix>)",
    )


def s3_settings(args: argparse.Namespace) -> S3Settings:
    return S3Settings(
        endpoint_url=args.s3_endpoint_url,
        region=args.s3_region,
        allow_http=args.s3_allow_http,
        key_id_env=args.s3_key_id_env,
        secret_env=args.s3_secret_env,
    )


def uses_object_storage(args: argparse.Namespace) -> bool:
    return is_remote(args.input) or is_remote(args.data_dir)


def run_on_object_storage(
    args: argparse.Namespace, run_local: Callable[[argparse.Namespace], int], refuse: Refuse
) -> int:
    settings = s3_settings(args)
    data_url, input_url = str(args.data_dir), str(args.input)
    try:
        data_store = _store(args.data_dir, settings, "--data-dir")
        input_store = _store(args.input, settings, "--input")
    except (ObjectStoreError, ValueError) as exc:
        return refuse(args, [str(exc)], EXIT_USAGE)
    first = data_store or input_store
    assert first is not None
    work = args.work_dir or default_work_dir(first.location)
    say = _say(args)
    try:
        with ExitStack() as stack:
            if data_store:
                stack.enter_context(writer_lease(data_store))
                copy = pull(data_store, work / "data")
                say(f"{data_url}: working copy {work / 'data'} ({copy.downloaded} objects downloaded)")
                args.data_dir = work / "data"
                args.data_dir_url = data_url
            if input_store:
                objects = complete_dumps(input_store)
                if not objects:
                    return refuse(
                        args, [f"--input {input_url}: no dump object under this prefix"], EXIT_USAGE
                    )
                manifest = read_manifest(DataLayout.at(args.data_dir))
                pending = [o for o in objects if not ingested(input_store, o, manifest)]
                say(f"{input_url}: {len(objects)} dump objects, {len(pending)} not ingested yet")
                args.input = copy_to_scratch(input_store, pending, work / "landing")
                args.input_url = input_url
            code = run_local(args)
            if data_store:
                sent = publish(data_store, work / "data")
                say(f"{data_url}: published {sent.uploaded} objects, removed {sent.deleted}")
            return code
    except LeaseHeld as exc:
        return refuse(
            args, [f"--data-dir {exc}: wait for that run, or remove the lease once it is gone"], EXIT_BUSY
        )
    except ObjectStoreError as exc:
        return refuse(args, [str(exc)], EXIT_FAILED)


def _store(value: Path | str, settings: S3Settings, what: str) -> ObjectStore | None:
    return check_access(S3Location.parse(value), settings, what) if is_remote(value) else None


def _say(args: argparse.Namespace) -> Callable[[str], None]:
    def say(msg: str) -> None:
        if not getattr(args, "no_progress", False) or getattr(args, "verbose", False):
            print(msg, file=sys.stderr, flush=True)

    return say
