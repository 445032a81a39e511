"""The OpenAI side, mocked at the HTTP transport (the hosted API cannot run here)."""

from __future__ import annotations

import json
import warnings

import httpx
import openai
import pytest

from pipelines.ingest.staging import ingest
from pipelines.scopes import ScopeMapping
from pipelines.tools.openai_export import (
    checkpoint_path,
    convert_saved_pages,
    export_conversations,
    export_threads,
    main,
)


def _message(mid, thread, role, text, at, assistant=None):
    return {
        "id": mid,
        "object": "thread.message",
        "created_at": at,
        "thread_id": thread,
        "role": role,
        "assistant_id": assistant,
        "run_id": None,
        "attachments": [],
        "metadata": {},
        "status": "completed",
        "content": [{"type": "text", "text": {"value": text, "annotations": []}}],
    }


THREAD = [
    _message("msg_1", "thread_abc", "user", "Build a CSV parser", 100),
    _message("msg_2", "thread_abc", "assistant", "import csv", 100, "asst_1"),
    _message("msg_3", "thread_abc", "assistant", "then csv.reader(f)", 101, "asst_1"),
]


def _client(handler) -> openai.OpenAI:
    return openai.OpenAI(
        api_key="sk-test",
        base_url="https://api.example.test/v1",
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )


def test_export_paginates_and_fills_the_assistant_of_user_messages(tmp_path):
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        thread = request.url.path.split("/")[3]
        if thread != "thread_abc":
            return httpx.Response(
                404, json={"error": {"message": "No thread found", "type": "invalid_request_error"}}
            )
        after = request.url.params.get("after")
        page = THREAD[:2] if after is None else THREAD[2:]
        return httpx.Response(
            200,
            json={
                "object": "list",
                "data": page,
                "first_id": page[0]["id"],
                "last_id": page[-1]["id"],
                "has_more": after is None,
            },
        )

    out = tmp_path / "export.ndjson"
    result = export_threads(_client(handler), ["thread_abc", "thread_gone"], out)
    assert (result.threads, result.messages, result.not_found) == (1, 3, ["thread_gone"])
    assert seen[0].url.params["order"] == "asc" and seen[0].headers["OpenAI-Beta"].startswith("assistants")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["message_id"] for r in rows] == ["msg_1", "msg_2", "msg_3"]
    assert {r["assistant_id"] for r in rows} == {"asst_1"}
    assert rows[0] == {
        "thread_id": "thread_abc",
        "assistant_id": "asst_1",
        "message_id": "msg_1",
        "role": "user",
        "text": "Build a CSV parser",
        "created_at": 100,
    }
    # The export is valid input for the pipeline.
    from pipelines.tables import DataLayout

    [staged] = ingest(DataLayout.at(tmp_path / "data"), out, ScopeMapping())
    assert (staged.staged, staged.quarantined) == (3, 0)


def test_retired_api_is_a_clear_error(tmp_path):
    def handler(request):
        return httpx.Response(404, json={"error": {"message": "Not found"}})

    with pytest.raises(LookupError, match="retired on 26 Aug 2026"):
        export_threads(_client(handler), ["t1", "t2"], tmp_path / "x.ndjson")


def test_wrong_key_stops_at_once(tmp_path):
    calls = []

    def handler(request):
        calls.append(request)
        return httpx.Response(401, json={"error": {"message": "Incorrect API key"}})

    with pytest.raises(PermissionError, match="check the key") as info:
        export_threads(_client(handler), ["t1", "t2"], tmp_path / "x.ndjson")
    assert len(calls) == 1 and "sk-test" not in str(info.value)


