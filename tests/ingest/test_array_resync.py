"""A broken element of a top-level JSON array costs only itself: reading goes on at the next element,
and what cannot be read is one quarantined record that says from where."""

from __future__ import annotations

import io
import json
from pathlib import Path

import polars as pl
import pytest

from pipelines.ingest.formats import stream
from pipelines.ingest.formats.stream import BadValue, json_values
from pipelines.ingest.staging import ingest
from pipelines.scopes import ScopeMapping
from pipelines.tables import DataLayout
from tests.conftest import staged_quarantine, staged_raw


def _conversation(i: int) -> dict:
    turns = [{"from": "human", "value": f"question {i} please"}, {"from": "gpt", "value": f"answer {i}"}]
    return {"id": f"c{i}", "conversations": turns}


def _one_per_line(elements: list[str]) -> str:
    """The repro's shape: one element per line."""
    return "[\n" + ",\n".join(elements) + "\n]\n"


# Element 1 leaves a string open: it swallows the boundary to element 2.
OPEN_STRING = json.dumps(_conversation(1)).replace('"answer 1"', '"answer 1')
# Element 1 goes wrong after a list of objects that parsed: none of them is an element of the array.
BAD_AFTER_LIST = json.dumps(_conversation(1))[:-1] + ', "rating": tru}'


def _values(text: str) -> list[tuple[str, object]]:
    return list(json_values(io.BytesIO(text.encode())))


@pytest.fixture(params=["default", "tiny blocks"])
def blocks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tiny blocks put every boundary, and every broken part, across blocks of the stream.
    if request.param == "tiny blocks":
        monkeypatch.setattr(stream, "_READ", 7)
        monkeypatch.setattr(stream, "_AHEAD", 5)


@pytest.mark.usefixtures("blocks")
@pytest.mark.parametrize("broken", [OPEN_STRING, BAD_AFTER_LIST], ids=["open string", "bad after list"])
@pytest.mark.parametrize("pretty", [False, True], ids=["one per line", "pretty"])
def test_reading_goes_on_after_a_broken_element(broken: str, pretty: bool) -> None:
    elements = [json.dumps(_conversation(i), indent=2 if pretty else None) for i in range(5)]
    if pretty:
        # The same break, in a pretty-printed element.
        fixed = json.dumps(_conversation(1), indent=2)
        elements[1] = (
            fixed.replace('"answer 1"', '"answer 1')
            if broken == OPEN_STRING
            else fixed[: fixed.rindex("}")] + ',\n  "rating": tru\n}'
        )
    else:
        elements[1] = broken
    got = _values(_one_per_line(elements))
    assert [p for p, _ in got] == ["$[0]", "$[1]", "$[2]", "$[3]", "$[4]"]
    bad = got[1][1]
    assert isinstance(bad, BadValue) and bad.reason == "malformed JSON"
    assert bad.raw == elements[1]  # the whole element, nothing of its neighbours
    assert [v for _, v in got[2:]] == [_conversation(i) for i in (2, 3, 4)]


@pytest.mark.usefixtures("blocks")
def test_a_long_broken_element_is_kept_whole() -> None:
    elements = [json.dumps(_conversation(i)) for i in range(3)]
    long = json.dumps({"id": "c1", "conversations": [{"from": "human", "value": "x" * 5000}]})
    elements[1] = long.replace('x"', "x")
    got = _values(_one_per_line(elements))
    assert got[1] == ("$[1]", BadValue(elements[1], "malformed JSON"))
    assert got[2] == ("$[2]", _conversation(2))


@pytest.mark.usefixtures("blocks")
def test_what_cannot_be_read_is_one_record_saying_from_where() -> None:
    # Cut short mid-element (an interrupted download): no element follows to read on from.
    text = '[{"a": 1},\n {"b": 2},\n {"c": "x'
    got = _values(text)
    assert got[:2] == [("$[0]", {"a": 1}), ("$[1]", {"b": 2})]
    position, bad = got[2]
    assert position == "$[2]" and isinstance(bad, BadValue) and len(got) == 3
    assert bad.raw == '{"c": "x'
    assert bad.reason == (
        "malformed JSON: nothing from $[2] (line 3, character 24) on could be read"
        " (this record holds the rest)"
    )
    assert text[23:] == bad.raw  # character 24 counted from 1


@pytest.mark.usefixtures("blocks")
def test_a_list_closed_inside_a_broken_element_does_not_end_the_array() -> None:
    # The failure comes before the element's list: reading goes on inside it, at an object of the list
    # that parses, and its "]" looks like the end of the array.
    broken = '{"id": "c1", "rating": tru, "conversations": [{"from": "human"}, {"from": "gpt"}]}'
    got = _values(_one_per_line([json.dumps(_conversation(0)), broken, json.dumps(_conversation(2))]))
    assert [p for p, _ in got] == ["$[0]", "$[1]", "$[2]", "$[3]", "$[4]"]
    assert got[1] == (
        "$[1]",
        BadValue('{"id": "c1", "rating": tru, "conversations": [{"from": "human"}', "malformed JSON"),
    )
    assert got[2] == ("$[2]", {"from": "gpt"})
    assert got[3] == ("$[3]", BadValue("}", "text after the array's end"))
    assert got[4] == ("$[4]", _conversation(2))


def test_text_after_a_well_formed_array_is_left_as_before() -> None:
    # As array_chunks reads a large file (tests/ingest/test_array_chunks.py): the two readings agree.
    assert _values('[{"a": 1}]\n{"b": 2}, {"c": 3}\n') == [("$[0]", {"a": 1})]


def test_every_conversation_is_staged_or_quarantined(tmp_path: Path) -> None:
    elements = [json.dumps(_conversation(i)) for i in range(5)]
    elements[1] = OPEN_STRING
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "sharegpt.json").write_text(_one_per_line(elements))
    layout = DataLayout.at(tmp_path / "data")
    (r,) = ingest(layout, tmp_path / "in", ScopeMapping())
    assert (r.format, r.lines, r.staged, r.quarantined) == ("sharegpt", 9, 8, 1)
    raw = staged_raw(layout)
    assert raw["thread_id"].unique(maintain_order=True).to_list() == ["c0", "c2", "c3", "c4"]
    assert raw["line_no"].to_list() == [1, 2, 4, 5, 6, 7, 8, 9]
    q = staged_quarantine(layout)
    assert q.select("line_no", "reason", "raw_text").rows() == [(3, "malformed JSON", OPEN_STRING)]
    positions = pl.read_parquet(list(layout.records().glob("*.parquet"))).sort("line_no")["position"]
    assert positions.to_list()[2:5] == ["$[1]", "$[2].conversations[0]", "$[2].conversations[1]"]


def test_a_rest_longer_than_a_value_may_be_is_cut_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream, "_READ", 16)
    monkeypatch.setattr(stream, "MAX_VALUE_BYTES", 100)
    data = ('[{"a": 1}, {"b": "' + "y" * 1000).encode()
    source = io.BytesIO(data)
    got = list(json_values(source))
    assert got[0] == ("$[0]", {"a": 1}) and len(got) == 2
    bad = got[1][1]
    assert isinstance(bad, BadValue) and data.decode()[11:].startswith(bad.raw)
    assert 100 <= len(bad.raw) < 1000
    assert bad.reason.endswith(f"(this record holds the rest, cut at {len(bad.raw)} characters)")
    assert source.tell() == len(data)  # read to the end all the same: the dump's checksum covers it
