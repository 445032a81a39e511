"""The CLI's instance keeps its SQLite connections, over the files Dagster's own class reads and writes."""

import os
import sqlite3
from contextlib import closing
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._serdes import ConfigurableClassData

from assets.cli.instance import open_instance
from assets.cli.instance_storage import (
    RUN_DATABASES_KEPT,
    SqliteEventLogStorageKeepingConnections,
    SqliteRunStorageKeepingConnection,
    keeping_connections,
)


@dg.op
def say(context: dg.OpExecutionContext) -> int:
    context.log.info("hello")
    return 1


@dg.job
def tiny() -> None:
    say()


def _held_open() -> set[str]:
    """The files this process holds open."""
    held = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            held.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return held


def _open_databases(home: Path) -> set[str]:
    """The event log's database files this process holds open."""
    runs = str(home / "history" / "runs")
    return {f for f in _held_open() if f.startswith(runs + os.sep) and f.endswith(".db")}


def test_runs_written_by_the_cli_instance_read_the_same_through_dagsters_class(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    with open_instance(tmp_path) as instance:
        assert isinstance(instance.event_log_storage, SqliteEventLogStorageKeepingConnections)
        # What it hands on (a launched run, a plan) opens the folder the same way.
        assert instance.get_ref().storage_data.class_name == "SqliteStorageKeepingConnections"
        ours = tiny.execute_in_process(instance=instance)
        ours_events = len(instance.all_logs(ours.run_id))
    with dg.DagsterInstance.from_config(str(home)) as dagsters:
        assert type(dagsters.event_log_storage).__name__ == "SqliteEventLogStorage"
        assert dagsters.get_run_by_id(ours.run_id).status == dg.DagsterRunStatus.SUCCESS
        assert len(dagsters.all_logs(ours.run_id)) == ours_events > 0
        theirs = tiny.execute_in_process(instance=dagsters)
        theirs_events = len(dagsters.all_logs(theirs.run_id))
    with open_instance(tmp_path) as instance:
        assert instance.get_run_by_id(theirs.run_id).status == dg.DagsterRunStatus.SUCCESS
        assert len(instance.all_logs(theirs.run_id)) == theirs_events
        assert {r.run_id for r in instance.get_runs()} == {ours.run_id, theirs.run_id}


def test_the_databases_held_open_stay_few_however_many_runs(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    with open_instance(tmp_path) as instance:
        for _ in range(RUN_DATABASES_KEPT + 4):
            tiny.execute_in_process(instance=instance)
        held = _open_databases(home)
        # The index and the newest runs' databases; the older runs' connections were closed.
        assert 1 < len(held) <= RUN_DATABASES_KEPT + 1
        assert str(home / "history" / "runs" / "index.db") in held
        # Every run's events are still read back, the closed ones reopened.
        assert all(len(instance.all_logs(r.run_id)) > 0 for r in instance.get_runs())
    assert _open_databases(home) == set()


def test_other_storages_are_left_as_the_folder_names_them() -> None:
    postgres = ConfigurableClassData("dagster_postgres", "DagsterPostgresStorage", "postgres_url: x\n")
    assert keeping_connections(postgres) is postgres
    assert keeping_connections(None) is None
    sqlite = ConfigurableClassData(
        "dagster._core.storage.sqlite_storage", "DagsterSqliteStorage", "base_dir: /x\n"
    )
    kept = keeping_connections(sqlite)
    assert kept is not None and kept.config_yaml == sqlite.config_yaml
    assert kept.class_name == "SqliteStorageKeepingConnections"


def _schema(database: Path) -> tuple[set[str], list[str], str]:
    # sqlite3's own context manager commits but does not close.
    with closing(sqlite3.connect(database)) as conn:
        tables = {sql for (sql,) in conn.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL")}
        revision = [r for (r,) in conn.execute("SELECT version_num FROM alembic_version")]
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    return tables, revision, journal


def test_run_databases_copied_from_the_first_are_what_dagster_makes(tmp_path: Path) -> None:
    ours_home, dagsters_home = tmp_path / "ours", tmp_path / "dagsters"
    with open_instance(ours_home) as instance:
        first, second = (tiny.execute_in_process(instance=instance).run_id for _ in range(2))
    runs = ours_home / "dagster_home" / "history" / "runs"
    dagsters_home.mkdir()
    with dg.DagsterInstance.from_config(str(dagsters_home)) as dagsters:
        theirs = tiny.execute_in_process(instance=dagsters).run_id
    # Dagster's class goes on writing into a database that was copied.
    with dg.DagsterInstance.from_config(str(ours_home / "dagster_home")) as dagsters:
        dagsters.report_engine_event("appended by Dagster's class", dagsters.get_run_by_id(second))
    dagsters_db = dagsters_home / "history" / "runs" / f"{theirs}.db"
    assert _schema(runs / f"{first}.db") == _schema(runs / f"{second}.db") == _schema(dagsters_db)
    assert _schema(dagsters_db)[1] and _schema(dagsters_db)[2] == "wal"
    assert (runs / f"{second}.db").stat().st_mode == dagsters_db.stat().st_mode
    # No partial copy is left behind.
    assert not [p.name for p in runs.iterdir() if p.name.endswith(".db-new")]
    with open_instance(ours_home) as instance:
        messages = [e.message for e in instance.all_logs(second)]
    assert "hello" in messages and "appended by Dagster's class" in messages


def test_a_run_database_already_there_is_not_replaced(tmp_path: Path) -> None:
    with open_instance(tmp_path) as instance:
        storage = instance.event_log_storage
        assert isinstance(storage, SqliteEventLogStorageKeepingConnections)
        made = Path(storage.path_for_shard("some-run"))
        made.write_bytes(b"made by another process")
        assert storage._new_run_database("some-run") is False
        assert made.read_bytes() == b"made by another process"
        assert storage._new_run_database("another-run") is True
        assert _schema(Path(storage.path_for_shard("another-run")))[2] == "wal"


def test_a_table_found_is_not_asked_about_again_one_missing_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    dagsters = SqliteEventLogStorage.has_table

    def counted(self: SqliteEventLogStorage, table_name: str) -> bool:
        asked.append(table_name)
        return dagsters(self, table_name)

    monkeypatch.setattr(SqliteEventLogStorage, "has_table", counted)
    with open_instance(tmp_path) as instance:
        storage = instance.event_log_storage
        asked.clear()
        assert storage.has_table("asset_check_executions") and storage.has_table("asset_check_executions")
        assert not storage.has_table("no_such_table") and not storage.has_table("no_such_table")
        assert asked == ["asset_check_executions", "no_such_table", "no_such_table"]
        # What Dagster asks before storing each asset check event.
        assert storage.supports_asset_checks and storage.supports_asset_checks
        assert len(asked) == 3


def test_without_hard_links_runs_get_dagsters_own_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(source: str, target: str) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    with open_instance(tmp_path) as instance:
        run_id = tiny.execute_in_process(instance=instance).run_id
        assert "hello" in [e.message for e in instance.all_logs(run_id)]
    runs = tmp_path / "dagster_home" / "history" / "runs"
    assert _schema(runs / f"{run_id}.db")[2] == "wal"
    assert not [p.name for p in runs.iterdir() if p.name.endswith(".db-new")]


def test_the_clis_commits_wait_for_no_fsync_and_the_databases_stay_in_wal_mode(tmp_path: Path) -> None:
    # SQLite's PRAGMA synchronous: 1 is NORMAL, 2 is FULL (its default).
    with open_instance(tmp_path) as instance:
        storage = instance.event_log_storage
        assert isinstance(storage, SqliteEventLogStorageKeepingConnections)
        run_id = tiny.execute_in_process(instance=instance).run_id
        for shard in ("index", run_id):
            with storage._connect(shard) as conn:
                assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        with instance.run_storage.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    runs = tmp_path / "dagster_home" / "history" / "runs"
    # A connection of another process (the UI's, the daemon's) keeps SQLite's default.
    for database in (runs / f"{run_id}.db", runs.parent / "runs.db"):
        with closing(sqlite3.connect(database)) as conn:
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_the_run_storage_keeps_one_connection_and_closes_it_with_the_instance(tmp_path: Path) -> None:
    runs_db = tmp_path / "dagster_home" / "history" / "runs.db"
    with open_instance(tmp_path) as instance:
        assert isinstance(instance.run_storage, SqliteRunStorageKeepingConnection)
        tiny.execute_in_process(instance=instance)
        with instance.run_storage.connect() as first:
            kept = first.connection.dbapi_connection
        with instance.run_storage.connect() as second:
            assert second.connection.dbapi_connection is kept
        assert str(runs_db) in _held_open()
    assert str(runs_db) not in _held_open()
