"""The manifest of ingested dumps and the catalog of scopes they produced.

The manifest has one row per dump whose ingest completed; the staged files of any other dump are left
over from a crash and are never read. The scope catalog maps each scope key to its Engramia
``(tenant_id, project_id)``.

Invariants: a dump's scopes are registered before its manifest row is written, so every scope a complete
dump lists is in the catalog; a dump reaches the manifest only once its lines reconcile (lines = staged +
quarantined, checked by the staging), so the manifest's counts are those of the files on disk; both are
rewritten under one lock (:mod:`pipelines.ingest.claims`), so concurrent ingest runs lose no row.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.ingest.claims import catalog_lock
from pipelines.ingest.dumps import Dump, discover_dumps
from pipelines.tables import (
    MANIFEST_DEFAULTS,
    MANIFEST_SCHEMA,
    SCOPES_SCHEMA,
    DataLayout,
    parquet_files,
    write_parquet,
)

# path -> (the file's bytes, the frame read from them): every scope's stages read these tables again,
# ~3 ms each to decode, while their bytes are a few KB to compare.
_READ: dict[Path, tuple[bytes, pl.DataFrame]] = {}


def _snapshot(path: Path, finish: Callable[[pl.DataFrame], pl.DataFrame] = lambda f: f) -> pl.DataFrame:
    """The file as it is at one moment. Another ingest run may replace it (under the catalog lock, by a
    rename) while it is read, and Polars opens a path more than once (its footer, then its pages): a
    replacement in between gave the old footer's offsets into the new file ("Invalid thrift: end of
    file"). These tables are small, so they are read into memory through one open; the frame made of
    the same bytes last time is reused (decided on the bytes themselves, so it is never stale)."""
    data = path.read_bytes()
    cached = _READ.get(path)
    if cached is not None and cached[0] == data:
        return cached[1]
    frame = finish(pl.read_parquet(io.BytesIO(data)))
    if len(_READ) >= 64:  # a process that opens many data folders (the tests) keeps the last few
        _READ.clear()
    _READ[path] = (data, frame)
    return frame


def _as_manifest(manifest: pl.DataFrame) -> pl.DataFrame:
    missing = [pl.lit(MANIFEST_DEFAULTS[c]).alias(c) for c in MANIFEST_SCHEMA if c not in manifest.columns]
    return manifest.with_columns(missing).select(list(MANIFEST_SCHEMA)).cast(MANIFEST_SCHEMA)


def read_manifest(layout: DataLayout) -> pl.DataFrame:
    if layout.manifest.exists():
        return _snapshot(layout.manifest, _as_manifest)
    return pl.DataFrame(schema=MANIFEST_SCHEMA)


def pending_dumps(layout: DataLayout, source: Path, settle_seconds: float = 0.0) -> list[Dump]:
    """Dumps not in the manifest yet; with ``settle_seconds``, only files unchanged for that long (a file
    still being copied in would otherwise be read half-written)."""
    done = set(read_manifest(layout)["dump_id"].to_list())
    newest = time.time_ns() - int(settle_seconds * 1e9)
    return [d for d in discover_dumps(source) if d.dump_id not in done and d.mtime_ns <= newest]


def record_dump(layout: DataLayout, entry: dict[str, Any], names: dict[str, tuple[str, str]]) -> pl.DataFrame:
    """Mark a staged dump complete: its scopes ``names`` join the catalog, then its manifest ``entry``
    (one row of :data:`MANIFEST_SCHEMA`) is appended to the manifest as it is on disk now (another
    ingest run may have added rows since this one read it). Returns the new manifest."""
    with catalog_lock(layout):
        manifest = read_manifest(layout)
        if entry["dump_id"] in set(manifest["dump_id"].to_list()):
            raise RuntimeError(f"{entry['file']}: dump {entry['dump_id']} is in the manifest already")
        manifest = pl.concat([manifest, pl.DataFrame([entry], schema=MANIFEST_SCHEMA)])
        _register_scopes(layout, names)
        # The manifest is written after each dump so a crash re-does at most the dump in progress.
        write_parquet(manifest, layout.manifest)
    return manifest


def read_scopes(layout: DataLayout) -> pl.DataFrame:
    """Every scope seen so far with its Engramia ``(tenant_id, project_id)``."""
    path = layout.scope_catalog
    return _snapshot(path) if path.exists() else pl.DataFrame(schema=SCOPES_SCHEMA)


def scope_names(layout: DataLayout, scope: str) -> tuple[str, str]:
    row = read_scopes(layout).filter(pl.col("scope") == scope)
    if row.is_empty():
        raise KeyError(f"unknown scope {scope!r}: no staged dump has produced it")
    return row["tenant_id"][0], row["project_id"][0]


def _register_scopes(layout: DataLayout, names: dict[str, tuple[str, str]]) -> None:
    known = read_scopes(layout)
    new = pl.DataFrame(
        [{"scope": k, "tenant_id": t, "project_id": p} for k, (t, p) in names.items()], schema=SCOPES_SCHEMA
    )
    merged = pl.concat([known, new]).unique("scope", keep="first").sort("scope")
    # Unchanged catalogs are not rewritten: most dumps bring no new scope.
    if merged.height != known.height:
        write_parquet(merged, layout.scope_catalog)


def scope_dump_rows(layout: DataLayout, scope: str) -> dict[str, list[Path]]:
    """Staged raw files of one scope, per dump id in ingest order (the manifest's ``seq``), for dumps the
    manifest lists as complete (the files of a dump whose ingest crashed are ignored until it is
    ingested again). Messages are staged in this order, so it decides which copy of a message is first.
    """
    out: dict[str, list[Path]] = {}
    # Not the folders' name order: a dump id ends in a hash, so two dumps of one file name would be
    # ordered by their hashes.
    for dump_id in read_manifest(layout).sort("seq", maintain_order=True)["dump_id"].to_list():
        if dump_id not in out and (
            files := parquet_files(layout.raw() / f"dump={dump_id}" / f"scope={scope}")
        ):
            out[dump_id] = files
    return out