def test_saved_pages_in_default_desc_order(tmp_path):
    pages = tmp_path / "pages.jsonl"
    desc = list(reversed(THREAD))
    pages.write_text("\n".join(json.dumps({"object": "list", "data": desc[i : i + 2]}) for i in (0, 2)))
    out = tmp_path / "export.ndjson"
    result = convert_saved_pages(pages, out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert result.messages == 3
    # msg_1 and msg_2 share a second: the saved order (newest first) decides, reversed.
    assert [r["message_id"] for r in rows] == ["msg_1", "msg_2", "msg_3"]


def _pages_handler(messages_by_thread):
    def handler(request: httpx.Request) -> httpx.Response:
        data = messages_by_thread[request.url.path.split("/")[3]]
        return httpx.Response(
            200,
            json={
                "object": "list",
                "data": data,
                "first_id": data[0]["id"],
                "last_id": data[-1]["id"],
                "has_more": False,
            },
        )

    return handler


def test_the_readme_command_works_on_a_fresh_clone(tmp_path, monkeypatch):
    pages = tmp_path / "pages.jsonl"
    pages.write_text(json.dumps({"object": "list", "data": list(reversed(THREAD))}) + "\n")
    monkeypatch.chdir(tmp_path)
    # data/landing/ does not exist yet.
    assert main(["--saved-pages", str(pages), "--out", "data/landing/export.ndjson"]) == 0
    assert len((tmp_path / "data" / "landing" / "export.ndjson").read_text().splitlines()) == 3
    out = tmp_path / "fresh" / "landing" / "export.ndjson"
    export_threads(_client(_pages_handler({"thread_abc": THREAD})), ["thread_abc"], out)
    assert out.is_file()


def test_user_only_threads_are_counted_and_warned_about_once(tmp_path, capsys):
    user_only = [
        _message("msg_u1", "thread_u1", "user", "anyone there?", 100),
        _message("msg_u2", "thread_u2", "user", "hello?", 100),
    ]
    pages = tmp_path / "pages.jsonl"
    pages.write_text(json.dumps({"object": "list", "data": [*reversed(THREAD), *user_only]}) + "\n")
    out = tmp_path / "export.ndjson"
    assert main(["--saved-pages", str(pages), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("warning:") == 1
    assert "2 threads have no assistant message" in err and "--default-assistant" in err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["assistant_id"] for r in rows if r["thread_id"].startswith("thread_u")] == [None, None]
    # What the warning says becomes of them: ingest quarantines them.
    from pipelines.tables import DataLayout

    [staged] = ingest(DataLayout.at(tmp_path / "data"), out, ScopeMapping())
    assert (staged.staged, staged.quarantined) == (3, 2)
    # With a default assistant nothing is left without one.
    assert main(["--saved-pages", str(pages), "--out", str(out), "--default-assistant", "asst_9"]) == 0
    assert "warning" not in capsys.readouterr().err
    result = export_threads(
        _client(_pages_handler({"thread_u1": user_only[:1], "thread_abc": THREAD})),
        ["thread_u1", "thread_abc"],
        tmp_path / "api.ndjson",
    )
    assert result.without_assistant == 1 and "1 threads" in result.warning()


def test_the_assistants_deprecation_warning_is_silenced_and_nothing_else(tmp_path):
    def handler(request: httpx.Request) -> httpx.Response:
        warnings.warn("something else worth seeing", UserWarning, stacklevel=1)
        return _pages_handler({"thread_abc": THREAD, "thread_b": THREAD})(request)

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        result = export_threads(_client(handler), ["thread_abc", "thread_b"], tmp_path / "x.ndjson")
        # Without the filter the client does warn (once per call): the test would notice it.
        _client(handler).beta.threads.messages.list(thread_id="thread_abc")
    assert result.threads == 2
    kinds = [w.category for w in seen]
    assert kinds.count(DeprecationWarning) == 1
    assert kinds.count(UserWarning) == 3


# --- Conversations API -------------------------------------------------------------------------------


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
    result = export_conversations(_client(server), ["conv_a", "conv_gone", "conv_b"], out, "coder")
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
    export_conversations(_client(ConversationsServer()), ids, whole)

    out = tmp_path / "out" / "conversations.jsonl"
    server = ConversationsServer(fail_on=fail_on)
    with pytest.raises(openai.InternalServerError):
        export_conversations(_client(server), ids, out)
    state = json.loads(checkpoint_path(out).read_text())
    assert state["bytes"] == out.stat().st_size
    # Lines past the checkpoint (a crash between the write and the checkpoint) are cut on resume.
    with out.open("ab") as f:
        f.write(b'{"object": "conversation.message", "half a line')
    result = export_conversations(_client(server), ids, out)
    assert result.resumed and (result.conversations, result.messages) == (2, 9)
    assert out.read_bytes() == whole.read_bytes()
    assert not checkpoint_path(out).exists()
    # The failed request got no page; every page was served exactly once over both runs.
    assert len(server.served) == len(set(server.served)) == 5
    assert server.log.count(server.log[fail_on - 1]) == 2


def test_a_crashing_process_resumes_after_the_last_recorded_page(tmp_path, monkeypatch):
    import pipelines.tools.openai_export as export

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
        export_conversations(_client(server), ["conv_a", "conv_b"], out)
    monkeypatch.setattr(export, "_save_checkpoint", real)
    state = json.loads(checkpoint_path(out).read_text())
    assert state["done"] == ["conv_a"] and state["current"] is None and state["lines"] == 5
    export_conversations(_client(server), ["conv_a", "conv_b"], out)
    assert len(server.served) == len(set(server.served)) == 5
    assert len(out.read_text().splitlines()) == 9


def test_a_checkpoint_that_does_not_fit_is_refused(tmp_path):
    out = tmp_path / "c.jsonl"
    checkpoint_path(out).write_text(json.dumps({"assistant": None, "done": ["conv_a"], "bytes": 10}))
    with pytest.raises(ValueError, match="shorter than its checkpoint"):
        export_conversations(_client(ConversationsServer()), ["conv_a"], out)
    out.write_bytes(b"x" * 10)
    with pytest.raises(ValueError, match="--assistant-name"):
        export_conversations(_client(ConversationsServer()), ["conv_a"], out, "other")


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
