"""What `assistants-backfill run` tells the operator: exit codes, refusals before any work, this run's own
figures, one run per data folder, and an interrupt that stops the whole run and resumes exactly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from assets.cli.guard import folder_lock
from assets.cli.main import main
from assets.cli.scope_pool import SummaryOf
from assets.cli.summary import FIGURES
from pipelines.ingest.catalog import read_manifest
from pipelines.quality.reconcile import scope_counts
from pipelines.tables import DataLayout, damaged_parquet
from tests.conftest import msg, write_ndjson


@pytest.fixture(autouse=True)
def _no_dagster_home(monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)


def _run(capsys, *args: str) -> tuple[int, dict]:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", *args, "--json", "--no-progress"])
    return int(exit_info.value.code), json.loads(capsys.readouterr().out)


def _thread(i: int, bad: bool = False) -> list[dict | str]:
    rows: list[dict | str] = [
        msg(f"t{i}", f"m{i}a", "user", f"question number {i}", 1_700_000_000 + 10 * i),
        msg(f"t{i}", f"m{i}b", "assistant", f"answer number {i}", 1_700_000_001 + 10 * i),
    ]
    return ["{not json" for _ in rows] if bad else rows


def test_a_folder_without_dumps_is_refused_before_any_work(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, report = _run(capsys, "--input", str(empty), "--data-dir", str(tmp_path / "d"))
    assert code == 2 and report["failures"] == [
        f"--input {empty}: no dump (*.ndjson, *.jsonl, *.json, *.gz, *.zst, *.zip) in this folder"
    ]
    assert not (tmp_path / "d").exists()


def test_a_json_array_saved_as_ndjson_fails_the_run(tmp_path, capsys):
    dump = tmp_path / "in" / "export.ndjson"
    dump.parent.mkdir()
    dump.write_text(
        json.dumps([msg("t", f"m{i}", "user", "hi", 1_700_000_000 + i) for i in range(18)], indent=1)
    )
    # No format recognises a pretty-printed array of guide lines: refused before any work.
    code, report = _run(capsys, "--input", str(dump.parent), "--data-dir", str(tmp_path / "d"))
    assert code == 2 and not (tmp_path / "d").exists()
    [refused] = report["failures"]
    assert str(dump.resolve()) in refused and "unknown input format" in refused
    # Read as the guide's NDJSON anyway, every line is quarantined and the run fails.
    code, report = _run(
        capsys, "--input", str(dump.parent), "--data-dir", str(tmp_path / "d"), "--format", "guide-ndjson"
    )
    lines = len(dump.read_text().splitlines())
    assert code == 1 and report["exit_code"] == 1 and report["ok"] is False
    assert {k: v for k, v in report["this_run"].items() if k != "files"} == {
        "dumps": 1,
        "lines": lines,
        "staged": 0,
        "quarantined": lines,
    }
    assert (
        f"dump {dump.resolve()}: all {lines} lines quarantined: malformed JSON ({lines})"
        in report["failures"]
    )


def test_the_quarantined_share_has_a_threshold(tmp_path, capsys):
    rows = [r for i in range(10) for r in _thread(i, bad=i % 2 == 0)]
    write_ndjson(tmp_path / "in" / "half.ndjson", rows)
    code, report = _run(capsys, "--input", str(tmp_path / "in"), "--data-dir", str(tmp_path / "d"))
    assert code == 1
    assert report["failures"] == [
        "50.0% of this run's 20 lines were quarantined, above --max-quarantine-pct 10"
    ]
    # The staged half is loaded all the same: the rest of the run goes on.
    assert sum(s["loaded"] for s in report["scopes"].values()) == 5
    again, report = _run(
        capsys,
        "--input",
        str(tmp_path / "in"),
        "--data-dir",
        str(tmp_path / "d2"),
        "--max-quarantine-pct",
        "60",
    )
    assert again == 0 and report["failures"] == []


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            ["--task-max-chars", "-5"],
            ["--task-max-chars -5: give a number of characters from 1 to 10,000 (Engramia's limit)"],
        ),
        (
            ["--tenant-map", "{map}"],
            ["--tenant-map {map}: only used with --scope-by tenant (this run: assistant)"],
        ),
        (
            ["--scope-by", "tenant", "--tenant-map", "{map}"],
            ["--tenant-map {map}: needs the columns thread_id,tenant_id (found: thread_id, tenant)"],
        ),
    ],
)
def test_wrong_options_are_one_line_each_and_nothing_is_written(
    tmp_path, capsys, sample_dir, extra, expected
):
    tenant_map = tmp_path / "map.csv"
    tenant_map.write_text("thread_id,tenant\nthread_abc,acme\n")
    extra = [e.format(map=tenant_map) for e in extra]
    code, report = _run(capsys, "--input", str(sample_dir), "--data-dir", str(tmp_path / "d"), *extra)
    assert code == 2 and report["failures"] == [e.format(map=tenant_map) for e in expected]
    assert not (tmp_path / "d").exists()


def test_a_pairing_change_on_a_data_folder_needs_the_flag(tmp_path, capsys, sample_dir):
    data = tmp_path / "d"
    assert _run(capsys, "--input", str(sample_dir), "--data-dir", str(data))[0] == 0
    code, report = _run(capsys, "--input", str(sample_dir), "--data-dir", str(data), "--pairing", "strict")
    assert code == 2
    assert report["failures"] == [
        f"--pairing strict: {data.resolve()} was paired with merge; changing it re-pairs every thread and "
        "retracts loaded patterns that change. Repeat the old value, or pass --allow-option-change"
    ]
    code, report = _run(
        capsys,
        "--input",
        str(sample_dir),
        "--data-dir",
        str(data),
        "--pairing",
        "strict",
        "--allow-option-change",
    )
    assert code == 0 and all(s["load_adds_up"] for s in report["scopes"].values())


def test_the_summary_holds_this_runs_figures_only(tmp_path, capsys, sample_dir):
    data = tmp_path / "d"
    first = _run(capsys, "--input", str(sample_dir), "--data-dir", str(data))[1]
    second = _run(capsys, "--input", str(sample_dir), "--data-dir", str(data))[1]
    for scope, s in second["scopes"].items():
        before = first["scopes"][scope]
        assert s["run_id"] != before["run_id"]
        assert (s["loaded"], s["already_loaded"]) == (0, before["loaded"]) and s["load_adds_up"]
        assert before["loaded"] == before["kept"] and before["load_adds_up"]
    assert second["this_run"] == {"dumps": 0, "lines": 0, "staged": 0, "quarantined": 0, "files": []}


def test_the_summary_taken_from_the_runs_checks_is_what_the_files_hold(tmp_path, capsys, sample_dir):
    data = tmp_path / "d"
    code, report = _run(capsys, "--input", str(sample_dir), "--data-dir", str(data))
    assert code == 0 and report["scopes"]
    layout = DataLayout.at(data)
    assert all(s["unpaired"] for s in report["scopes"].values()) and any(
        s["repeats"] for s in report["scopes"].values()
    )
    for scope, s in report["scopes"].items():
        counts = scope_counts(layout, scope)
        from_files = {
            "lines_in": counts.lines.lines_in,
            "messages": counts.lines.messages,
            "quarantined": counts.lines.quarantined,
            "repeats": counts.lines.repeats,
            "unpaired": counts.pairing.unpaired,
            "lines_reconcile": counts.lines_reconcile,
            "messages_reconcile": counts.messages_reconcile,
        }
        assert {k: s[k] for k in from_files} == from_files, scope


def test_a_second_run_on_the_same_folder_is_refused(tmp_path, capsys, sample_dir):
    data = tmp_path / "d"
    with folder_lock(data):
        code, report = _run(capsys, "--input", str(sample_dir), "--data-dir", str(data))
    assert code == 75
    [failure] = report["failures"]
    assert failure.startswith(f"--data-dir {data} is in use by pid {os.getpid()} since ")
    assert not (data / "staged").exists()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from assets.cli.main import entry; entry()", "run", *args, "--no-progress"]


def _interrupt(proc: subprocess.Popen) -> dict:
    """Ctrl-C to a running CLI: it stops within 20 s, exits 130 and reports why on stdout."""
    proc.send_signal(signal.SIGINT)
    stopped_at = time.monotonic()
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - stopped_at < 20
    assert proc.returncode == 130, err
    return json.loads(out)


def test_ctrl_c_stops_the_whole_run_and_the_next_run_completes_it(tmp_path):
    source = tmp_path / "in"
    synth = [
        "--out",
        str(source / "s.ndjson"),
        "--messages",
        "40000",
        "--assistants",
        "4",
        "--bad-line-rate",
        "0",
    ]
    subprocess.run([sys.executable, "-m", "pipelines.tools.synth", *synth], check=True, capture_output=True)
    data = tmp_path / "d"
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    proc = subprocess.Popen(
        _cli("--input", str(source), "--data-dir", str(data), "--json"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True, cwd=Path.cwd(),
    )  # fmt: skip
    # Interrupt once the first scope's run has started.
    deadline = time.monotonic() + 120
    while not list((data / "dagster_home").glob("**/runs.db")) or not list(data.glob("staged/messages/*")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    report = _interrupt(proc)
    assert report["exit_code"] == 130 and "run the same command again" in report["failures"][-1]
    # A scope whose run finished before the interrupt reached it is done: counted so, and recorded as
    # complete, so the next run does not carry it through again.
    settled = {p.stem.removeprefix("scope=") for p in (data / "staged" / "_settled").glob("*.json")}
    finished = {s for s, r in report["scopes"].items() if r["kept"] and r["loaded"] == r["kept"]}
    assert finished <= settled
    assert f"interrupted with {len(settled)} of " in report["failures"][-1]
    resumed = subprocess.run(
        _cli("--input", str(source), "--data-dir", str(data), "--json"),
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    after = json.loads(resumed.stdout)
    fresh = subprocess.run(
        _cli("--input", str(source), "--data-dir", str(tmp_path / "fresh"), "--json"),
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    clean = json.loads(fresh.stdout)
    for scope, s in clean["scopes"].items():
        r = after["scopes"][scope]
        assert (r["kept"], r["pattern_count_after"]) == (s["kept"], s["pattern_count_after"] or 0)
        assert r["loaded"] + r["already_loaded"] + r["present"] == r["kept"] and r["load_adds_up"]


def test_ctrl_c_during_the_ingest_stops_it_and_the_next_run_ingests_the_dump_whole(tmp_path):
    # The ingest runs in a worker process: the interrupt must reach it there, and a dump cut off halfway
    # must be neither lost nor half counted by the next run.
    source = tmp_path / "in"
    synth = ["--out", str(source / "s.ndjson"), "--messages", "400000", "--assistants", "2"]
    subprocess.run(
        [sys.executable, "-m", "pipelines.tools.synth", *synth, "--bad-line-rate", "0"],
        check=True,
        capture_output=True,
    )
    data = tmp_path / "d"
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    command = [sys.executable, "-c", "from assets.cli.main import entry; entry()", "run"]
    command += ["--input", str(source), "--data-dir", str(data), "--json"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    while line and not line.startswith("ingesting "):
        line = proc.stderr.readline()
    # The CLI says this line, then waits for the worker's ingest (its imports, then 400k lines: seconds).
    time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()
    report = _interrupt(proc)
    assert report["failures"] == ["interrupted while ingesting: run the same command again"]
    resumed = subprocess.run(
        [*command, "--no-progress"], capture_output=True, text=True, env=env, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr
    after = json.loads(resumed.stdout)
    # Where the interrupt reached the ingest decides which run staged the dump (the interrupted one when
    # its ingest step was past stopping): the dump is staged once, whole, and counted once.
    assert (after["this_run"]["lines"], after["this_run"]["staged"]) in ((400_000, 400_000), (0, 0))
    manifest = read_manifest(DataLayout.at(data))
    assert manifest.height == 1 and manifest.row(0, named=True)["lines"] == 400_000
    assert manifest.row(0, named=True)["staged"] == 400_000
    assert sum(s["messages"] for s in after["scopes"].values()) == 400_000
    assert all(s["lines_reconcile"] and s["messages_reconcile"] for s in after["scopes"].values())


def test_turning_on_task_context_on_a_paired_folder_needs_the_flag(tmp_path, capsys, sample_dir):
    data = tmp_path / "d"
    assert _run(capsys, "--input", str(sample_dir), "--data-dir", str(data))[0] == 0
    code, report = _run(
        capsys, "--input", str(sample_dir), "--data-dir", str(data), "--task-context", "previous"
    )
    assert code == 2
    assert report["failures"] == [
        f"--task-context previous: {data.resolve()} was paired with none; changing it re-pairs every thread "
        "and retracts loaded patterns that change. Repeat the old value, or pass --allow-option-change"
    ]


# A scope the sample's second dump adds messages to, so that a run after it runs this scope again.
TOUCHED_BY_SECOND_DUMP = "default__asst_coder"


def _cut_short(capsys, tmp_path: Path, sample_dir: Path) -> tuple[Path, Path, Path]:
    """The data folder after the sample's first dump, with one Parquet file of a scope cut short (as a copy
    that stopped leaves it), and the sample's second dump added to the landing folder. Returns the landing
    folder, the data folder and the damaged file."""
    landing = tmp_path / "landing"
    landing.mkdir()
    first, second = sorted(sample_dir.glob("*.ndjson"))
    shutil.copy(first, landing)
    data = tmp_path / "d"
    code, _ = _run(capsys, "--input", str(landing), "--data-dir", str(data), "--destination", "none")
    assert code == 0
    damaged = DataLayout.at(data).threads(TOUCHED_BY_SECOND_DUMP) / "batch=000001.parquet"
    damaged.write_bytes(damaged.read_bytes()[:100])
    shutil.copy(second, landing)
    return landing, data, damaged


def test_a_damaged_file_fails_its_scope_alone_and_is_named(tmp_path, capsys, sample_dir):
    landing, data, damaged = _cut_short(capsys, tmp_path, sample_dir)
    named = str(damaged.relative_to(data))
    code, report = _run(capsys, "--input", str(landing), "--data-dir", str(data), "--destination", "none")
    assert code == 1 and not report["ok"]
    scope = TOUCHED_BY_SECOND_DUMP
    assert named in report["failed_scopes"][scope]
    failure = f"scope {scope}: {report['failed_scopes'][scope]}"
    assert [f for f in report["failures"] if named in f] == [failure]
    # Every scope is in the summary; the damaged one with its figures unknown and the reason.
    entry = report["scopes"][scope]
    assert named in entry["figures_unreadable"] and entry["kept"] is None and entry["lines_in"] is None
    others = {s: v for s, v in report["scopes"].items() if s != scope}
    assert others and all(v["kept"] is not None and "figures_unreadable" not in v for v in others.values())
    assert set(entry) == set(next(iter(others.values()))) | {"figures_unreadable"}


def test_figures_that_cannot_be_read_are_reported_with_every_key(tmp_path, capsys, sample_dir):
    _, data, damaged = _cut_short(capsys, tmp_path, sample_dir)
    layout = DataLayout.at(data)
    assert damaged_parquet(layout, TOUCHED_BY_SECOND_DUMP) == [damaged.relative_to(data)]
    assert damaged_parquet(layout, "default__asst_analyst") == []
    read = SummaryOf(str(data), "none", None).read
    whole = read("default__asst_analyst", "r1")
    broken = read(TOUCHED_BY_SECOND_DUMP, "r2")
    assert "figures_unreadable" not in whole and set(broken) == set(whole) | {"figures_unreadable"}
    assert set(FIGURES) < set(whole)
    assert broken["figures_unreadable"].startswith("ComputeError: ")
    assert str(damaged.relative_to(data)) in broken["figures_unreadable"]
    assert (broken["run_id"], broken["tenant_id"], broken["project_id"]) == ("r2", "default", "asst_coder")
