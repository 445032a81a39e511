"""An OpenAI-compatible server on 127.0.0.1 for the judge's tests, scripted per test.

It serves what the judge uses: ``POST /v1/chat/completions``, ``POST /v1/files`` (multipart upload),
``GET /v1/files/{id}/content``, ``POST /v1/batches`` and ``GET /v1/batches/{id}``. By default every
chat request is answered ``{"score": 8, "reason": "..."}`` with usage figures; a test sets ``grade``
(the score and reason for a request body) or ``script`` (the whole reply for the n-th chat request:
a status, a body or raw text, headers), or ``structured = False`` to refuse ``response_format`` like
servers without structured outputs. Every request is recorded (path, body, headers) for assertions.
"""

from __future__ import annotations

import email.parser
import itertools
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

PROMPT_TOKENS, COMPLETION_TOKENS = 120, 20


@dataclass
class Reply:
    status: int = 200
    body: dict[str, Any] | str | bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def task_of(body: dict[str, Any]) -> str:
    """The task text inside a judge request."""
    text = body["messages"][-1]["content"]
    match = re.search(r"<task>\n(.*?)\n</task>", text, re.DOTALL)
    return match.group(1) if match else text


def chat_body(
    content: str, model: str = "m", prompt: int = PROMPT_TOKENS, completion: int = COMPLETION_TOKENS
):
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


class OpenAIServer:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, Any] | None, dict[str, str]]] = []
        self.grade: Callable[[dict[str, Any]], tuple[float, str]] = lambda body: (8.0, "clear and reusable")
        self.script: Callable[[dict[str, Any], int], Reply | None] | None = None
        self.structured = True
        # Batches complete on the poll after this many polls.
        self.batch_polls = 1
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self._chat_count = itertools.count()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> OpenAIServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def chat_calls(self) -> list[dict[str, Any]]:
        return [b for m, p, b, _ in self.requests if p == "/v1/chat/completions" and b is not None]

    def calls(self, path_prefix: str) -> int:
        return sum(1 for _, p, _, _ in self.requests if p.startswith(path_prefix))

    def next_id(self, prefix: str) -> str:
        with self._lock:
            return f"{prefix}-{next(self._ids)}"

    # -- behaviour ---------------------------------------------------------------------------------

    def chat(self, body: dict[str, Any]) -> Reply:
        n = next(self._chat_count)
        if "response_format" in body and not self.structured:
            return Reply(
                400,
                {
                    "error": {
                        "message": "response_format json_schema is not supported",
                        "type": "invalid_request_error",
                        "param": "response_format",
                    }
                },
            )
        if self.script is not None and (reply := self.script(body, n)) is not None:
            return reply
        score, reason = self.grade(body)
        return Reply(200, chat_body(json.dumps({"score": score, "reason": reason}), body.get("model", "m")))

    def batch_object(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": batch["id"],
            "object": "batch",
            "endpoint": batch["endpoint"],
            "input_file_id": batch["input_file_id"],
            "completion_window": "24h",
            "status": batch["status"],
            "output_file_id": batch.get("output_file_id"),
            "error_file_id": None,
            "created_at": 0,
        }

    def run_batch(self, batch: dict[str, Any]) -> None:
        out = []
        for line in self.files[batch["input_file_id"]].decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            reply = self.chat(item["body"])
            body = reply.body if isinstance(reply.body, dict) else {"raw": reply.body}
            out.append(
                json.dumps(
                    {
                        "id": f"req-{item['custom_id']}",
                        "custom_id": item["custom_id"],
                        "response": {"status_code": reply.status, "body": body},
                        "error": None,
                    }
                )
            )
        file_id = self.next_id("file")
        self.files[file_id] = ("\n".join(out) + "\n").encode()
        batch["output_file_id"] = file_id
        batch["status"] = "completed"


def _handler(server: OpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send(self, reply: Reply) -> None:
            if isinstance(reply.body, dict):
                data, kind = json.dumps(reply.body).encode(), "application/json"
            elif isinstance(reply.body, bytes):
                data, kind = reply.body, "application/octet-stream"
            else:
                data, kind = (reply.body or "").encode(), "application/json"
            self.send_response(reply.status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            for k, v in reply.headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_POST(self) -> None:
            raw = self._body()
            path = self.path.split("?")[0]
            if path == "/v1/files":
                message = email.parser.BytesParser().parsebytes(
                    f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + raw
                )
                parts = {p.get_param("name", header="content-disposition"): p for p in message.get_payload()}
                file_id = server.next_id("file")
                server.files[file_id] = parts["file"].get_payload(decode=True)
                server.requests.append(("POST", path, None, {k.lower(): v for k, v in self.headers.items()}))
                self._send(
                    Reply(
                        200,
                        {
                            "id": file_id,
                            "object": "file",
                            "bytes": len(server.files[file_id]),
                            "created_at": 0,
                            "filename": "judge.jsonl",
                            "purpose": "batch",
                            "status": "processed",
                        },
                    )
                )
                return
            body = json.loads(raw or b"{}")
            server.requests.append(("POST", path, body, {k.lower(): v for k, v in self.headers.items()}))
            if path == "/v1/chat/completions":
                self._send(server.chat(body))
            elif path == "/v1/batches":
                batch = {
                    "id": server.next_id("batch"),
                    "endpoint": body["endpoint"],
                    "input_file_id": body["input_file_id"],
                    "status": "in_progress",
                    "polls": 0,
                }
                server.batches[batch["id"]] = batch
                self._send(Reply(200, server.batch_object(batch)))
            else:
                self._send(Reply(404, {"error": {"message": f"no route {path}"}}))

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            server.requests.append(("GET", path, None, {k.lower(): v for k, v in self.headers.items()}))
            if m := re.fullmatch(r"/v1/batches/([\w-]+)", path):
                batch = server.batches[m.group(1)]
                batch["polls"] += 1
                if batch["status"] == "in_progress" and batch["polls"] > server.batch_polls:
                    server.run_batch(batch)
                self._send(Reply(200, server.batch_object(batch)))
            elif m := re.fullmatch(r"/v1/files/([\w-]+)/content", path):
                self._send(Reply(200, server.files[m.group(1)]))
            else:
                self._send(Reply(404, {"error": {"message": f"no route {path}"}}))

    return Handler


@pytest.fixture
def openai_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIServer]:
    """A started server, and a key in ``JUDGE_TEST_KEY`` (a dummy: the server checks nothing)."""
    monkeypatch.setenv("JUDGE_TEST_KEY", "sk-test-judge-key-not-secret")
    server = OpenAIServer().start()
    try:
        yield server
    finally:
        server.stop()
