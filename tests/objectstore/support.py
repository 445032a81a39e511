"""Helpers of the object storage tests: uploading dumps, reading a data directory's tables."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from pipelines.objectstore.location import S3Location
from pipelines.objectstore.settings import S3Settings
from pipelines.objectstore.store import check_access
from pipelines.objectstore.sync import pull
from tests.support.s3_server import S3Server

# Columns that name where a dump was read from (a local path or an object URL), or derive from it.
WHERE_FROM = ("dump_id", "file", "dump")
# Staged tables compared between an s3:// run and a local one (folder under staged/).
TABLES = ("messages", "patterns", "unpaired", "scored", "filtered", "quarantine")


def upload(server: S3Server, bucket: str, key: str, source: Path) -> None:
    server.client().upload_file(str(source), bucket, key)


def table(frame_files: list[pl.DataFrame]) -> pl.DataFrame:
    frame = pl.concat(frame_files, how="diagonal_relaxed")
    frame = frame.drop([c for c in frame.columns if c in WHERE_FROM])
    sortable = [c for c, t in frame.schema.items() if not t.is_nested()]
    return frame.sort(sortable)


def local_table(data: Path, name: str) -> pl.DataFrame:
    files = sorted((data / "staged" / name).rglob("*.parquet"))
    return table([pl.read_parquet(f, hive_partitioning=False) for f in files])


def s3_table(url: str, name: str, settings: S3Settings) -> pl.DataFrame:
    """The same table read straight from the bucket by Polars' cloud reader."""
    location = S3Location.parse(url)
    store = check_access(location, settings, "--data-dir")
    keys = sorted(o.relative for o in store.list(f"staged/{name}") if o.relative.endswith(".parquet"))
    options = settings.polars_storage_options()
    return table([pl.read_parquet(location.object_url(k), storage_options=options) for k in keys])


def embedded_store(data: Path) -> dict[str, object]:
    """Every file of the embedded store, parsed; the store's creation time left out."""
    root = data / "engramia"
    files = {str(p.relative_to(root)): json.loads(p.read_text()) for p in root.rglob("*.json")}
    files["metadata/embedding_config.json"].pop("created_at")
    return files


def pulled(url: str, settings: S3Settings, into: Path) -> Path:
    """A fresh working copy of an s3:// data directory, as another machine would pull it."""
    pull(check_access(S3Location.parse(url), settings, "--data-dir"), into)
    return into
