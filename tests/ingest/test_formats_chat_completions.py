"""Chat Completions JSONL: a thread per line (its metadata's id, else one derived from file, line and
messages), message ids ``<thread>:<index>``, list order without times; tool traffic counted, never paired;
the same conversations pair like the guide's NDJSON."""

from __future__ import annotations

from pathlib import Path

from pipelines.ingest.formats import detect_head
from pipelines.ingest.formats.base import ReaderOptions, using_reader_options
from pipelines.ingest.formats.chat_completions import DEFAULT_ASSISTANT, REASON_TOOL_CALL
from pipelines.pairing.pairs import REASON_TOOL
from tests.ingest.chat_support import (
    assert_reconciles,
    cli_run,
    guide_pairs,
    pairs_per_thread,
    quarantine_reasons,
    records,
    run_shape,
    unpaired_reasons,
)

LINE = {
    "messages": [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "image_url", "image_url": {}}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
        {"role": "assistant", "content": [{"type": "text", "text": "It is 42."}]},
    ]
}


def _jsonl(*values: dict) -> bytes:
    import json

    return "".join(json.dumps(v) + "\n" for v in values).encode()


def test_records_ids_order_and_parts() -> None:
    recs = records("chat-completions", _jsonl(LINE, LINE | {"metadata": {"thread_id": "thr_9"}}), "a.jsonl")
    assert len(recs) == 10
    first, named = recs[:5], recs[5:]
    tid = first[0]["thread_id"]
    assert tid.startswith("cc_") and {r["thread_id"] for r in first} == {tid}
    assert [r["message_id"] for r in first] == [f"{tid}:{i}" for i in range(1, 6)]
    assert [r["message_id"] for r in named][:2] == ["thr_9:1", "thr_9:2"]
    assert [r["order"] for r in recs] == list(range(1, 11))
    assert {r["created_at"] for r in recs} == {None}
    assert first[1]["text"] == "Hi" and first[1]["parts"] == {"images": 1}
    assert first[2]["quarantine"] == REASON_TOOL_CALL
    assert first[0]["position"] == "line 1.messages[0]" and named[0]["position"] == "line 2.messages[0]"
    assert {r["assistant_id"] for r in recs} == {DEFAULT_ASSISTANT}


def test_derived_thread_ids_are_stable_and_tell_files_and_contents_apart() -> None:
    data = _jsonl(LINE)
    once = records("chat-completions", data, "a.jsonl")[0]["thread_id"]
    assert records("chat-completions", data, "a.jsonl")[0]["thread_id"] == once
    assert records("chat-completions", data, "b.jsonl")[0]["thread_id"] != once
    other = {"messages": [*LINE["messages"][:-1], {"role": "assistant", "content": "No."}]}
    assert records("chat-completions", _jsonl(other), "a.jsonl")[0]["thread_id"] != once


def test_assistant_is_the_name_else_the_model() -> None:
    assert {r["assistant_id"] for r in records("chat-completions", _jsonl(LINE | {"model": "gpt-4o"}))} == {
        "gpt-4o"
    }
    with using_reader_options(ReaderOptions(assistant_name="support-bot")):
        recs = records("chat-completions", _jsonl(LINE | {"model": "gpt-4o"}))
    assert {r["assistant_id"] for r in recs} == {"support-bot"}


def test_objects_without_messages_are_quarantined() -> None:
    recs = records("chat-completions", b'{"messages": [5]}\nnot json\n{"prompt": "x"}\n')
    assert [r.get("quarantine") for r in recs] == [
        "not a JSON object",
        "malformed JSON",
        "not a Chat Completions conversation (no messages list)",
    ]


def test_detection() -> None:
    assert detect_head(_jsonl(LINE), "train.jsonl") == "chat-completions"
    assert detect_head(b'[{"messages": [{"role": "user", "content": "x"}]}]', "a.json") == "chat-completions"
    assert detect_head(b'{"object": "thread.message", "role": "user", "messages": []}', "a.json") == (
        "assistants-api"
    )


def test_same_pairs_as_the_guide_and_counts_reconcile(tmp_path: Path) -> None:
    layout = run_shape(tmp_path / "cc", "chat-completions")
    assert pairs_per_thread(layout) == guide_pairs(tmp_path / "guide")
    manifest = assert_reconciles(layout)
    assert manifest.select("format", "lines", "staged", "quarantined").rows() == [
        ("chat-completions", 15, 14, 1)
    ]
    assert quarantine_reasons(layout) == {REASON_TOOL_CALL: 1}
    assert unpaired_reasons(layout)[REASON_TOOL] == 1


def test_cli_run(tmp_path: Path) -> None:
    summary = cli_run(tmp_path, "chat-completions", "--assistant-name", "coder")
    assert summary["ok"] and summary["exit_code"] == 0, summary
    assert set(summary["scopes"]) == {"default__coder"}
    scope = summary["scopes"]["default__coder"]
    assert scope["patterns"] == 4 and scope["lines_reconcile"] and scope["messages_reconcile"]
