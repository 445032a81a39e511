"""How a REST load sends its requests, against a scripted server and REAL Engramia 0.6.6 servers on
127.0.0.1: a batch answered 422 is bisected, async import jobs are polled and resubmitted, requests go
concurrently to a server that takes them and one at a time to a JSON-backed one."""

from __future__ import annotations

import hashlib
import json
import threading
import time

import httpx
import pytest

from pipelines.load.ledger import Ledger, Outcome
from pipelines.load.records import kept_patterns
from pipelines.load.rest.options import RestMode, destination_id
from pipelines.load.rest.scope_load import load_rest
from pipelines.load.rest.servers import ServerConfig
from tests.support.rest_load import SCOPE, load, opts

pytestmark = pytest.mark.server


# -- async jobs ------------------------------------------------------------------------------------


def test_async_import_polls_the_job_and_reruns_add_nothing(engramia_server, staged, api_key_env):
    layout, env = staged("single"), api_key_env(engramia_server)
    options = opts(RestMode.IMPORT, async_import=True, job_poll=0.1, max_batch_records=4)
    result = load(layout, engramia_server, env, options)
    assert result.error is None and result.stored == 10 and result.reconciles
    assert len(engramia_server.export()) == 10
    again = load(layout, engramia_server, env, options)
    assert again.sent == 0 and again.pattern_count_after == 10 and again.already_loaded == 10


# -- scripted server -------------------------------------------------------------------------------


