"""The SQLite storage of the instance as the CLI's processes open it: Dagster's own, with each database's
engine and connection kept for the next event instead of made and disposed of for every one.

Dagster's SQLite event log builds a SQLAlchemy engine, opens a connection and disposes of both for each
event it stores, and an asset or check event is written to the run's database and again to the index's. A
scope run stores ~60 events (the planned materializations and checks alone are ~20). On the benchmark
machine that was about a fifth of a small CLI run's CPU: a 20k-message run (13 runs) took 15.9-16.1 s,
and 13.5-13.7 s with the engines and connections kept. Dagster's run storage likewise makes an engine and a
connection for every call; the CLI keeps those too.

A new run's database is made once per process by Dagster's own ``_initdb`` (the tables, WAL mode, the
migration head stamped) and copied for each later run: making it took 65-100 ms a run on the benchmark
machine (alembic reads its migration scripts again every time), a copy well under a millisecond. Its
commits do not wait for the disk (see ``_commit_without_sync``).

The files, tables and revisions are Dagster's own: the UI, the daemon and the runs they launch read and
write the same folder with Dagster's class (the instance's ``dagster.yaml`` names no storage). Only the
instances the CLI opens (:func:`assets.cli.instance.open_instance`), and what they hand on through their
``InstanceRef``, use this one.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME, SqliteEventLogStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.sql import create_engine
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage, SqliteStorageConfig
from dagster._serdes import ConfigurableClassData
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool, QueuePool

# Dagster's unified SQLite storage, as InstanceRef names it for a dagster.yaml without a storage section.
DAGSTER_SQLITE_STORAGE = (DagsterSqliteStorage.__module__, DagsterSqliteStorage.__name__)
# A process writes one run's events at a time; a few more are kept for the runs it reads back.
RUN_DATABASES_KEPT = 4

# An empty run database as Dagster's ``_initdb`` leaves it, made once per process (see ``_new_run_database``).
_template: bytes | None = None
_template_lock = threading.Lock()


def _commit_without_sync(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    """Commits of this connection wait for no fsync: each of a run's ~60 events is a commit, and SQLite's
    default (FULL) syncs the write-ahead log to disk at every one.

    Dagster keeps these databases in WAL mode, where NORMAL cannot leave a database damaged: a process
    that dies loses nothing it committed, and only a power loss or an OS crash can take back the last
    events, those of runs the machine's end stopped anyway. Other processes' connections to the same
    files (the UI's, the daemon's) keep their own setting.
    """
    dbapi_connection.execute("PRAGMA synchronous = NORMAL")


class SqliteEventLogStorageKeepingConnections(SqliteEventLogStorage):
    """Dagster's SQLite event log with one engine per database file, its connection kept open between
    events (SQLite in WAL mode: an idle connection holds no lock and does not block other processes'
    writes or checkpoints)."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        # Before Dagster's __init__: it connects to make the index database of a new instance.
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._tables_seen: set[str] = set()
        super().__init__(base_dir, inst_data)

    def has_table(self, table_name: str) -> bool:
        # Dagster asks before every asset check event and every event's tags, each time through a new
        # engine and connection of its own. A table once there stays (a migration only adds them); one not
        # there yet is asked about again, since an upgrade of the folder may add it.
        if table_name not in self._tables_seen and super().has_table(table_name):
            self._tables_seen.add(table_name)
        return table_name in self._tables_seen

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        # Dagster's own lock: one connection of this storage in use at a time, as in its _connect.
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                if shard == INDEX_SHARD_NAME or not self._new_run_database(shard):
                    self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def _engine(self, shard: str) -> Engine:
        engine = self._engines.get(shard)
        if engine is not None:
            self._engines.move_to_end(shard)
            return engine
        engine = create_engine(
            self.conn_string_for_shard(shard),
            poolclass=QueuePool,
            pool_size=1,
            # Used from whichever thread holds the lock (Dagster's event watchers run on threads).
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
        )
        event.listen(engine, "connect", _commit_without_sync)
        self._engines[shard] = engine
        runs = [name for name in self._engines if name != INDEX_SHARD_NAME]
        for name in runs[: max(0, len(runs) - RUN_DATABASES_KEPT)]:
            self._engines.pop(name).dispose()
        return engine

    def _new_run_database(self, shard: str) -> bool:
        """Put a copy of the empty run database where the run's database belongs, if there is none yet.

        Linked into place, so that no reader sees it half written and a database another process has just
        made is never replaced (False then, and Dagster's ``_initdb`` checks that one as it always does).
        """
        path = self.path_for_shard(shard)
        if os.path.exists(path):
            return False
        template = self._template()
        if template is None:
            return False
        partial = os.path.join(self._base_dir, f".{shard}.{uuid.uuid4().hex}.db-new")
        # Made as SQLite makes a database file (0666 less the umask), not mkstemp's 0600.
        handle = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(template)
            os.link(partial, path)
        except OSError:
            # Made meanwhile by another process, or a file system without hard links: Dagster's way then.
            return False
        finally:
            os.unlink(partial)
        return True

    def _template(self) -> bytes | None:
        """The empty run database, made by Dagster's ``_initdb`` in a folder of its own; None if it did not
        come out as one self-contained file (a journal left beside it)."""
        global _template
        with _template_lock:
            if _template is None:
                with tempfile.TemporaryDirectory(prefix="dagster-run-db-") as folder:
                    path = os.path.join(folder, "template.db")
                    engine = create_engine(f"sqlite:///{path}", poolclass=NullPool)
                    try:
                        self._initdb(engine)
                    finally:
                        engine.dispose()
                    # WAL mode is kept in the file's header; the last connection's close folds the log in.
                    if set(os.listdir(folder)) != {"template.db"}:
                        return None
                    with open(path, "rb") as made:
                        _template = made.read()
            return _template

    def dispose(self) -> None:
        with self._db_lock:
            while self._engines:
                self._engines.popitem()[1].dispose()
        super().dispose()


