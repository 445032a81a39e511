"""An ``s3://`` data directory's local working copy: pulled before a run, published after it.

The stages read and write local files (atomic renames, ``flock`` claims, DuckDB and Polars over local
Parquet); on object storage a run works in a local copy and publishes it. Invariants:

- :func:`pull` makes the copy equal to the bucket (changed objects downloaded, files the bucket does not
  hold removed), so a run never builds on another machine's unpublished work; objects already in the
  copy with the same ETag are not downloaded again, so a long-lived working folder only fetches what
  changed since its last run.
- :func:`publish` uploads each new or changed file with one PUT to its final key (an object is old or
  new, never partial), removes objects whose files the run removed, and writes the manifest and scope
  catalog (``staged/_manifest/``) last: a reader that goes by the manifest never sees a dump the bucket
  does not hold complete.
- Machine-local files are never published: the Dagster instance (``dagster_home/``), ``flock`` lock
  files (``staged/_claims/``), the warehouse file (its views name local paths; analysts use
  :mod:`.warehouse`), the landing folder, and hidden temporary files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.objectstore.store import ObjectStore

SYNC_RECORD = ".s3-sync.json"
# Names the data directory a working copy belongs to: what stands for the copy's path wherever the path
# would otherwise name a destination (the embedded store's ledger id), so every machine agrees.
LOCATION_FILE = ".s3-location"
_LOCAL_ONLY = ("dagster_home/", "staged/_claims/", "landing/", "_lease/")
_LOCAL_FILES = ("warehouse.duckdb", "warehouse.duckdb.wal", SYNC_RECORD, LOCATION_FILE)
PUBLISHED_LAST = "staged/_manifest/"


def published_path(path: Path) -> str | None:
    """``s3://.../<name>`` for a folder at the root of a working copy (``<copy>/engramia``), else None."""
    marker = path.parent / LOCATION_FILE
    return f"{marker.read_text().strip()}/{path.name}" if marker.is_file() else None


def is_local_only(relative: str) -> bool:
    name = relative.rsplit("/", 1)[-1]
    return relative.startswith(_LOCAL_ONLY) or relative in _LOCAL_FILES or name.startswith(".")


@dataclass
class SyncFigures:
    downloaded: int = 0
    uploaded: int = 0
    deleted: int = 0
    removed_locally: int = 0
    bytes_moved: int = 0
    published: list[str] = field(default_factory=list)


def _read_record(work: Path) -> dict[str, dict[str, object]]:
    path = work / SYNC_RECORD
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_record(work: Path, record: dict[str, dict[str, object]]) -> None:
    tmp = work / f"{SYNC_RECORD}.tmp"
    tmp.write_text(json.dumps(record, sort_keys=True))
    os.replace(tmp, work / SYNC_RECORD)


def _local_files(work: Path) -> dict[str, os.stat_result]:
    out: dict[str, os.stat_result] = {}
    for path in work.rglob("*"):
        if path.is_file():
            relative = path.relative_to(work).as_posix()
            if not is_local_only(relative):
                out[relative] = path.stat()
    return out


def _unchanged(entry: dict[str, object] | None, st: os.stat_result | None) -> bool:
    return bool(entry and st and entry["size"] == st.st_size and entry["mtime_ns"] == st.st_mtime_ns)


def pull(store: ObjectStore, work: Path) -> SyncFigures:
    """Make ``work`` hold exactly the data directory's published objects."""
    work.mkdir(parents=True, exist_ok=True)
    (work / LOCATION_FILE).write_text(store.location.url)
    record = _read_record(work)
    remote = {o.relative: o for o in store.list() if not is_local_only(o.relative)}
    local = _local_files(work)
    figures = SyncFigures()
    new_record: dict[str, dict[str, object]] = {}
    for relative, obj in sorted(remote.items()):
        entry = record.get(relative)
        st = local.get(relative)
        if not (entry and entry["etag"] == obj.etag and _unchanged(entry, st)):
            store.download(relative, work / relative)
            st = (work / relative).stat()
            figures.downloaded += 1
            figures.bytes_moved += obj.size
        assert st is not None
        new_record[relative] = {"etag": obj.etag, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    for relative in local.keys() - remote.keys():
        # Unpublished leftovers of a run that stopped before publishing: the stages redo that work.
        (work / relative).unlink()
        figures.removed_locally += 1
    _write_record(work, new_record)
    return figures


def publish(store: ObjectStore, work: Path) -> SyncFigures:
    """Upload what changed in ``work`` since the last pull or publish; the manifest goes last."""
    record = _read_record(work)
    local = _local_files(work)
    changed = sorted(r for r, st in local.items() if not _unchanged(record.get(r), st))
    first = [r for r in changed if not r.startswith(PUBLISHED_LAST)]
    last = [r for r in changed if r.startswith(PUBLISHED_LAST)]
    gone = sorted(record.keys() - local.keys())
    figures = SyncFigures()
    for relative in first:
        _upload(store, work, relative, local[relative], record, figures)
    # Removed files (a scope's settled record, a superseded batch) go before the manifest is replaced:
    # the new manifest never names them.
    for relative in gone:
        store.delete(relative)
        del record[relative]
        figures.deleted += 1
    for relative in last:
        _upload(store, work, relative, local[relative], record, figures)
    _write_record(work, record)
    return figures


def _upload(
    store: ObjectStore,
    work: Path,
    relative: str,
    st: os.stat_result,
    record: dict[str, dict[str, object]],
    figures: SyncFigures,
) -> None:
    etag = store.upload(work / relative, relative)
    record[relative] = {"etag": etag, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    figures.uploaded += 1
    figures.bytes_moved += st.st_size
    figures.published.append(relative)
