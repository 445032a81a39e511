"""Destination none: every table and every check that needs no store, nothing loaded, and the load's checks
skipped (never passed) with the reason stated; a later run with a destination loads what was scored."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from assets.cli.main import main
from assets.destination import LOAD_SKIPPED_REASON, EngramiaDestination
from assets.jobs import SCOPE_ASSETS
from checks.accounting import LOAD_ACCOUNTS_FOR_KEPT
from checks.loading import PATTERN_COUNT_RECONCILES, RECALL_SPOT_CHECK
from pipelines.load.plan import LOAD_TERMS
from pipelines.tables import DataLayout
from tests.support import graph

LOAD_CHECKS = {PATTERN_COUNT_RECONCILES.name, RECALL_SPOT_CHECK.name, LOAD_ACCOUNTS_FOR_KEPT.name}
STORE_FREE_CHECKS = {s.name for a in SCOPE_ASSETS for s in a.check_specs} - LOAD_CHECKS


@pytest.fixture(autouse=True)
def _no_dagster_home(monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)


def _run(capsys, *args: str) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", *args, "--json", "--no-progress"])
    report = json.loads(capsys.readouterr().out)
    assert report["exit_code"] == int(exit_info.value.code) == 0, report["failures"]
    return report


def test_the_cli_transforms_without_loading_then_a_destination_loads_what_was_scored(
    tmp_path, capsys, sample_dir
):
    data = tmp_path / "d"
    common = ("--input", str(sample_dir), "--data-dir", str(data))
    report = _run(capsys, *common, "--destination", "none")
    assert report["ok"] and report["destination"] == "none" and report["engramia_store"] is None
    assert report["load_skipped"] == LOAD_SKIPPED_REASON and not report["failed_checks"]
    assert not (data / "engramia").exists()  # no store was opened, let alone written
    layout = DataLayout.at(data)
    for scope, s in report["scopes"].items():
        assert s["kept"] > 0 and s["run_id"], scope
        # Nothing loaded, every kept pattern skipped by design: the terms add up, no load to reconcile.
        assert s["loaded"] == 0 and s["skipped"] == s["kept"] and s["load_adds_up"]
        assert s["load_reconciles"] is None and s["load_skipped"] == LOAD_SKIPPED_REASON
        assert s["lines_reconcile"] and s["messages_reconcile"]
        assert layout.scored(scope).exists()

    # The same command again has nothing to do; a run with the embedded store loads every kept pattern.
    again = _run(capsys, *common, "--destination", "none")
    assert again["ingest_run_id"] is None and all(s["run_id"] is None for s in again["scopes"].values())
    assert all(s["skipped"] == s["kept"] and s["load_adds_up"] for s in again["scopes"].values())
    loaded = _run(capsys, *common)
    assert loaded["load_skipped"] is None and loaded["engramia_store"] == str(data / "engramia")
    for scope, s in loaded["scopes"].items():
        assert s["loaded"] == report["scopes"][scope]["kept"] == s["kept"], scope
        assert s["load_reconciles"] and s["pattern_count_after"] == s["kept"]
        assert sum(s[t] for t in LOAD_TERMS) == s["kept"]


def test_a_scope_run_with_destination_none_skips_the_load_and_its_checks(layout, sample_dir, instance):
    assert graph.ingest(layout, sample_dir, instance).success
    scope = "default__asst_coder"
    result = graph.scope_run(layout, sample_dir, instance, scope, EngramiaDestination(mode="none"))
    assert result.success
    checks = graph.checks(result)
    assert set(checks) == STORE_FREE_CHECKS and all(checks.values())  # the load's checks did not run
    assert not graph.loaded(result)  # not materialized: nothing reached Engramia
    [observation] = [
        e.asset_observation_data.asset_observation
        for e in result.get_asset_observation_events()
        if e.asset_key == dg.AssetKey("engramia_scopes")
    ]
    assert observation.partition == scope
    assert observation.metadata["load_skipped"].value == LOAD_SKIPPED_REASON
    assert observation.metadata["loaded"].value == 0
    assert layout.scored(scope).exists() and not layout.engramia.exists()
    # Each load check stays planned, never evaluated: the UI resolves it as skipped once the run ended.
    for name in LOAD_CHECKS:
        record = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey("engramia_scopes"), name)]
        )
        execution = record.get(dg.AssetCheckKey(dg.AssetKey("engramia_scopes"), name))
        assert execution is not None and execution.status.value == "PLANNED", name

    # The same scope with a destination loads what was scored, and every check runs and passes.
    loaded = graph.scope_run(layout, sample_dir, instance, scope)
    assert loaded.success and graph.loaded(loaded)
    assert set(graph.checks(loaded)) == STORE_FREE_CHECKS | LOAD_CHECKS and all(graph.checks(loaded).values())
    meta = loaded.asset_materializations_for_node("engramia_scopes")[0].metadata
    assert meta["stored"].value == meta["kept"].value > 0