class ScriptedServer:
    """Just enough of /v1 for import: refuses (422) any body holding a record whose key is in ``bad``;
    can answer imports asynchronously with a job that first fails."""

    def __init__(self, bad: set[str], async_fail_first: bool = False, delay: float = 0.0) -> None:
        self.bad, self.store, self.bodies = bad, {}, []
        self.jobs: dict[str, dict] = {}
        self.async_fail_first = async_fail_first
        self.delay, self.inflight, self.max_inflight = delay, 0, 0
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            time.sleep(self.delay)
            with self.lock:
                return self.answer(request)
        finally:
            with self.lock:
                self.inflight -= 1

    def answer(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        if path == "/v1/version":
            return httpx.Response(200, json={"app_version": "0.6.6", "api_version": "v1"})
        if path == "/v1/metrics":
            return httpx.Response(200, json={"pattern_count": len(self.store)})
        if path == "/v1/billing/status":
            return httpx.Response(404, json={"detail": "Not Found"})
        if path == "/v1/health":
            return httpx.Response(200, json={"status": "ok", "storage": "PostgresStorage"})
        if path == "/v1/export":
            return httpx.Response(200, json={"records": list(self.store.values()), "count": len(self.store)})
        if path == "/v1/learn":
            body = json.loads(request.content or b"{}")
            if "task" not in body:
                return httpx.Response(
                    422, json={"detail": [{"loc": ["body", "task"], "msg": "Field required"}]}
                )
            key = f"patterns/{hashlib.sha256(body['task'].encode()).hexdigest()[:8]}_{len(self.store)}"
            self.store[key] = {
                "version": 1,
                "key": key,
                "data": {"task": body["task"], "design": {"code": body["code"]}},
            }
            return httpx.Response(200, json={"stored": True, "pattern_count": len(self.store)})
        if path.startswith("/v1/jobs/"):
            return httpx.Response(200, json=self.jobs[path.rsplit("/", 1)[1]])
        if path == "/v1/import" and method == "POST":
            body = json.loads(request.content)
            if "records" not in body:
                return httpx.Response(
                    422, json={"detail": [{"loc": ["body", "records"], "msg": "Field required"}]}
                )
            self.bodies.append(len(body["records"]))
            if any(r["key"] in self.bad for r in body["records"]):
                return httpx.Response(
                    422,
                    json={
                        "error_code": "VALIDATION_ERROR",
                        "detail": "bad record",
                        "issues": ["data.task: not a string"],
                    },
                )
            new = [r for r in body["records"] if r["key"] not in self.store]
            if request.headers.get("Prefer") == "respond-async":
                job_id = f"job{len(self.jobs)}"
                if self.async_fail_first and not self.jobs:
                    self.jobs[job_id] = {"status": "failed", "error": "worker crashed"}
                else:
                    self.store.update((r["key"], r) for r in new)
                    self.jobs[job_id] = {"status": "completed", "result": {"imported": len(new), "total": 0}}
                return httpx.Response(202, json={"job_id": job_id, "status": "pending"})
            self.store.update((r["key"], r) for r in new)
            return httpx.Response(200, json={"imported": len(new), "total": len(body["records"])})
        return httpx.Response(404, json={"detail": "Not Found"})


def test_import_batch_answered_422_is_bisected_down_to_the_bad_record(staged, monkeypatch):
    layout = staged("single")
    pids = kept_patterns(layout, SCOPE).collect()["pattern_id"].to_list()
    bad = {f"patterns/{pids[6]}"}
    fake = ScriptedServer(bad)
    monkeypatch.setenv("SCRIPTED_KEY", "scripted-key-value")
    server = ServerConfig("http://scripted.test", "SCRIPTED_KEY")
    result = load_rest(
        layout,
        SCOPE,
        "default",
        "default",
        server,
        opts(RestMode.IMPORT),
        transport=httpx.MockTransport(fake),
    )
    assert result.error is None
    assert result.rejections == [
        {"pattern_id": pids[6], "reason": "server: bad record; data.task: not a string"}
    ]
    assert result.stored == 9 and len(fake.store) == 9 and result.reconciles
    assert fake.bodies[0] == 10 and len(fake.bodies) <= 1 + 2 * 4  # log2 bisection, not one by one


def test_a_failed_async_job_is_resubmitted(staged, monkeypatch):
    layout = staged("single")
    fake = ScriptedServer(set(), async_fail_first=True)
    monkeypatch.setenv("SCRIPTED_KEY", "scripted-key-value")
    server = ServerConfig("http://scripted.test", "SCRIPTED_KEY")
    result = load_rest(
        layout,
        SCOPE,
        "default",
        "default",
        server,
        opts(RestMode.IMPORT, async_import=True, job_poll=0.01),
        transport=httpx.MockTransport(fake),
    )
    assert result.error is None and result.stored == 10 and len(fake.store) == 10
    assert [j["status"] for j in fake.jobs.values()] == ["failed", "completed"]


@pytest.mark.parametrize("mode", [RestMode.IMPORT, RestMode.LEARN])
def test_concurrent_requests_against_a_server_that_takes_them(staged, monkeypatch, mode):
    layout = staged("single")
    fake = ScriptedServer(set(), delay=0.05)
    monkeypatch.setenv("SCRIPTED_KEY", "scripted-key-value")
    server = ServerConfig("http://scripted.test", "SCRIPTED_KEY")
    options = opts(mode, concurrency=3, max_batch_records=2)
    result = load_rest(
        layout, SCOPE, "default", "default", server, options, transport=httpx.MockTransport(fake)
    )
    assert result.error is None and result.stored == 10 and result.sent == 10 and result.reconciles
    assert fake.max_inflight == 3 and len(fake.store) == 10
    state = Ledger(layout, SCOPE, destination_id(server)).state()
    assert state.height == 10 and set(state["outcome"]) == {Outcome.STORED}
    if mode == RestMode.LEARN:  # the key may export here: every learned key is recorded
        assert set(state["key"]) == set(fake.store)
    again = load_rest(
        layout, SCOPE, "default", "default", server, options, transport=httpx.MockTransport(fake)
    )
    assert again.sent == 0 and len(fake.store) == 10


def test_a_json_backed_server_is_loaded_one_request_at_a_time(engramia_server, staged, api_key_env):
    layout, env = staged("single"), api_key_env(engramia_server)
    said: list[str] = []
    result = load(
        layout,
        engramia_server,
        env,
        opts(RestMode.IMPORT, concurrency=4, max_batch_records=2),
        log=said.append,
    )
    assert any("loading with concurrency 1 instead of 4" in m for m in said)
    assert result.error is None and result.stored == 10 and len(engramia_server.export()) == 10
