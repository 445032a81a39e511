"""The Conversations API export at the HTTP transport level: lines, counts, checkpoints that resume an
interrupted export without fetching a page twice, and the ingest of what it writes."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from pipelines.tools.conversations_export import checkpoint_path, export_conversations
from pipelines.tools.openai_export import main
from tests.support.openai_transport import openai_client


def _msg_item(iid, role, *parts):
    return {"type": "message", "id": iid, "role": role, "status": "completed", "content": list(parts)}


def _in(text):
    return {"type": "input_text", "text": text}


def _out(text):
    return {"type": "output_text", "text": text, "annotations": []}


CONVERSATIONS = {
    "conv_a": [
        _msg_item("msg_a0", "developer", _in("Be brief.")),
        _msg_item("msg_a1", "user", _in("Build a CSV parser")),
        {"type": "reasoning", "id": "rs_a1", "summary": []},
        _msg_item("msg_a2", "assistant", _out("import csv")),
        {"type": "function_call", "id": "fc_a1", "call_id": "c1", "name": "run", "arguments": "{}"},
        {"type": "function_call_output", "id": "fco_a1", "call_id": "c1", "output": "ok"},
        _msg_item("msg_a3", "user", {"type": "input_image", "image_url": "https://x/i"}, _in("And JSON?")),
        _msg_item("msg_a4", "assistant", _out("import json"), {"type": "refusal", "refusal": "No YAML."}),
    ],
    "conv_b": [
        _msg_item("msg_b1", "user", _in("Sort a list")),
        _msg_item("msg_b2", "assistant", _out("sorted(xs)")),
        _msg_item("msg_b3", "user", _in("Reversed?")),
        _msg_item("msg_b4", "assistant", _out("sorted(xs, reverse=True)")),
    ],
}


class ConversationsServer:
    """An OpenAI-compatible ``GET /v1/conversations/{id}/items`` that pages by ``page_size`` and logs
    every request; ``fail_on`` makes the n-th request (1-based) answer 500 once."""

    def __init__(self, page_size: int = 3, fail_on: int | None = None) -> None:
        self.page_size = page_size
        self.fail_on = fail_on
        self.log: list[tuple[str, str | None]] = []
        self.served: list[tuple[str, str | None]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.split("/")
        assert parts[2] == "conversations" and parts[4] == "items", request.url
        cid, after = parts[3], request.url.params.get("after")
        self.log.append((cid, after))
        if self.fail_on is not None and len(self.log) == self.fail_on:
            return httpx.Response(500, json={"error": {"message": "boom", "type": "server_error"}})
        if cid not in CONVERSATIONS:
            return httpx.Response(404, json={"error": {"message": "Conversation not found"}})
        assert request.url.params["order"] == "asc"
        items = CONVERSATIONS[cid]
        start = 0 if after is None else [i["id"] for i in items].index(after) + 1
        limit = min(int(request.url.params.get("limit", 20)), self.page_size)
        page = items[start : start + limit]
        self.served.append((cid, after))
        return httpx.Response(
            200,
            json={
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": start + limit < len(items),
            },
        )


def test_conversations_export_lines_and_counts(tmp_path):
    server = ConversationsServer()
    out = tmp_path / "landing" / "conversations.jsonl"
    result = export_conversations(openai_client(server), ["conv_a", "conv_gone", "conv_b"], out, "coder")
    assert (result.conversations, result.messages, result.not_found) == (2, 9, ["conv_gone"])
    assert result.other_items == {"reasoning": 1, "function_call": 1, "function_call_output": 1}
    assert result.skipped_parts == 1 and not checkpoint_path(out).exists()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["item_id"] for r in rows] == [
        *(f"msg_a{i}" for i in range(5)),
        *(f"msg_b{i}" for i in range(1, 5)),
    ]
    assert rows[1] == {
        "object": "conversation.message",
        "conversation_id": "conv_a",
        "item_id": "msg_a1",
        "role": "user",
        "text": "Build a CSV parser",
        "assistant": "coder",
        "parts": {},
    }
    assert rows[3]["text"] == "And JSON?" and rows[3]["parts"] == {"images": 1}
    assert rows[4]["text"] == "import json\n\nNo YAML."
    # conv_a spans three pages of 3, conv_b two; every page asked for once.
    assert server.log == [
        ("conv_a", None),
        ("conv_a", "rs_a1"),
        ("conv_a", "fco_a1"),
        ("conv_gone", None),
        ("conv_b", None),
        ("conv_b", "msg_b3"),
    ]


@pytest.mark.parametrize("fail_on", [2, 3, 4, 5])
def test_an_interrupted_export_resumes_and_fetches_nothing_twice(tmp_path, fail_on):
    ids = ["conv_a", "conv_b"]
    whole = tmp_path / "whole.jsonl"
    export_conversations(openai_client(ConversationsServer()), ids, whole)

    out = tmp_path / "out" / "conversations.jsonl"
    server = ConversationsServer(fail_on=fail_on)
    with pytest.raises(openai.InternalServerError):
        export_conversations(openai_client(server), ids, out)
    state = json.loads(checkpoint_path(out).read_text())
    assert state["bytes"] == out.stat().st_size
    # Lines past the checkpoint (a crash between the write and the checkpoint) are cut on resume.
    with out.open("ab") as f:
        f.write(b'{"object": "conversation.message", "half a line')
    result = export_conversations(openai_client(server), ids, out)
    assert result.resumed and (result.conversations, result.messages) == (2, 9)
    assert out.read_bytes() == whole.read_bytes()
    assert not checkpoint_path(out).exists()
    # The failed request got no page; every page was served exactly once over both runs.
    assert len(server.served) == len(set(server.served)) == 5
    assert server.log.count(server.log[fail_on - 1]) == 2


def test_a_crashing_process_resumes_after_the_last_recorded_page(tmp_path, monkeypatch):
    import pipelines.tools.conversations_export as export

    server = ConversationsServer()
    out = tmp_path / "c.jsonl"
    real = export._save_checkpoint
    saves = []

    def crash_on_third(path, state):
        real(path, state)
        saves.append(state.after)
        if len(saves) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(export, "_save_checkpoint", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        export_conversations(openai_client(server), ["conv_a", "conv_b"], out)
    monkeypatch.setattr(export, "_save_checkpoint", real)
    state = json.loads(checkpoint_path(out).read_text())
    assert state["done"] == ["conv_a"] and state["current"] is None and state["lines"] == 5
    export_conversations(openai_client(server), ["conv_a", "conv_b"], out)
    assert len(server.served) == len(set(server.served)) == 5
    assert len(out.read_text().splitlines()) == 9


def test_a_checkpoint_that_does_not_fit_is_refused(tmp_path):
    out = tmp_path / "c.jsonl"
    checkpoint_path(out).write_text(json.dumps({"assistant": None, "done": ["conv_a"], "bytes": 10}))
    with pytest.raises(ValueError, match="shorter than its checkpoint"):
        export_conversations(openai_client(ConversationsServer()), ["conv_a"], out)
    out.write_bytes(b"x" * 10)
    with pytest.raises(ValueError, match="--assistant-name"):
        export_conversations(openai_client(ConversationsServer()), ["conv_a"], out, "other")


def test_conversations_cli_and_end_to_end_ingest(tmp_path, monkeypatch, capsys):
    import contextlib
    import io

    from assets.cli.main import main as backfill_main
    from pipelines.ingest.formats import FORMATS, detect_format
    from pipelines.tools import shapes

    server = ConversationsServer()
    real_client = openai.OpenAI

    def stand_in(**kwargs):
        kwargs.update(max_retries=0, http_client=httpx.Client(transport=httpx.MockTransport(server)))
        return real_client(**kwargs)

    monkeypatch.setattr(openai, "OpenAI", stand_in)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ids.txt").write_text("conv_a\n\nconv_b\n")
    argv = ["--conversations", "ids.txt", "--out", "data/landing/conversations.jsonl"]
    assert main([*argv, "--base-url", "https://api.example.test/v1", "--assistant-name", "coder"]) == 0
    printed = capsys.readouterr().out
    assert "2 conversations, 9 messages" in printed and "1 function_call" in printed
    exported = tmp_path / "data" / "landing" / "conversations.jsonl"

    # Exactly one reader claims the export, and the new reader claims none of the other shapes.
    head = exported.read_bytes()[:65536]
    assert [n for n, r in FORMATS.items() if r.detect(head, exported.name)] == ["openai-conversations"]
    assert detect_format(exported) == "openai-conversations"
    for shape in shapes.all_writers():
        for path in shapes.write_shape(shape, tmp_path / "shapes" / shape):
            if path.suffix in (".json", ".jsonl", ".ndjson"):
                assert not FORMATS["openai-conversations"].detect(path.read_bytes()[:65536], path.name)

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
        backfill_main(["run", "--input", str(exported), "--data-dir", str(tmp_path / "d"), "--json"])
    text = buf.getvalue()
    summary = json.loads(text[text.index("{") :])
    assert summary["exit_code"] == 0 and summary["ok"], summary
    assert set(summary["scopes"]) == {"default__coder"}
    scope = summary["scopes"]["default__coder"]
    # conv_a: (Build a CSV parser, import csv), (And JSON?, import json / No YAML.); conv_b: two exchanges.
    assert scope["patterns"] == 4 and scope["lines_reconcile"] and scope["messages_reconcile"]
