"""``run`` end to end on every input shape the readers take today: the same conversations written as the
tolerant guide NDJSON, Assistants API objects (lines, a newest-first array), saved messages.list pages
(newest first, a thread over several files) and compressed or zipped dumps give exit 0, figures that
reconcile (records = staged + quarantined per dump and in all; per scope lines in = messages + quarantined
+ repeats) and exactly the patterns of the guide's NDJSON."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from assets.cli.main import main
from pipelines.ingest.formats import FORMATS
from pipelines.tables import DataLayout, parquet_files
from pipelines.tools import shapes

# case: (shape written by the fixture module, the one file of it kept or None for all, format expected)
CASES: dict[str, tuple[str, str | None, str]] = {
    "guide-tolerant": ("guide-tolerant", None, "guide-ndjson"),
    "api-lines": ("assistants-jsonl", None, "assistants-api"),
    "api-array-newest-first": ("assistants-array-desc", None, "assistants-api"),
    "pages-newest-first-over-files": ("assistants-pages-desc", None, "assistants-api"),
    "pages-oldest-first-one-file": ("assistants-pages-asc", None, "assistants-api"),
    "gz": ("compressed", "guide.ndjson.gz", "guide-ndjson"),
    "zst": ("compressed", "messages.jsonl.zst", "assistants-api"),
    "zip": ("compressed", "pages.zip", "assistants-api"),
}


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", *args, "--json"])
    out = capsys.readouterr().out
    return int(exit_info.value.code or 0), json.loads(out)


def _write(case: str, folder: Path) -> list[Path]:
    shape, keep, _ = CASES[case]
    files = shapes.write_shape(shape, folder)
    for f in files:
        if keep is not None and f.name != keep:
            f.unlink()
    return [f for f in files if f.exists()]


def _patterns(data: Path) -> pl.DataFrame:
    layout = DataLayout.at(data)
    files = [f for scope in (layout.staged / "patterns").glob("scope=*") for f in parquet_files(scope)]
    return (
        pl.read_parquet(files)
        .select("pattern_id", "thread_id", "assistant_id", "task", "code")
        .sort("pattern_id")
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    tmp = tmp_path_factory.mktemp("guide")
    shapes.write_shape("guide-ndjson", tmp / "in")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DAGSTER_HOME", raising=False)
        with pytest.raises(SystemExit) as exit_info:
            main(["run", "--input", str(tmp / "in"), "--data-dir", str(tmp / "data"), "--json"])
    assert exit_info.value.code == 0
    return _patterns(tmp / "data")


@pytest.mark.parametrize("case", list(CASES))
def test_each_shape_end_to_end(
    case: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    reference: pl.DataFrame,
) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    written = _write(case, tmp_path / "in")
    data = tmp_path / "data"
    code, summary = _run(capsys, "--input", str(tmp_path / "in"), "--data-dir", str(data))
    assert code == 0, summary["failures"]
    assert summary["failed_scopes"] == {} and summary["failed_checks"] == {}

    run = summary["this_run"]
    files = run["files"]
    assert len(files) == run["dumps"] >= len(written)
    assert {f["format"] for f in files} == {CASES[case][2]}
    for f in files:
        assert f["records"] == f["staged"] + f["quarantined"], f
    assert run["lines"] == sum(f["records"] for f in files) == run["staged"] + run["quarantined"]
    # Every message of the conversations is staged; none is quarantined.
    assert run["staged"] == sum(len(c.messages) for c in shapes.conversations())
    assert run["quarantined"] == 0 and summary["unscoped_quarantined"] == 0
    for scope, s in summary["scopes"].items():
        assert s["lines_in"] == s["messages"] + s["quarantined"] + s["repeats"], scope
        assert s["lines_reconcile"] and s["messages_reconcile"] and s["load_adds_up"], scope
    assert sum(s["lines_in"] for s in summary["scopes"].values()) == run["staged"]

    assert _patterns(data).equals(reference)


def test_an_undetectable_file_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    (tmp_path / "in").mkdir()
    shapes.write_shape("guide-ndjson", tmp_path / "in")
    odd = tmp_path / "in" / "other.json"
    odd.write_text('{"hello": "world"}\n')
    data = tmp_path / "data"
    code, report = _run(capsys, "--input", str(tmp_path / "in"), "--data-dir", str(data))
    assert code == 2 and not data.exists()
    [line] = report["failures"]
    assert str(odd) in line and all(name in line for name in FORMATS) and "--format" in line

    # Forced, the file is read as that shape: its one value is no message, so it is quarantined.
    code, report = _run(capsys, "--input", str(odd), "--data-dir", str(data), "--format", "assistants-api")
    [dump] = report["this_run"]["files"]
    assert dump["format"] == "assistants-api"
    assert (dump["records"], dump["staged"], dump["quarantined"]) == (1, 0, 1)
    assert code == 1 and any("all 1 lines quarantined" in f for f in report["failures"])
