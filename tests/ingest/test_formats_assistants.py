"""Every shape of saved OpenAI messages gives the same patterns as the guide's NDJSON, and each reader
keeps its contract: one record per message, positions, part counts, order keys."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import polars as pl
import pytest

from pipelines.ingest.formats import FORMATS, UnknownFormat, detect_format, detect_head
from pipelines.ingest.formats.stream import BadValue, json_values
from pipelines.ingest.messages import stage_messages
from pipelines.ingest.staging import ingest
from pipelines.pairing.batches import pair_scope
from pipelines.pairing.pairs import REASON_SYSTEM, REASON_TOOL, PairingOptions
from pipelines.runner import backfill
from pipelines.scopes import ScopeMapping
from pipelines.tables import DataLayout, parquet_files
from pipelines.tools import shapes
from pipelines.tools.conversations import T0

SHAPES = [s for s in shapes.WRITERS if s != "guide-ndjson"]


def _patterns(tmp: Path, shape: str) -> pl.DataFrame:
    shapes.write_shape(shape, tmp / "in")
    layout = DataLayout.at(tmp / "data")
    backfill(layout, tmp / "in", load=False)
    files = [f for scope in (layout.staged / "patterns").glob("scope=*") for f in parquet_files(scope)]
    frame = pl.read_parquet(files).with_columns(scope=pl.lit(None, pl.String))
    return frame.select("pattern_id", "thread_id", "assistant_id", "task", "code").sort("pattern_id")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    return _patterns(tmp_path_factory.mktemp("guide"), "guide-ndjson")


def test_reference_pairs_are_the_expected_exchanges(reference: pl.DataFrame) -> None:
    rows = {(r["thread_id"], r["assistant_id"], r["task"], r["code"]) for r in reference.to_dicts()}
    assert rows == {
        ("thread_ties", "asst_coder", "Build a CSV parser", "Here is a parser."),
        ("thread_ties", "asst_coder", "Add quoting", "Quoting added.\n\nAnd tests."),
        ("thread_two_assistants", "asst_coder", "Write a sort", "def sort(x): ..."),
        ("thread_two_assistants", "asst_review", "Review it\n\nBe strict", "Looks fine."),
    }


@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_gives_the_guide_patterns(tmp_path: Path, shape: str, reference: pl.DataFrame) -> None:
    assert _patterns(tmp_path, shape).equals(reference)


def test_counts_reconcile_and_formats_are_recorded(tmp_path: Path) -> None:
    shapes.write_shape("compressed", tmp_path / "in")
    shapes.write_shape("assistants-pages-desc", tmp_path / "in" / "pages")
    layout = DataLayout.at(tmp_path / "data")
    results = ingest(layout, tmp_path / "in", ScopeMapping())
    assert {r.format for r in results} == {"guide-ndjson", "assistants-api"}
    for r in results:
        assert r.lines == r.staged + r.quarantined
    by_format: dict[str, int] = {}
    for r in results:
        by_format[r.format] = by_format.get(r.format, 0) + r.staged
    assert by_format == {"guide-ndjson": 11, "assistants-api": 33}
    manifest = pl.read_parquet(layout.manifest)
    assert manifest["format"].null_count() == 0
    assert any("pages.zip!pages/" in f for f in manifest["file"].to_list())
    # The question nobody answered yet belongs to the thread's last assistant.
    raw = pl.read_parquet(list(layout.raw().glob("dump=*/scope=*/*.parquet")))
    assert set(raw.filter(pl.col("message_id") == "n6")["assistant_id"]) == {"asst_review"}
    assert set(raw.filter(pl.col("message_id") == "n3")["assistant_id"]) == {"asst_review"}


def test_record_table_keeps_run_ids_parts_and_positions(tmp_path: Path) -> None:
    shapes.write_shape("assistants-pages-desc", tmp_path / "in")
    layout = DataLayout.at(tmp_path / "data")
    ingest(layout, tmp_path / "in", ScopeMapping())
    rec = pl.read_parquet(list(layout.records().glob("*.parquet")))
    by_id = {r["message_id"]: r for r in rec.to_dicts()}
    assert by_id["m2"]["run_id"] == "run_1" and by_id["m2"]["annotations"] == 1
    assert by_id["m3"]["images"] == 1 and by_id["m5"]["attachments"] == 2
    assert all(p.startswith("line 1 $.data[") for p in rec["position"])
    assert (rec["line_no"] < 0).all()  # newest first: reversed order keys
    raw = pl.read_parquet(list(layout.raw().glob("dump=*/scope=*/*.parquet")))
    assert "【" not in "".join(raw["text"].to_list())


def test_newest_first_ties_pair_like_oldest_first(tmp_path: Path) -> None:
    """A whole thread in one second: no time tells the file's direction, the roles at the thread's ends
    do (a newest-first array starts with the last answer), so the follow-up's answer never joins the first
    answer, in either direction."""
    conv = [
        shapes.Conversation(
            "t",
            [
                shapes.Message("u1", "user", "q1", T0, "a"),
                shapes.Message("a1", "assistant", "r1", T0, "a", "run1"),
                shapes.Message("u2", "user", "q2", T0, "a"),
                shapes.Message("a2", "assistant", "r2", T0, "a", "run2"),
            ],
        )
    ]
    got = {}
    for shape in ("guide-ndjson", "assistants-array-desc", "assistants-pages-desc", "assistants-jsonl"):
        shapes.write_shape(shape, tmp_path / shape / "in", conv)
        layout = DataLayout.at(tmp_path / shape / "data")
        backfill(layout, tmp_path / shape / "in", load=False)
        files = parquet_files(layout.patterns("default__a"))
        got[shape] = sorted(pl.read_parquet(files).select("task", "code").rows())
    assert got["guide-ndjson"] == [("q1", "r1"), ("q2", "r2")]
    assert got["assistants-array-desc"] == got["guide-ndjson"] == got["assistants-pages-desc"]
    assert got["assistants-jsonl"] == got["guide-ndjson"]


def test_unknown_shape_names_file_and_formats(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"hello": 1}')
    with pytest.raises(UnknownFormat) as err:
        detect_format(path)
    assert str(path) in str(err.value) and all(name in str(err.value) for name in FORMATS)


def test_detection() -> None:
    assert detect_head(b'{"object": "thread.message", "id": "m"}', "a.jsonl") == "assistants-api"
    assert (
        detect_head(b'{"object": "list", "data": [{"object": "thread.message"', "p.json") == "assistants-api"
    )
    line = {
        "thread_id": "t",
        "assistant_id": "a",
        "message_id": "m",
        "role": "user",
        "text": "x",
        "created_at": 1,
    }
    assert detect_head(json.dumps(line).encode(), "d.ndjson") == "guide-ndjson"


def test_json_values_streams_arrays_lines_and_bad_values() -> None:
    values = list(json_values(io.BytesIO(b'[{"a": 1}, {"b": 2}]')))
    assert values == [("$[0]", {"a": 1}), ("$[1]", {"b": 2})]
    got = list(json_values(io.BytesIO(b'{"a": 1}\nnot json\n\n{"b":\n 2}\n')))
    assert got[0] == ("line 1", {"a": 1})
    assert got[1][0] == "line 2" and isinstance(got[1][1], BadValue)
    assert got[2] == ("line 4", {"b": 2})


def test_tolerant_guide_lines(tmp_path: Path) -> None:
    rows = [
        {
            "thread_id": "t",
            "message_id": "u",
            "role": "user",
            "text": "q",
            "created_at": "2024-06-01T00:00:00.5",
        },
        {
            "thread_id": "t",
            "message_id": "d",
            "role": "developer",
            "text": "be brief",
            "created_at": 1717200000.25,
        },
        {"thread_id": "t", "message_id": "k", "role": "tool", "text": "{}", "created_at": 1717200001},
        {
            "thread_id": "t",
            "assistant_id": "a",
            "message_id": "r",
            "role": "assistant",
            "content": [{"type": "text", "text": "an answer"}],
            "created_at": "2024-06-01T00:00:02+00:00",
        },
    ]
    (tmp_path / "in").mkdir()
    path = tmp_path / "in" / "d.ndjson.gz"
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    layout = DataLayout.at(tmp_path / "data")
    (r,) = ingest(layout, tmp_path / "in", ScopeMapping())
    assert (r.lines, r.staged, r.quarantined) == (4, 4, 0)
    raw = pl.read_parquet(list(layout.raw().glob("dump=*/scope=*/*.parquet"))).sort("line_no")
    assert raw["role"].to_list() == ["user", "system", "tool", "assistant"]
    assert raw["assistant_id"].to_list() == ["a", "a", "a", "a"]
    assert raw["text"].to_list()[3] == "an answer"
    assert raw["created_at"][0].isoformat() == "2024-06-01T00:00:00.500000+00:00"
    assert raw["branch"].unique().to_list() == ["current"]
    # The tool's output takes no part in a pattern: it is unpaired with its own reason.
    stage_messages(layout, "default__a")
    result = pair_scope(layout, "default__a", PairingOptions())
    assert result.patterns == 1
    unpaired = pl.read_parquet(list(layout.unpaired("default__a").glob("*.parquet"))).sort("message_id")
    assert dict(zip(unpaired["message_id"], unpaired["reason"], strict=True)) == {
        "d": REASON_SYSTEM,
        "k": REASON_TOOL,
    }
