"""A run with nothing new answers from each scope's record of its last complete run, without running any
scope; anything that could change a scope (a new dump, other options, a run started elsewhere, a
rollback) makes the next run do the work again. Progress reaches stderr with --json too."""

from __future__ import annotations

import json
import shutil

import dagster as dg
import pytest

from assets.cli.instance import open_instance
from assets.cli.main import _will_ingest, main
from pipelines.ingest.catalog import read_scopes, scope_names
from pipelines.load.rollback import rollback_embedded
from pipelines.scoring.signals import DEFAULT_RULES
from pipelines.tables import DataLayout
from tests.conftest import msg, write_ndjson


@pytest.fixture(autouse=True)
def _no_dagster_home(monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)


def _run(capsys, *args: str, progress: bool = False) -> tuple[dict, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", *args, "--json", *([] if progress else ["--no-progress"])])
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert report["exit_code"] == int(exit_info.value.code) == 0, report["failures"]
    return report, out.err


def _scope_runs(data) -> int:
    with open_instance(data) as instance:
        return len(instance.get_runs(dg.RunsFilter(job_name="scope_job")))


def test_a_run_with_nothing_new_runs_no_scope_and_reports_the_last_runs_figures(tmp_path, capsys, sample_dir):
    landing, data = tmp_path / "in", tmp_path / "d"
    shutil.copytree(sample_dir, landing)
    first, _ = _run(capsys, "--input", str(landing), "--data-dir", str(data))
    runs = _scope_runs(data)
    again, _ = _run(capsys, "--input", str(landing), "--data-dir", str(data))
    assert _scope_runs(data) == runs  # no scope ran, no ingest ran
    assert again["ingest_run_id"] is None and again["this_run"]["dumps"] == 0
    for scope, s in again["scopes"].items():
        before = first["scopes"][scope]
        assert s["up_to_date_since"] == before["run_id"] and s["run_id"] is None
        assert (s["loaded"], s["already_loaded"]) == (0, before["loaded"]) and s["load_adds_up"]
        assert s["pattern_count_before"] == s["pattern_count_after"] == before["pattern_count_after"]
        assert (s["kept"], s["messages"], s["patterns"]) == (
            before["kept"],
            before["messages"],
            before["patterns"],
        )

    # A new dump: ingested, and the one scope it touches runs again; the others answer from their record.
    write_ndjson(
        landing / "more.ndjson",
        [
            msg("t_new", "n1", "user", "how do I sort a list of dicts by a key", 5000, "asst_coder"),
            msg("t_new", "n2", "assistant", "use sorted with a key function", 5001, "asst_coder"),
        ],
    )
    third, _ = _run(capsys, "--input", str(landing), "--data-dir", str(data))
    assert third["this_run"]["dumps"] == 1 and _scope_runs(data) == runs + 1
    assert third["scopes"]["default__asst_coder"]["loaded"] == 1
    assert all(s["up_to_date_since"] for k, s in third["scopes"].items() if k != "default__asst_coder")

    # Other options than the recorded run's: the scopes run again.
    runs = _scope_runs(data)
    other, _ = _run(capsys, "--input", str(landing), "--data-dir", str(data), "--min-score", "2.5")
    assert _scope_runs(data) == runs + len(other["scopes"])
    assert all(s["run_id"] for s in other["scopes"].values())


def test_paths_count_as_the_files_they_name(tmp_path, capsys, sample_dir, monkeypatch):
    """The same inputs spelled otherwise (relative paths from another folder, a symlinked landing folder, a
    data folder moved elsewhere) have nothing new; a rules file edited in place makes the scopes run again."""
    landing, data = tmp_path / "in", tmp_path / "d"
    shutil.copytree(sample_dir, landing)
    rules = tmp_path / "rules.yaml"
    shutil.copy(DEFAULT_RULES, rules)
    options = ("--signals", "--signal-rules")
    first, _ = _run(capsys, "--input", str(landing), "--data-dir", str(data), *options, str(rules))
    runs = _scope_runs(data)

    monkeypatch.chdir(tmp_path)
    relative, _ = _run(capsys, "--input", "in", "--data-dir", "d", *options, "rules.yaml")
    (tmp_path / "link").symlink_to(landing)
    linked, _ = _run(capsys, "--input", "link", "--data-dir", "./d/../d", *options, str(rules))
    assert _scope_runs(data) == runs
    for report in (relative, linked):
        assert report["ingest_run_id"] is None
        assert {k: s["up_to_date_since"] for k, s in report["scopes"].items()} == {
            k: s["run_id"] for k, s in first["scopes"].items()
        }

    moved = tmp_path / "elsewhere"
    data.rename(moved)
    again, _ = _run(capsys, "--input", str(landing), "--data-dir", str(moved), *options, str(rules))
    assert _scope_runs(moved) == runs and all(s["up_to_date_since"] for s in again["scopes"].values())

    # The rules edited in place: what the scopes are scored by has changed, so they run again.
    rules.write_text(rules.read_text() + "\n# tuned\n")
    edited, _ = _run(capsys, "--input", str(landing), "--data-dir", str(moved), *options, str(rules))
    assert _scope_runs(moved) == runs + len(edited["scopes"])
    assert all(s["run_id"] for s in edited["scopes"].values())


def test_a_rollback_or_a_run_started_elsewhere_makes_the_next_run_do_the_work(tmp_path, capsys, sample_dir):
    data = tmp_path / "d"
    _run(capsys, "--input", str(sample_dir), "--data-dir", str(data))
    layout = DataLayout.at(data)
    scope = "default__asst_coder"
    rollback_embedded(layout, scope, *scope_names(layout, scope))
    report, _ = _run(capsys, "--input", str(sample_dir), "--data-dir", str(data))
    assert report["scopes"][scope]["loaded"] == report["scopes"][scope]["kept"] > 0

    # A scope run launched from the UI or the sensor clears the scope's record when it starts.
    assert layout.settled(scope).exists()
    from dagster import materialize

    from assets.destination import EngramiaDestination
    from assets.jobs import SCOPE_ASSETS
    from assets.resources import BackfillSettings

    with open_instance(data) as instance:
        materialize(
            SCOPE_ASSETS,
            partition_key=scope,
            instance=instance,
            resources={"settings": BackfillSettings(data_dir=str(data)), "engramia": EngramiaDestination()},
        )
    assert not layout.settled(scope).exists()
    report, _ = _run(capsys, "--input", str(sample_dir), "--data-dir", str(data))
    assert report["scopes"][scope]["run_id"] is not None
    assert all(layout.settled(s).exists() for s in read_scopes(layout)["scope"].to_list())


def test_progress_goes_to_stderr_with_json(tmp_path, capsys, sample_dir):
    report, err = _run(capsys, "--input", str(sample_dir), "--data-dir", str(tmp_path / "d"), progress=True)
    assert "ingest " in err and "done" in err
    for scope in report["scopes"]:
        assert f"{scope}: done in" in err


def test_the_workers_server_starts_ahead_only_for_a_run_with_dumps_to_ingest(tmp_path, capsys, sample_dir):
    """Judged from the files before Dagster is imported: a new data folder or a dump not in its manifest
    starts the server early; a run with nothing new, help, or object storage does not."""
    landing, data = tmp_path / "in", tmp_path / "d"
    shutil.copytree(sample_dir, landing)
    args = ["--input", str(landing), "--data-dir", str(data)]
    assert _will_ingest(args)
    _run(capsys, *args)
    assert not _will_ingest(args)
    write_ndjson(
        landing / "assistants-export-2026-09-01.ndjson",
        [msg("t-late", "late-1", "user", "hi?", 1_787_000_000)],
    )
    assert _will_ingest(args)
    assert not _will_ingest([*args, "--help"])
    assert not _will_ingest(["--input", "s3://bucket/exports", "--data-dir", str(data)])
    assert not _will_ingest(["--data-dir", str(data)])