class SqliteRunStorageKeepingConnection(SqliteRunStorage):
    """Dagster's SQLite run storage with its engine and a connection kept between calls: Dagster's makes
    both for every call (a run's start, its status changes, each read of the run), and each commit waits
    for no fsync (see ``_commit_without_sync``)."""

    def __init__(self, conn_string: str, inst_data: ConfigurableClassData | None = None) -> None:
        super().__init__(conn_string, inst_data)
        # Calls from several threads at once get connections beyond the kept one (the pool's overflow).
        self._engine = create_engine(
            conn_string, poolclass=QueuePool, pool_size=1, connect_args={"check_same_thread": False}
        )
        event.listen(self._engine, "connect", _commit_without_sync)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self._engine.connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        self._engine.dispose()
        super().dispose()


class SqliteStorageKeepingConnections(DagsterSqliteStorage):
    """Dagster's SQLite storage of an instance folder with :class:`SqliteEventLogStorageKeepingConnections`
    as its event log and :class:`SqliteRunStorageKeepingConnection` as its run storage."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        super().__init__(base_dir, inst_data)
        # Over the same files as the storages Dagster's __init__ made (which made the databases if new).
        self._event_log_storage = SqliteEventLogStorageKeepingConnections(self._event_log_storage._base_dir)
        self._run_storage = SqliteRunStorageKeepingConnection(self._run_storage._conn_string)

    @classmethod
    def from_config_value(  # ty: ignore[invalid-method-override]
        cls, inst_data: ConfigurableClassData, config_value: SqliteStorageConfig
    ) -> SqliteStorageKeepingConnections:
        return cls.from_local(inst_data=inst_data, **config_value)


def keeping_connections(storage: ConfigurableClassData | None) -> ConfigurableClassData | None:
    """An instance's storage as the CLI opens it: Dagster's SQLite storage becomes the one above, over the
    same folder; any other (Postgres, one named in ``dagster.yaml``) stays as it is."""
    if storage is None or (storage.module_name, storage.class_name) != DAGSTER_SQLITE_STORAGE:
        return storage
    return ConfigurableClassData(__name__, SqliteStorageKeepingConnections.__name__, storage.config_yaml)
