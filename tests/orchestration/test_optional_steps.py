"""An optional step that fails (the warehouse views) says so in the log, the asset's metadata and the
run's summary, and the run goes on: every scope is still loaded."""

from __future__ import annotations

import logging

import dagster as dg

from pipelines.tables import DataLayout
from tests.support.cli import cli
from tests.support.graph import ingest


def block_views(layout: DataLayout) -> None:
    """A folder where the DuckDB file should be: DuckDB cannot open it."""
    layout.warehouse.mkdir(parents=True)


def test_views_that_cannot_be_refreshed_are_logged_and_in_the_metadata(layout, sample_dir):
    block_views(layout)
    with dg.instance_for_test() as instance:
        result = ingest(layout, sample_dir, instance)
        assert result.success
        logged = [
            e.user_message
            for e in instance.all_logs(result.run_id)
            if e.level == logging.WARNING and "warehouse views not refreshed" in e.user_message
        ]
    assert len(logged) == 1
    meta = result.asset_materializations_for_node("raw_thread_exports")[0].metadata
    assert meta["warehouse_views"].value.startswith("not refreshed: ")


def test_views_that_cannot_be_refreshed_are_warnings_of_the_run_summary(
    sample_dir, capsys, tmp_path, monkeypatch
):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    data = DataLayout.at(tmp_path / "data")
    block_views(data)
    summary = cli(capsys, "run", "--input", str(sample_dir), "--data-dir", str(data.root))
    assert summary["failed_scopes"] == {} and summary["ok"] and len(summary["scopes"]) == 3
    views = [w for w in summary["warnings"] if "warehouse views not refreshed" in w]
    assert [w.split(":")[0] for w in views] == ["raw_thread_exports"] + ["engramia_scopes"] * 3
