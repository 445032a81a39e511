"""Dumps landing on an ``s3://`` prefix: which objects are complete deliveries, and their local copies.

Invariants: S3 shows an object only once its PUT or multipart upload has completed, so every listed
object is a complete file, and an upload in progress is not listed at all; objects whose names mark them
as temporary or hidden (``.x``, ``_x``, ``*.part``, ``*.tmp``, ``*.partial``) are never taken, as the
local landing skips hidden files. A dump is its object's key, size and ETag (:mod:`.origins`): an object
replaced under the same key is a new delivery, an unchanged one is never ingested twice. Copies are
written to a temporary name and renamed, so the ingest never reads a partial copy.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import polars as pl

from pipelines.ingest.dumps import Dump, is_dump_name
from pipelines.objectstore.origins import read_origins, write_origins
from pipelines.objectstore.store import ObjectInfo, ObjectStore

_TEMPORARY_SUFFIXES = (".part", ".tmp", ".partial")


def is_temporary(relative: str) -> bool:
    """Names an uploader uses while a file is on its way (or hides), anywhere in the key's last part."""
    name = PurePosixPath(relative).name
    return name.startswith((".", "_")) or name.lower().endswith(_TEMPORARY_SUFFIXES)


def complete_dumps(store: ObjectStore) -> list[ObjectInfo]:
    """The prefix's dump objects in name order (the ingest order), temporary names left out."""
    found = [
        o
        for o in store.list()
        if not is_temporary(o.relative) and is_dump_name(PurePosixPath(o.relative).name)
    ]
    return sorted(found, key=lambda o: o.relative)


def object_url(store: ObjectStore, obj: ObjectInfo) -> str:
    return store.location.object_url(obj.relative)


def ingested(store: ObjectStore, obj: ObjectInfo, manifest: pl.DataFrame) -> bool:
    """Whether the manifest holds this object as it is now (same key, size and ETag). A zip counts as
    ingested once any of its members is (members are only known after the download)."""
    url = object_url(store, obj)
    ids = set(manifest["dump_id"].to_list())
    for label in manifest.filter(pl.col("file").str.starts_with(url))["file"].to_list():
        base, _, member = label.partition("!")
        if base != url:
            continue
        dump = Dump(Path(obj.relative), obj.size, obj.mtime_ns, member or None, url, obj.etag)
        if dump.dump_id in ids:
            return True
    return False


def pending_objects(store: ObjectStore, manifest: pl.DataFrame) -> list[ObjectInfo]:
    return [o for o in complete_dumps(store) if not ingested(store, o, manifest)]


def copy_to_scratch(store: ObjectStore, objects: Iterable[ObjectInfo], scratch: Path) -> Path:
    """Stream ``objects`` into ``scratch`` (same relative names) and record where each came from.

    A copy already there with the same ETag is kept (a run interrupted while copying resumes); copies of
    objects not asked for (ingested since) are removed, so scratch holds only what is to be ingested.
    Returns ``scratch``, the folder to ingest.
    """
    objects = list(objects)
    wanted = {o.relative for o in objects}
    origins = read_origins(scratch)
    for relative in [r for r in origins if r not in wanted]:
        (scratch / relative).unlink(missing_ok=True)
        del origins[relative]
    for obj in objects:
        target = scratch / obj.relative
        if origins.get(obj.relative, ("", ""))[1] == obj.etag and target.is_file():
            continue
        store.download(obj.relative, target, obj.mtime_ns)
        origins[obj.relative] = (object_url(store, obj), obj.etag)
        # Recorded after each object: a copy interrupted later still has its identity.
        write_origins(scratch, origins)
    write_origins(scratch, origins)
    return scratch
