"""The asset graph under Dagster: materialize() in-process, checks, partitions and the sensor."""

from __future__ import annotations

import gzip
import shutil

import dagster as dg

from assets.definitions import defs
from assets.destination import EngramiaDestination
from assets.engramia import count_reconciliation
from assets.jobs import ALL_ASSETS, DUMP_TAG, SCOPE_ASSETS, ingest_job, scope_job
from assets.partitions import SCOPES
from assets.resources import BackfillSettings
from pipelines.load.records import kept_patterns
from pipelines.tools import shapes
from tests.support import graph

BACKFILL_ASSETS = ALL_ASSETS
SCOPE_CHECKS = [spec for asset in SCOPE_ASSETS for spec in asset.check_specs]


_ingest, _scope_run, _checks, _tick = graph.ingest, graph.scope_run, graph.checks, graph.tick


def test_definitions_load():
    assert {a.key.to_user_string() for a in defs.assets} == {
        "raw_thread_exports",
        "messages",
        "paired_patterns",
        "scored_patterns",
        "engramia_scopes",
    }
    assert defs.resolve_job_def("scope_job").partitions_def == SCOPES
    assert defs.resolve_sensor_def("landing_sensor").default_status == dg.DefaultSensorStatus.RUNNING


def test_whole_graph_on_the_sample(layout, sample_dir, instance):
    ingest = _ingest(layout, sample_dir, instance)
    assert ingest.success and _checks(ingest) == {"dump_lines_reconcile": True}
    scopes = instance.get_dynamic_partitions(SCOPES.name)
    assert sorted(scopes) == ["default__asst_analyst", "default__asst_coder", "default__asst_support"]
    for scope in scopes:
        result = _scope_run(layout, sample_dir, instance, scope)
        assert result.success
        checks = _checks(result)
        assert len(checks) == len(SCOPE_CHECKS) == 9
        assert all(checks.values()), (scope, checks)
        load = result.asset_materializations_for_node("engramia_scopes")[0].metadata
        assert load["pattern_count_after"].value == load["pattern_count_before"].value + load["stored"].value
    # A second pass over every scope stores nothing and still passes its checks.
    for scope in scopes:
        again = _scope_run(layout, sample_dir, instance, scope)
        meta = again.asset_materializations_for_node("engramia_scopes")[0].metadata
        assert meta["sent"].value == 0 and meta["stored"].value == 0
        assert all(_checks(again).values())


def test_a_broken_count_fails_its_check(layout, sample_dir, instance):
    _ingest(layout, sample_dir, instance)
    scope = "default__asst_coder"
    _scope_run(layout, sample_dir, instance, scope)
    # Lose a staged message file behind the pipeline's back: the reconciliation must notice.
    victim = next(layout.messages(scope).glob("*.parquet"))
    victim.unlink()
    result = _scope_run(layout, sample_dir, instance, scope, raise_on_error=False)
    checks = _checks(result)
    assert checks["lines_reconcile"] is False
    # The check blocks: nothing downstream of a scope that does not reconcile is loaded.
    assert result.asset_materializations_for_node("engramia_scopes") == []


def test_sensor_requests_ingest_then_scope_runs(layout, tmp_path, sample_dir, instance):
    landing = tmp_path / "landing"
    landing.mkdir()
    settings = BackfillSettings(data_dir=str(layout.root), landing=str(landing), settle_seconds=0)
    assert _tick(instance, settings).run_requests == []

    first = sorted(sample_dir.glob("*.ndjson"))[0]
    shutil.copy(first, landing / first.name)
    result = _tick(instance, settings)
    [request] = result.run_requests
    assert request.job_name == ingest_job.name and request.run_key.startswith("ingest:")

    _ingest(layout, landing, instance)
    result = _tick(instance, settings)
    assert {r.job_name for r in result.run_requests} == {scope_job.name}
    assert sorted(r.partition_key for r in result.run_requests) == [
        "default__asst_analyst",
        "default__asst_coder",
        "default__asst_support",
    ]
    # Same state, same run keys: nothing new would run twice.
    again = _tick(instance, settings)
    assert [r.run_key for r in again.run_requests] == [r.run_key for r in result.run_requests]


def test_sensor_asks_nothing_of_a_scope_while_a_run_of_it_is_under_way(
    layout, tmp_path, sample_dir, instance
):
    """A tick during a scope run sees the dumps the run has not staged yet, a set no run key named: the
    scope waits for the run to end rather than get a second one."""
    landing = tmp_path / "landing"
    shutil.copytree(sample_dir, landing)
    settings = BackfillSettings(data_dir=str(layout.root), landing=str(landing), settle_seconds=0)
    _ingest(layout, landing, instance)
    everything = {r.partition_key for r in _tick(instance, settings).run_requests}
    scope = "default__asst_coder"
    assert scope in everything

    run = dg.DagsterRun(
        job_name=scope_job.name, status=dg.DagsterRunStatus.STARTED, tags={"dagster/partition": scope}
    )
    instance.add_run(run)
    assert {r.partition_key for r in _tick(instance, settings).run_requests} == everything - {scope}

    instance.report_run_failed(run)
    assert {r.partition_key for r in _tick(instance, settings).run_requests} == everything


