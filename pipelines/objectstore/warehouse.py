"""The analysts' views over an ``s3://`` data directory, read in place.

DuckDB reads ``s3://`` through an fsspec file system (s3fs) registered on the connection, so no DuckDB
extension has to be downloaded; the views are exactly those of :mod:`pipelines.warehouse` (same names,
same columns, empty views for tables with no files yet). Polars reads the same objects with its own
cloud reader (:func:`scan_staged`). Both see what runs have published: the manifest is published last, so
``manifest`` never names a dump whose rows are not in the bucket.

    python -m pipelines.objectstore.warehouse --data-dir s3://bucket/prefix "SELECT * FROM manifest"
"""

from __future__ import annotations

import argparse
import sys
from fnmatch import fnmatchcase

import duckdb
import polars as pl

from pipelines.objectstore.location import S3Location
from pipelines.objectstore.settings import S3Settings, add_s3_options, s3_from_args
from pipelines.objectstore.store import ObjectStoreError, check_access
from pipelines.warehouse import create_views


def connect(data_dir: str, settings: S3Settings) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with every warehouse view over the data directory's objects."""
    location = S3Location.parse(data_dir)
    store = check_access(location, settings, "--data-dir")
    # One listing decides which tables have files; the views then read them at query time.
    keys = [o.relative for o in store.list("staged")]

    def has_files(glob: str) -> bool:
        pattern = f"staged/{glob}"
        return any(fnmatchcase(k, pattern) for k in keys)

    con = duckdb.connect()
    con.register_filesystem(settings.fsspec_filesystem())
    create_views(con, location.object_url("staged"), has_files)
    return con


def scan_staged(data_dir: str, glob: str, settings: S3Settings) -> pl.LazyFrame:
    """A staged table read by Polars' native cloud reader, e.g. ``messages/scope=*/*.parquet``."""
    url = S3Location.parse(data_dir).object_url(f"staged/{glob}")
    return pl.scan_parquet(url, storage_options=settings.polars_storage_options(), hive_partitioning=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Query the warehouse views of an s3:// data directory.")
    parser.add_argument("--data-dir", required=True, help="s3://bucket/prefix")
    parser.add_argument("sql", help="a query over the views (manifest, messages, patterns, ...)")
    add_s3_options(parser)
    args = parser.parse_args(argv)
    settings = s3_from_args(args)
    try:
        con = connect(args.data_dir, settings)
    except (ObjectStoreError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    con.sql(args.sql).show(max_rows=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
