"""The OpenAI side, mocked at the HTTP transport (the hosted API cannot run here)."""

from __future__ import annotations

import json
import warnings

import httpx
import pytest

from pipelines.ingest.staging import ingest
from pipelines.scopes import ScopeMapping
from pipelines.tools.openai_export import convert_saved_pages, export_threads, main
from tests.support.openai_transport import openai_client


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
    result = export_threads(openai_client(handler), ["thread_abc", "thread_gone"], out)
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
        export_threads(openai_client(handler), ["t1", "t2"], tmp_path / "x.ndjson")


def test_wrong_key_stops_at_once(tmp_path):
    calls = []

    def handler(request):
        calls.append(request)
        return httpx.Response(401, json={"error": {"message": "Incorrect API key"}})

    with pytest.raises(PermissionError, match="check the key") as info:
        export_threads(openai_client(handler), ["t1", "t2"], tmp_path / "x.ndjson")
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
    export_threads(openai_client(_pages_handler({"thread_abc": THREAD})), ["thread_abc"], out)
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
        openai_client(_pages_handler({"thread_u1": user_only[:1], "thread_abc": THREAD})),
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
        result = export_threads(openai_client(handler), ["thread_abc", "thread_b"], tmp_path / "x.ndjson")
        # Without the filter the client does warn (once per call): the test would notice it.
        openai_client(handler).beta.threads.messages.list(thread_id="thread_abc")
    assert result.threads == 2
    kinds = [w.category for w in seen]
    assert kinds.count(DeprecationWarning) == 1
    assert kinds.count(UserWarning) == 3
