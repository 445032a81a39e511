"""The console entry point on the bundled sample: summary figures, reconciliation, re-runs, recall."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import duckdb
import pytest

from assets.cli.main import main
from pipelines.load.store import engramia_scope, read_only_memory

EXPECTED = {
    # scope: (messages, quarantined, repeats, patterns, unpaired, duplicates)
    "default__asst_analyst": (7, 0, 1, 3, 1, 0),
    "default__asst_coder": (13, 0, 0, 5, 1, 0),
    "default__asst_support": (9, 0, 0, 3, 3, 1),
}


def _run(capsys, *args: str) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", *args, "--json"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0, out
    return json.loads(out)


def test_sample_end_to_end(tmp_path, sample_dir, capsys, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    data = tmp_path / "data"
    summary = _run(capsys, "--input", str(sample_dir), "--data-dir", str(data))
    assert summary["failed_scopes"] == {} and summary["failed_checks"] == {}
    assert summary["unscoped_quarantined"] == 1
    for scope, (messages, quarantined, repeats, patterns, unpaired, duplicates) in EXPECTED.items():
        s = summary["scopes"][scope]
        assert (
            s["messages"],
            s["quarantined"],
            s["repeats"],
            s["patterns"],
            s["unpaired"],
            s["duplicates"],
        ) == (messages, quarantined, repeats, patterns, unpaired, duplicates)
        assert s["lines_in"] == s["messages"] + s["quarantined"] + s["repeats"]
        assert s["messages_reconcile"] and s["load_reconciles"]
        assert s["loaded"] == patterns - duplicates
        assert s["pattern_count_after"] == s["pattern_count_before"] + s["loaded"]
    lines = sum(1 for p in sample_dir.glob("*.ndjson") for _ in p.open())
    assert lines == summary["unscoped_quarantined"] + sum(
        s["messages"] + s["quarantined"] + s["repeats"] for s in summary["scopes"].values()
    )

    # The guide's own example is findable in Engramia.
    memory = read_only_memory(data / "engramia")
    with engramia_scope("default", "asst_coder"):
        matches = memory.recall("Build a CSV parser", limit=3, deduplicate=False)
    assert matches[0].pattern.task == "Build a CSV parser"
    assert matches[0].reuse_tier == "duplicate" and "csv" in matches[0].pattern.design["code"]
    assert matches[0].pattern.design["thread_id"] == "thread_abc"

    again = _run(capsys, "--input", str(sample_dir), "--data-dir", str(data))
    for scope, s in again["scopes"].items():
        assert s["loaded"] == 0
        assert s["pattern_count_after"] == summary["scopes"][scope]["pattern_count_after"]

    # Checks and re-runs leave the stored patterns as loaded (recall would otherwise bump their scores).
    stored = [json.loads(p.read_text()) for p in (data / "engramia").rglob("patterns/*.json")]
    assert len(stored) == 10
    assert {(p["success_score"], p["reuse_count"]) for p in stored} == {(5.0, 0)}

    con = duckdb.connect(str(data / "warehouse.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM kept_patterns").fetchone()[0] == 10
    assert con.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 1
    assert con.execute("SELECT count(*) FROM messages WHERE role = 'tool'").fetchone()[0] == 1
    assert con.execute("SELECT count(*) FROM duplicates WHERE kept_task IS NOT NULL").fetchone()[0] == 1
    assert con.execute("SELECT count(DISTINCT scope) FROM messages").fetchone()[0] == 3
    assert (data / "dagster_home").is_dir()


def test_bad_input_path_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--input", str(tmp_path / "nope"), "--data-dir", str(tmp_path / "d"), "--json"])
    assert exit_info.value.code == 2
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["exit_code"] == 2
    assert report["failures"] == [
        f"--input {tmp_path / 'nope'}: not found; give a dump file or a folder of dumps"
    ]


def test_cli_runs_are_the_named_jobs_with_their_configuration(tmp_path, sample_dir, capsys, monkeypatch):
    import dagster as dg

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    data = tmp_path / "data"
    _run(capsys, "--input", str(sample_dir), "--data-dir", str(data), "--pairing", "strict")
    home = data / "dagster_home"
    # The instance has the project's configuration (run queue, pools, no telemetry), as under `make ui`.
    assert "engramia_writes" in (home / "dagster.yaml").read_text()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
    assert sorted(r.job_name for r in runs) == ["ingest_job", "scope_job", "scope_job", "scope_job"]
    scope_runs = [r for r in runs if r.job_name == "scope_job"]
    assert sorted(r.tags["dagster/partition"] for r in scope_runs) == sorted(EXPECTED)
    for run in runs:
        settings = run.run_config["resources"]["settings"]["config"]
        # Re-executing from the UI replays exactly what the CLI was told.
        assert settings["data_dir"] == str(data) and settings["pairing"] == "strict"
        assert run.run_config["resources"]["engramia"]["config"]["mode"] == "embedded"


def test_a_cli_run_re_executes_from_the_ui(tmp_path, sample_dir, capsys, monkeypatch):
    """The UI's *Re-execute* (its GraphQL mutation) on a CLI scope run launches it again through the
    code location of workspace.yaml, with the CLI's run config, and it succeeds, on the same folders: the
    command was run from a folder of its own with relative paths, the UI's run process runs elsewhere."""
    import shutil

    import dagster as dg
    from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

    from assets.cli.instance import INSTANCE_TEMPLATE

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    data = tmp_path / "data"
    home = data / "dagster_home"
    home.mkdir(parents=True)
    shutil.copyfile(INSTANCE_TEMPLATE, home / "dagster.yaml")
    # No daemon here to dequeue runs, as `dagster dev` has: launch them at once.
    with (home / "dagster.yaml").open("a") as f:
        f.write("run_coordinator:\n  module: dagster.core.run_coordinator\n  class: DefaultRunCoordinator\n")
    root = Path.cwd()
    monkeypatch.chdir(tmp_path)
    _run(capsys, "--input", os.path.relpath(sample_dir), "--data-dir", "data")
    monkeypatch.chdir(root)
    assert (data / "staged" / "_settled" / "scope=default__asst_coder.json").exists()
    mutation = """
    mutation($params: ReexecutionParams!) {
      launchPipelineReexecution(reexecutionParams: $params) {
        __typename
        ... on LaunchRunSuccess { run { runId } }
        ... on PythonError { message }
      }
    }"""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        parent = next(
            r for r in instance.get_runs() if r.tags.get("dagster/partition") == "default__asst_coder"
        )
        with define_out_of_process_context("workspace.yaml", None, instance) as context:
            result = execute_dagster_graphql(
                context, mutation, {"params": {"parentRunId": parent.run_id, "strategy": "ALL_STEPS"}}
            )
            launched = result.data["launchPipelineReexecution"]
            assert launched["__typename"] == "LaunchRunSuccess", launched
            run_id = launched["run"]["runId"]
            deadline = time.monotonic() + 120
            while not instance.get_run_by_id(run_id).is_finished and time.monotonic() < deadline:
                time.sleep(0.5)
        child = instance.get_run_by_id(run_id)
    assert child.status == dg.DagsterRunStatus.SUCCESS
    assert child.job_name == "scope_job" and child.tags["dagster/partition"] == "default__asst_coder"
    assert child.run_config == parent.run_config
    settings = child.run_config["resources"]["settings"]["config"]
    assert (settings["data_dir"], settings["landing"]) == (str(data), str(sample_dir))
    # The re-executed run started in the command's data folder: it cleared the scope's record there.
    assert not (data / "staged" / "_settled" / "scope=default__asst_coder.json").exists()
