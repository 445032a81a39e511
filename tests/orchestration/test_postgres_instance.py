"""The Dagster instance on PostgreSQL: same run queue and pools as the SQLite default, and the sensor, the
ingest and the scope runs recorded in a real server."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml
from dagster._config.validate import validate_config
from dagster._core.instance.config import dagster_instance_config
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_k8s import K8sRunLauncher
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

from assets.cli.instance import INSTANCE_TEMPLATE
from assets.jobs import DUMP_TAG, ingest_job, scope_job
from assets.partitions import SCOPES
from assets.resources import BackfillSettings
from tests.support.graph import checks, ingest, scope_run, tick
from tests.support.postgres_instance import POSTGRES_TEMPLATE

K8S_INSTANCE = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "dagster.yaml"


def test_the_postgres_instance_keeps_the_default_instances_limits():
    default = yaml.safe_load(INSTANCE_TEMPLATE.read_text())
    postgres = yaml.safe_load(POSTGRES_TEMPLATE.read_text())
    assert postgres["concurrency"] == default["concurrency"]
    assert postgres["telemetry"] == default["telemetry"]
    # The password is read from the environment, never written in the file.
    assert postgres["storage"]["postgres"]["postgres_db"]["password"] == {"env": "DAGSTER_PG_PASSWORD"}


def test_the_kubernetes_instance_is_the_postgres_one_with_a_valid_k8s_run_launcher():
    postgres = yaml.safe_load(POSTGRES_TEMPLATE.read_text())
    k8s = yaml.safe_load(K8S_INSTANCE.read_text())
    for section in ("storage", "run_coordinator", "concurrency", "telemetry"):
        assert k8s[section] == postgres[section], section
    # The whole file passes Dagster's instance schema, and the launcher's part dagster-k8s's own schema.
    config, _ = dagster_instance_config(str(K8S_INSTANCE.parent))
    launcher = config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    result = validate_config(K8sRunLauncher.config_type(), launcher["config"])
    assert result.success, result.errors
    assert "BACKFILL_DATA_DIR=/data" in launcher["config"]["env_vars"]
    assert {m["mountPath"] for m in launcher["config"]["volume_mounts"]} == {"/data"}


def test_sensor_ingest_and_scope_runs_through_postgres(
    pg_instance, postgres_server, layout, tmp_path, sample_dir
):
    instance = pg_instance
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
    limits = {
        (r["key"], str(r.get("value")))
        for r in instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
    }
    assert ("assistants_backfill/scope", "{'applyLimitPerUniqueValue': True}") in limits
    assert instance.get_concurrency_config().pool_config.default_pool_limit == 1

    landing = tmp_path / "landing"
    landing.mkdir()
    for dump in sorted(sample_dir.glob("*.ndjson")):
        shutil.copy(dump, landing / dump.name)
    settings = BackfillSettings(data_dir=str(layout.root), landing=str(landing), settle_seconds=0)
    requests = tick(instance, settings).run_requests
    assert [r.job_name for r in requests] == [ingest_job.name] * 2
    assert len({r.tags[DUMP_TAG] for r in requests}) == 2

    ingested = ingest(layout, landing, instance)
    assert ingested.success and checks(ingested) == {"dump_lines_reconcile": True}
    requests = tick(instance, settings).run_requests
    assert {r.job_name for r in requests} == {scope_job.name}
    scopes = sorted(r.partition_key for r in requests)
    assert scopes == sorted(instance.get_dynamic_partitions(SCOPES.name)) and len(scopes) == 3
    for scope in scopes:
        result = scope_run(layout, landing, instance, scope)
        assert result.success and all(checks(result).values()), (scope, checks(result))
    assert tick(instance, settings).run_requests == []

    # The runs and their events are rows of the server's tables, not of a file next to DAGSTER_HOME.
    assert not list((tmp_path / "dagster_home").glob("**/*.db"))
    with postgres_server.connect(os.environ["DAGSTER_PG_DB"]) as con, con.cursor() as cur:
        cur.execute("SELECT status, count(*) FROM runs GROUP BY status")
        assert dict(cur.fetchall()) == {"SUCCESS": 4}
        cur.execute("SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'")
        assert cur.fetchone()[0] == 1 + 3 * 4
