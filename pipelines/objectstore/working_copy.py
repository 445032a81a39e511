"""A Dagster run's (or any caller's) local working copy of ``s3://`` locations, opened and closed once.

Invariants: while open, this process holds the data directory's writer lease (:mod:`.lease`), the copy
equals what the bucket held when it was opened (:func:`.sync.pull`), and the landing scratch folder holds
exactly the complete dump objects not ingested yet (:mod:`.landing`); closing publishes what was written
(manifest last) and releases the lease, also after a failure (every file the stages leave is consistent).
"""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from pipelines.ingest.catalog import read_manifest
from pipelines.objectstore.landing import complete_dumps, copy_to_scratch, ingested
from pipelines.objectstore.lease import writer_lease
from pipelines.objectstore.location import S3Location, is_remote
from pipelines.objectstore.settings import S3Settings
from pipelines.objectstore.store import ObjectStore, check_access
from pipelines.objectstore.sync import SyncFigures, publish, pull
from pipelines.tables import DataLayout


def default_work_dir(location: S3Location) -> Path:
    # The same location gets the same folder on every run, so its working copy is only topped up.
    return (
        Path(tempfile.gettempdir()) / "assistants-backfill" / location.bucket / (location.prefix or "_root")
    )


@dataclass(frozen=True)
class Locations:
    """The data directory and landing as configured, and the local folders the stages work in."""

    data_dir: str
    landing: str | None
    work_dir: str | None
    s3: S3Settings
    # How errors name the two locations: the settings' fields, or the CLI's options.
    names: tuple[str, str] = ("data_dir", "landing")

    @property
    def remote_data(self) -> bool:
        return is_remote(self.data_dir)

    @property
    def landing_url(self) -> str | None:
        """The landing prefix when it is on object storage (by default ``<s3 data dir>/landing``)."""
        if self.landing:
            return self.landing if is_remote(self.landing) else None
        return f"{self.data_dir.rstrip('/')}/landing" if self.remote_data else None

    @property
    def remote(self) -> bool:
        return self.remote_data or self.landing_url is not None

    @property
    def work(self) -> Path:
        if self.work_dir:
            return Path(self.work_dir)
        return default_work_dir(
            S3Location.parse(self.data_dir if self.remote_data else str(self.landing_url))
        )

    @property
    def local_data(self) -> Path:
        return self.work / "data" if self.remote_data else Path(self.data_dir)

    @property
    def local_landing(self) -> Path:
        if self.landing_url:
            return self.work / "landing"
        return Path(self.landing) if self.landing else self.local_data / "landing"

    def data_store(self) -> ObjectStore:
        return check_access(S3Location.parse(self.data_dir), self.s3, self.names[0])

    def landing_store(self) -> ObjectStore:
        return check_access(S3Location.parse(str(self.landing_url)), self.s3, self.names[1])


class WorkingCopy:
    def __init__(self, locations: Locations) -> None:
        self.locations = locations
        self._stack = ExitStack()
        self._data: ObjectStore | None = None
        self.pulled: SyncFigures | None = None
        self.published: SyncFigures | None = None
        self.landing_objects = 0  # complete dump objects under the landing prefix
        self.pending_objects = 0  # of those, the ones not ingested yet (copied to scratch)

    def open(self) -> WorkingCopy:
        loc = self.locations
        # Both locations are checked before anything is taken or copied.
        self._data = loc.data_store() if loc.remote_data else None
        landing = loc.landing_store() if loc.landing_url else None
        try:
            if self._data:
                self._stack.enter_context(writer_lease(self._data))
                self.pulled = pull(self._data, loc.local_data)
            if landing:
                objects = complete_dumps(landing)
                manifest = read_manifest(DataLayout.at(loc.local_data))
                pending = [o for o in objects if not ingested(landing, o, manifest)]
                self.landing_objects, self.pending_objects = len(objects), len(pending)
                copy_to_scratch(landing, pending, loc.local_landing)
        except BaseException:
            self._stack.close()
            raise
        return self

    def close(self) -> None:
        try:
            if self._data:
                self.published = publish(self._data, self.locations.local_data)
        finally:
            self._stack.close()