def test_sensor_sees_compressed_dumps_and_api_pages(layout, tmp_path, instance):
    """A gzipped JSON array of API messages and a saved messages.list page: an ingest, then scope runs."""
    landing = tmp_path / "landing"
    landing.mkdir()
    settings = BackfillSettings(data_dir=str(layout.root), landing=str(landing), settle_seconds=0)
    shaped = tmp_path / "shaped"
    (array,) = shapes.write_shape("assistants-array-desc", shaped / "array")
    (landing / "messages.json.gz").write_bytes(gzip.compress(array.read_bytes()))
    page = shapes.write_shape("assistants-pages-desc", shaped / "pages")[0]
    shutil.copy(page, landing / page.name)
    assert sorted(p.name for p in landing.iterdir()) == ["messages.json.gz", "thread_ties-page01.json"]

    result = _tick(instance, settings)
    # One ingest run per dump.
    assert [r.job_name for r in result.run_requests] == [ingest_job.name] * 2
    assert len({r.tags[DUMP_TAG] for r in result.run_requests}) == 2

    ingest = _ingest(layout, landing, instance)
    assert ingest.success and _checks(ingest) == {"dump_lines_reconcile": True}
    meta = ingest.asset_materializations_for_node("raw_thread_exports")[0].metadata
    assert meta["new_dumps"].value == 2 and meta["formats"].value == {"assistants-api": 2}
    result = _tick(instance, settings)
    assert {r.job_name for r in result.run_requests} == {scope_job.name}
    assert sorted(r.partition_key for r in result.run_requests) == [
        "default__asst_coder",
        "default__asst_review",
    ]


def test_a_wiped_store_fails_the_count_check(layout, sample_dir, instance):
    _ingest(layout, sample_dir, instance)
    scope = "default__asst_coder"
    _scope_run(layout, sample_dir, instance, scope)
    shutil.rmtree(layout.engramia)
    result = count_reconciliation(layout, scope, EngramiaDestination())
    assert result.passed is False
    assert result.metadata["in_store_per_ledger"].value == 5
    assert result.metadata["pattern_count_now"].value == 0


def test_a_scope_no_dump_produced_fails_at_once_and_records_nothing(layout, sample_dir, instance):
    _ingest(layout, sample_dir, instance)
    typo = "default__asst_cdoer"
    # The launchpad lets a user add a partition key by hand.
    instance.add_dynamic_partitions(SCOPES.name, [typo])
    result = _scope_run(layout, sample_dir, instance, typo, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.user_failure_data.description
    assert typo in message and "default__asst_coder" in message
    assert result.get_asset_materialization_events() == []
    assert result.get_asset_check_evaluations() == []
    assert not layout.messages(typo).exists() and not layout.loads(typo).exists()


def test_jobs_run_in_one_process_and_loads_claim_their_destinations_pool():
    for name in ("ingest_job", "scope_job"):
        assert defs.resolve_job_def(name).executor_def is dg.in_process_executor
    # No pool fixed on the asset: the load claims its destination's (assets/pools.py).
    assert defs.resolve_assets_def("engramia_scopes").op.pool is None


def test_metadata_renders_as_tables_without_rest_keys_on_an_embedded_load(layout, sample_dir, instance):
    _ingest(layout, sample_dir, instance)
    result = _scope_run(layout, sample_dir, instance, "default__asst_coder")
    meta = result.asset_materializations_for_node("messages")[0].metadata
    preview = meta["preview"]
    assert isinstance(preview, dg.TableMetadataValue) and preview.records
    assert [c.name for c in preview.schema.columns] == [
        "thread_id",
        "message_id",
        "role",
        "created_at",
        "text",
    ]
    for record in preview.records:
        # Shortened texts on one line; timestamps to the second.
        assert len(record.data["text"]) <= 80 and "\n" not in record.data["text"]
        assert len(record.data["created_at"]) == len("2025-01-01 00:00:00")
    columns = {c.name: c.type for c in meta["dagster/column_schema"].schema.columns}
    assert columns["created_at"] == "timestamp" and columns["line_no"] == "int"
    load = result.asset_materializations_for_node("engramia_scopes")[0].metadata
    assert {"requests", "rate_limited", "redactions", "server_version"}.isdisjoint(load)
    # The kept patterns' preview (found on their ids first) is the head of the table sorted by id.
    scored = result.asset_materializations_for_node("scored_patterns")[0].metadata["preview"]
    kept = kept_patterns(layout, "default__asst_coder").collect()
    assert [r.data["pattern_id"] for r in scored.records] == kept["pattern_id"].head(5).to_list()


def test_no_preview_or_beta_warning_while_loading_and_running(layout, sample_dir, instance):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", dg.PreviewWarning)
        warnings.simplefilter("error", dg.BetaWarning)
        import importlib

        import assets.definitions

        importlib.reload(assets.definitions)
        result = _ingest(layout, sample_dir, instance)
    assert result.success
