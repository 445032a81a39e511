"""Text that cannot be written as UTF-8 in a reader's records: a lone surrogate escape (``"\\ud83d"``, an
emoji cut in two, which Python's json accepts) and bytes that are not UTF-8. The record holding it is
quarantined with an ``invalid UTF-8`` reason and its raw text escaped, the rest of the dump and the dumps
after it are staged, and a whole emoji written as a pair of escapes is staged as it is."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from pipelines.ingest.array_chunks import array_batches
from pipelines.ingest.formats.base import ReaderOptions, using_reader_options
from pipelines.ingest.formats.chatgpt import ChatGptExport
from pipelines.ingest.formats.stream import BadValue, json_values
from pipelines.ingest.records import record_batches
from pipelines.ingest.staging import ingest
from pipelines.scopes import ScopeMapping
from pipelines.tables import DataLayout
from pipelines.tools import shapes
from pipelines.tools.shapes_chat import chatgpt_conversation

LONE = "invalid UTF-8: lone surrogate"
BYTES = "invalid UTF-8"


def _message(i: int, text: str) -> str:
    """One Assistants API message as a JSON line, ``text`` put in as it is (escapes or bytes kept)."""
    return (
        f'{{"id":"msg_{i}","object":"thread.message","created_at":{1717200000 + i},"thread_id":"thread_1",'
        f'"role":"{"user" if i % 2 else "assistant"}","assistant_id":"asst_1","run_id":null,'
        f'"content":[{{"type":"text","text":{{"value":"{text}","annotations":[]}}}}]}}'
    )


def _ingest(tmp: Path, files: dict[str, bytes]) -> tuple[dict[str, Any], pl.DataFrame, pl.DataFrame]:
    src = tmp / "src"
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    layout = DataLayout.at(tmp / "data")
    results = {Path(r.file).name: r for r in ingest(layout, src, ScopeMapping())}
    raw = pl.concat([pl.read_parquet(f) for f in layout.raw().rglob("*.parquet")], how="diagonal_relaxed")
    quarantine = pl.concat(
        [pl.read_parquet(f) for f in layout.quarantine().glob("*.parquet")], how="diagonal_relaxed"
    )
    return results, raw, quarantine


def test_a_lone_surrogate_quarantines_its_record_and_the_run_goes_on(tmp_path: Path) -> None:
    lines = [
        _message(1, r"emoji cut \ud83d here"),
        _message(2, r"whole \ud83d\ude00 emoji"),
        _message(3, r"low half \ude00 alone"),
        _message(4, "fine"),
    ]
    later = b'{"thread_id": "th1", "assistant_id": "asst_1", "message_id": "m1", "role": "user", '
    later += b'"text": "after", "created_at": 1717200000}\n'
    results, raw, quarantine = _ingest(
        tmp_path, {"a_messages.jsonl": "\n".join(lines).encode() + b"\n", "z_later.ndjson": later}
    )
    first = results["a_messages.jsonl"]
    assert (first.lines, first.staged, first.quarantined) == (4, 2, 2)
    assert results["z_later.ndjson"].staged == 1  # the dump after it is ingested
    assert sorted(raw["text"].drop_nulls()) == sorted(["whole \U0001f600 emoji", "fine", "after"])
    rows = quarantine.sort("line_no")
    assert rows["reason"].to_list() == [LONE, LONE]
    # The escape is kept as JSON writes it: the raw text is valid JSON again.
    assert r"emoji cut \ud83d here" in rows["raw_text"][0]
    assert json.loads(rows["raw_text"][1])["text"] == "low half \ude00 alone"


def test_bytes_that_are_not_utf8_quarantine_their_line_not_replaced(tmp_path: Path) -> None:
    data = (
        _message(1, "emo@@ji").encode().replace(b"@@", b"\xff\xfe")
        + b"\n"
        + _message(2, "ok").encode()
        + b"\n\xff"
        + _message(3, "broken outside strings").encode()[1:]
        + b"\n"
        + _message(5, "more").encode()
        + b"\n"
    )
    results, raw, quarantine = _ingest(tmp_path, {"messages.jsonl": data})
    result = results["messages.jsonl"]
    assert (result.lines, result.staged, result.quarantined) == (4, 2, 2)
    assert sorted(raw["text"].drop_nulls()) == ["more", "ok"]
    assert not any("\ufffd" in t for t in raw["text"].drop_nulls())
    rows = quarantine.sort("line_no")
    assert rows["reason"].to_list() == [BYTES, BYTES]
    # The bytes are shown as they were (as backslashreplace writes them), not as U+FFFD.
    assert r"emo\xff\xfeji" in rows["raw_text"][0]
    assert rows["raw_text"][1].startswith(r"\xff")


def test_json_values_keeps_bad_bytes_findable() -> None:
    data = b'{"a": "x\xffy"}\n\xfe{"b": 1}\n{"c": "\xe2\x82\xac"}\n'
    values = list(json_values(io.BytesIO(data)))
    assert values[0] == ("line 1", {"a": "x\udcffy"})
    assert isinstance(values[1][1], BadValue) and values[1][1].reason == BYTES
    assert values[2] == ("line 3", {"c": "\u20ac"})  # valid UTF-8 around it is read as it was


def _export() -> bytes:
    base = shapes.conversations()
    convs = [
        chatgpt_conversation(shapes.Conversation(f"c{i}", base[i % len(base)].messages), 0) for i in range(30)
    ]
    data = json.dumps(convs).encode()
    # One message's text gets bytes that are not UTF-8, another a lone surrogate escape, one a whole emoji.
    texts = list(dict.fromkeys(m.text for c in base for m in c.messages if m.text and len(m.text) > 8))
    bad, lone, pair = (json.dumps(t).encode() for t in texts[:3])
    assert bad != lone != pair and data.count(bad) and data.count(lone) and data.count(pair)
    data = data.replace(bad, bad[:-1] + b"\xc3\x28\xff" + b'"', 1)
    data = data.replace(lone, lone[:-1] + rb"\ud83d" + b'"', 1)
    return data.replace(pair, pair[:-1] + rb"\ud83d\ude00" + b'"', 1)


def _lines(batches: Any) -> pl.DataFrame:
    return pl.concat([b[0] if isinstance(b[0], pl.DataFrame) else pl.from_arrow(b[0]) for b in batches])


@pytest.mark.parametrize("chunked", [False, True])
def test_a_chatgpt_export_quarantines_the_elements_records_read_whole_or_in_chunks(
    tmp_path: Path, chunked: bool
) -> None:
    data = _export()
    path = tmp_path / "conversations.json"
    path.write_bytes(data)
    with using_reader_options(ReaderOptions(assistant_name=None)):
        if chunked:
            lines = _lines(array_batches(path, "chatgpt-export", chunk_bytes=3_000, workers=1))
        else:
            lines = _lines(record_batches(ChatGptExport().read(io.BytesIO(data), "conversations.json")))
    forced = lines.filter(pl.col("forced").str.starts_with(BYTES))
    assert sorted(forced["forced"]) == [BYTES, LONE]
    raws = "".join(forced["raw"])
    assert r"\xff" in raws and r"\ud83d" in raws
    texts = lines["c_text"].drop_nulls()
    assert texts.str.contains("\U0001f600").any()  # the whole emoji is kept
    assert not texts.str.contains("\ufffd").any()
