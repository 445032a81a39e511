"""The OpenAI side, mocked at the HTTP transport (the hosted API cannot run here)."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from pipelines.ingest.staging import ingest
from pipelines.scopes import ScopeMapping
from pipelines.tools.openai_export import convert_saved_pages, export_threads


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
