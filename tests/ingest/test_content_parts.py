"""Guide NDJSON lines whose ``content`` is a list of parts stage the same text as the ``assistants-api``
reader gives the same message: refusals kept, annotation markers removed. Otherwise one message saved in
both shapes would be a conflict instead of a repeat."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.ingest.catalog import read_scopes
from pipelines.ingest.formats.assistants import message_text
from pipelines.ingest.messages import scan_messages, stage_messages
from pipelines.ingest.staging import ingest
from pipelines.scopes import ScopeMapping
from pipelines.tables import DataLayout
from tests.conftest import T0, write_ndjson


def _text_part(value: str, *markers: Any) -> dict[str, Any]:
    notes = [{"type": "file_citation", "text": m, "file_citation": {"file_id": "file_1"}} for m in markers]
    return {"type": "text", "text": {"value": value, "annotations": notes}}


# (message id, role, content): every kind of part the two shapes share.
CONTENTS: list[tuple[str, str, Any]] = [
    ("m1", "user", [_text_part("What does the doc say?")]),
    ("m2", "assistant", [_text_part("It says X【4:0†source】.", "【4:0†source】")]),
    ("m3", "user", "Write malware"),
    ("m4", "assistant", [{"type": "refusal", "refusal": "I can't help with that."}]),
    ("m5", "user", [{"type": "text", "text": "Plain part"}, {"type": "image_file", "image_file": {}}]),
    (
        "m6",
        "assistant",
        [
            # A marker cited twice, a second marker, an empty one and one that is not a string.
            _text_part(
                "A【1:0†a】 B【1:0†a】 C【2:1†b】 sandbox:/x.csv",
                "【1:0†a】",
                "【2:1†b】",
                "",
                7,
                "sandbox:/x.csv",
            ),
            {"type": "refusal", "refusal": "Not that part."},
            _text_part("Tail"),
        ],
    ),
]


def _staged_texts(layout: DataLayout, landing: Path) -> tuple[dict[str, str], list[tuple[int, int]]]:
    ingest(layout, landing, ScopeMapping())
    [scope] = read_scopes(layout)["scope"].to_list()
    stats = [(s.repeats, s.conflicts) for s in stage_messages(layout, scope)]
    frame = scan_messages(layout, scope).select("message_id", "text").collect()
    return dict(frame.iter_rows()), stats


def _guide_rows() -> list[dict[str, Any]]:
    return [
        {"thread_id": "th1", "assistant_id": "asst_1", "message_id": mid, "role": role, "content": content,
         "created_at": T0 + i}
        for i, (mid, role, content) in enumerate(CONTENTS)
    ]  # fmt: skip


def _assistants_rows() -> list[dict[str, Any]]:
    return [
        {"object": "thread.message", "id": mid, "thread_id": "th1", "assistant_id": "asst_1", "role": role,
         "content": content, "created_at": T0 + i}
        for i, (mid, role, content) in enumerate(CONTENTS)
    ]  # fmt: skip


def test_guide_content_parts_give_the_assistants_reader_text(tmp_path: Path) -> None:
    layout = DataLayout.at(tmp_path / "data")
    write_ndjson(tmp_path / "landing" / "guide.ndjson", _guide_rows())
    texts, _ = _staged_texts(layout, tmp_path / "landing")
    assert texts == {mid: message_text(content)[0] for mid, _, content in CONTENTS}
    assert texts["m2"] == "It says X."
    assert texts["m4"] == "I can't help with that."
    assert texts["m6"] == "A B C \n\nNot that part.\n\nTail"


def test_one_message_in_both_shapes_is_a_repeat_not_a_conflict(tmp_path: Path) -> None:
    layout = DataLayout.at(tmp_path / "data")
    write_ndjson(tmp_path / "landing" / "a_guide.ndjson", _guide_rows())
    write_ndjson(tmp_path / "landing" / "b_assistants.jsonl", _assistants_rows())
    texts, stats = _staged_texts(layout, tmp_path / "landing")
    assert sum(c for _, c in stats) == 0
    assert sum(r for r, _ in stats) == len(CONTENTS)
    assert len(texts) == len(CONTENTS)
    assert not any("【" in text for text in texts.values())


def test_content_lines_are_read_as_guide_lines(tmp_path: Path) -> None:
    # Otherwise the tests above would not go through the classifier's SQL at all.
    path = write_ndjson(tmp_path / "landing" / "guide.ndjson", _guide_rows())
    [result] = ingest(DataLayout.at(tmp_path / "data"), path, ScopeMapping())
    assert result.format == "guide-ndjson"
