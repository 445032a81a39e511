"""The CLI's instance keeps its SQLite connections, over the files Dagster's own class reads and writes."""

import os
from pathlib import Path

import dagster as dg
from dagster._serdes import ConfigurableClassData

from assets.cli.instance import open_instance
from assets.cli.instance_storage import (
    RUN_DATABASES_KEPT,
    SqliteEventLogStorageKeepingConnections,
    keeping_connections,
)


@dg.op
def say(context: dg.OpExecutionContext) -> int:
    context.log.info("hello")
    return 1


@dg.job
def tiny() -> None:
    say()


def _open_databases(home: Path) -> set[str]:
    """The event log's database files this process holds open."""
    runs = str(home / "history" / "runs")
    held = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(runs) and target.endswith(".db"):
            held.add(target)
    return held


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
