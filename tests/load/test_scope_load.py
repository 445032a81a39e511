"""The REST destinations against REAL Engramia 0.6.6 servers on 127.0.0.1 (and a few scripted ones):
crashes mid-load, rate limits, wrong keys and roles, body limits, server rejections, quotas, async jobs."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import polars as pl
import pytest

from pipelines.load.ledger import IN_STORE, Ledger, Outcome
from pipelines.load.records import kept_patterns
from pipelines.load.redaction import redact_frame
from pipelines.load.rest.options import RestMode, RestOptions, destination_id
from pipelines.load.rest.scope_load import load_rest
from pipelines.load.rest.servers import ServerConfig
from pipelines.load.store import engramia_scope, open_memory
from pipelines.pairing.pairs import PairingOptions
from pipelines.tables import DataLayout
from tests.support.engramia_server import (
    SAMPLE,
    EngramiaServer,
    api_key_env,
    engramia_server,
    engramia_servers,
    stage,
    staged,
    staged_templates,
)

# pytest finds fixtures among the module's globals: the shared ones, imported
FIXTURES = (api_key_env, engramia_server, engramia_servers, staged, staged_templates)

pytestmark = pytest.mark.server
SCOPE = "default__default"


def opts(mode: str, **kw) -> RestOptions:
    base = dict(requests_per_minute=0, backoff_base=0.05, backoff_max=0.2, max_retries=2, timeout=10)
    base.update(kw)
    return RestOptions(mode=mode, **base)


def load(layout: DataLayout, server: EngramiaServer, env: str, options: RestOptions, **kw):
    return load_rest(layout, SCOPE, "default", "default", ServerConfig(server.url, env), options, **kw)


def stored(server: EngramiaServer) -> list[dict]:
    """What the server's storage holds, read from its files (works whatever the key's role)."""
    memory = open_memory(server.data_path)
    with engramia_scope("default", "default"):
        return memory.export()


def expected(layout: DataLayout) -> pl.DataFrame:
    """The kept patterns as the pipeline sends them (redacted)."""
    kept = kept_patterns(layout, SCOPE).collect()
    return redact_frame(kept)[0]


def ledger_state(layout: DataLayout, server: EngramiaServer) -> pl.DataFrame:
    return Ledger(layout, SCOPE, destination_id(ServerConfig(server.url, "UNUSED"))).state()


class KillOnNth(httpx.HTTPTransport):
    """Lets the Nth POST to ``path`` reach the server and be answered, then SIGKILLs the server and drops
    the answer: the server stored the pattern, the client never saw it. Optionally restarts it."""

    def __init__(self, server: EngramiaServer, path: str, nth: int, restart_after: float | None = None):
        super().__init__()
        self.server, self.path, self.nth, self.restart_after = server, path, nth, restart_after
        self.seen = 0
        self.killed_status: int | None = None
        self.restarter: threading.Thread | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.method == "POST" and request.url.path == self.path:
            self.seen += 1
            if self.seen == self.nth:
                response.read()
                response.close()
                self.killed_status = response.status_code
                self.server.kill()
                if self.restart_after is not None:
                    self.restarter = threading.Timer(self.restart_after, self.server.start)
                    self.restarter.start()
                raise httpx.RemoteProtocolError(
                    "Server disconnected without sending a response.", request=request
                )
        return response


# -- crash in the middle of a load -----------------------------------------------------------------


def test_import_server_killed_mid_load_rerun_stores_every_pattern_exactly_once(
    engramia_server, staged, api_key_env
):
    layout, env = staged("single"), api_key_env(engramia_server)
    want = expected(layout)
    # small bodies: 3 records per request, so the load takes 4 requests; the 2nd batch dies (POST #3,
    # after the empty-body permission probe and batch 1)
    killer = KillOnNth(engramia_server, "/v1/import", 3)
    first = load(
        layout,
        engramia_server,
        env,
        opts(RestMode.IMPORT, max_body_bytes=4096, max_batch_records=3),
        transport=killer,
    )
    assert killer.killed_status == 200  # the server had imported batch 2 when it died
    assert first.error and "Re-run to resume" in first.error
    assert first.stored == 3
    state = ledger_state(layout, engramia_server)
    assert Counter(state["outcome"]) == {Outcome.STORED: 3, Outcome.SENDING: 3}

    engramia_server.start()  # same data path and port
    second = load(
        layout, engramia_server, env, opts(RestMode.IMPORT, max_body_bytes=4096, max_batch_records=3)
    )
    assert second.error is None
    assert second.present == 3  # the batch whose answer was lost: found on the server, not sent
    assert second.stored == 4 and second.sent == 4
    assert second.reconciles and second.pattern_count_after == 10

    records = engramia_server.export()
    keys = [r["key"] for r in records]
    assert len(keys) == 10 and len(set(keys)) == 10
    assert set(keys) == {f"patterns/{pid}" for pid in want["pattern_id"]}
    assert second.ledger_in_store == 10
    assert set(ledger_state(layout, engramia_server)["outcome"]) <= set(IN_STORE)


@pytest.mark.parametrize("role", ["owner", "editor"], ids=["export-resolves", "recall-resolves"])
def test_learn_server_killed_mid_load_rerun_stores_every_pattern_exactly_once(
    engramia_servers, staged, api_key_env, role
):
    server = engramia_servers(role=role)
    layout, env = staged("single"), api_key_env(server)
    want = expected(layout)
    killer = KillOnNth(server, "/v1/learn", 4)  # probe, pattern 1, pattern 2, pattern 3 (dies)
    first = load(layout, server, env, opts(RestMode.LEARN), transport=killer)
    assert killer.killed_status == 200 and first.error
    assert first.stored == 2
    assert Counter(ledger_state(layout, server)["outcome"]) == {Outcome.STORED: 2, Outcome.SENDING: 1}
    assert len(stored(server)) == 3  # 0.6.6 stored the third one before it died

    server.start()
    second = load(layout, server, env, opts(RestMode.LEARN))
    assert second.error is None
    assert second.present == 1 and second.stored == 7 and second.sent == 7
    assert second.reconciles and second.pattern_count_after == 10

    records = stored(server)
    tasks = Counter(r["data"]["task"] for r in records)
    assert len(records) == 10 and tasks == Counter(want["task"].to_list())  # each exactly once
    state = ledger_state(layout, server)
    assert state.height == 10 and set(state["outcome"]) <= set(IN_STORE)
    if role == "owner":  # an export-capable key: every learned key is in the ledger
        assert set(state["key"]) == {r["key"] for r in records}
    else:  # editor: only the one found by recall has its key
        assert state["key"].drop_nulls().len() == 1
        assert state["key"].drop_nulls()[0] in {r["key"] for r in records}


def test_learn_server_restarts_during_the_run_the_lost_answer_is_resolved_in_the_same_run(
    engramia_server, staged, api_key_env
):
    layout, env = staged("single"), api_key_env(engramia_server)
    killer = KillOnNth(engramia_server, "/v1/learn", 3, restart_after=0.5)
    result = load(
        layout,
        engramia_server,
        env,
        opts(RestMode.LEARN, max_retries=12, backoff_base=0.5, backoff_max=2),
        transport=killer,
    )
    killer.restarter.join()
    assert result.error is None, result.error
    assert result.stored == 10 and result.present == 0 and result.sent == 10
    assert result.reconciles and result.pattern_count_after == 10
    records = stored(engramia_server)
    assert len(records) == 10 and len({r["data"]["task"] for r in records}) == 10
    row = ledger_state(layout, engramia_server).filter(pl.col("reason").str.contains("answer lost"))
    assert row.height == 1 and row["key"][0] in {r["key"] for r in records}


# -- rate limits -----------------------------------------------------------------------------------


def test_rate_limited_import_waits_retry_after_and_loses_nothing(engramia_servers, staged, api_key_env):
    # 3 requests per minute per path on the server; the load makes 6 POSTs to /v1/import (the probe and
    # 5 batches of 2), so at least one is answered 429 whatever the minute boundary does
    server = engramia_servers(rate_limit=3)
    layout, env = staged("single"), api_key_env(server)
    options = opts(
        RestMode.IMPORT,
        requests_per_minute=10_000,
        max_batch_records=2,
        max_retry_after=4,
        rate_limit_budget=180,
    )
    messages: list[str] = []
    started = time.monotonic()
    result = load(layout, server, env, options, log=messages.append)
    took = time.monotonic() - started
    assert result.error is None, result.error
    assert result.rate_limited >= 1
    assert result.stored == 10 and result.rejected == 0 and result.reconciles
    assert len(server.export()) == 10
    # each wait followed the server's Retry-After (60 s), capped by max_retry_after
    assert took >= 4 * result.rate_limited - 0.5
    assert took < 130


# -- keys and roles --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [RestMode.LEARN, RestMode.IMPORT])
def test_wrong_key_fails_the_scope_naming_it_and_the_role_and_stores_nothing(
    engramia_server, staged, api_key_env, mode
):
    layout = staged("single")
    wrong = "ebk_wrong_" + "9" * 24
    env = api_key_env(engramia_server, wrong)
    result = load(layout, engramia_server, env, opts(mode))
    assert result.error and "401" in result.error
    assert SCOPE in result.error and env in result.error
    assert f"'{'editor' if mode == RestMode.LEARN else 'admin'}' role" in result.error
    assert wrong not in result.error and engramia_server.api_key not in result.error
    assert result.stored == 0 and result.sent == 0
    assert ledger_state(layout, engramia_server).height == 0
    assert engramia_server.pattern_count() == 0


def test_reader_key_fails_both_modes_with_the_needed_role_and_an_editor_key_cannot_import(
    engramia_servers, staged, api_key_env
):
    reader = engramia_servers(role="reader")
    layout, env = staged("single"), api_key_env(reader)
    for mode, role in ((RestMode.LEARN, "editor"), (RestMode.IMPORT, "admin")):
        result = load(layout, reader, env, opts(mode))
        assert result.error and "403" in result.error and f"'{role}' role" in result.error
        assert SCOPE in result.error and "default/default" in result.error
        assert result.stored == 0 and result.sent == 0 and result.pattern_count_after == 0
    assert not any(o in IN_STORE for o in ledger_state(layout, reader)["outcome"])
    assert stored(reader) == []

    editor = engramia_servers(role="editor")
    result = load(layout, editor, api_key_env(editor), opts(RestMode.IMPORT))
    assert result.error and "'admin' role" in result.error and result.stored == 0
    assert stored(editor) == []


# -- body limit, rejections, redaction -------------------------------------------------------------


def _extra_threads(dir_: Path) -> Path:
    """The sample plus three threads: a 12,000-char question (over the server's task limit), a 9,000-char
    answer (over a small body limit) and one full of personal data."""
    src = dir_ / "landing"
    src.mkdir(parents=True)
    for p in SAMPLE.glob("*.ndjson"):
        (src / p.name).write_bytes(p.read_bytes())
    rows = []

    def add(thread: str, q: str, a: str) -> None:
        for i, (role, text) in enumerate((("user", q), ("assistant", a))):
            rows.append(
                {
                    "thread_id": thread,
                    "assistant_id": "asst_extra",
                    "message_id": f"{thread}_{i}",
                    "role": role,
                    "text": text,
                    "created_at": 1_717_300_000 + i,
                }
            )

    add("thread_longtask", "Please review this log: " + "lorem ipsum " * 1_000, "It looks fine.")
    add("thread_longcode", "Generate the fixture table.", "row;" * 2_250)
    add(
        "thread_pii",
        "My email is jane.roe@example.com and my server is 10.20.30.40, call +44 20 7946 0958",
        "Use Authorization: Bearer abcdef1234567890abcdef and never share sk-abcdefghijklmnopqrstuvwx",
    )
    (src / "extra.ndjson").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return src


@pytest.fixture
def extra_layout(tmp_path) -> DataLayout:
    src = _extra_threads(tmp_path)
    return stage(
        src, tmp_path / "data", "single", PairingOptions(task_max_chars=20_000, code_max_chars=20_000)
    )


def _pid(layout: DataLayout, thread: str) -> str:
    kept = kept_patterns(layout, SCOPE).collect()
    return kept.filter(pl.col("thread_id") == thread)["pattern_id"][0]


def test_import_batch_over_the_body_limit_is_split_and_an_oversize_record_rejected(
    engramia_servers, extra_layout, api_key_env
):
    server = engramia_servers(max_body=3_000)  # the client is not told: it batches for 1 MiB
    env = api_key_env(server)
    said: list[str] = []
    result = load(extra_layout, server, env, opts(RestMode.IMPORT), log=said.append)
    assert result.error is None, result.error
    assert any("413 for 12 records; splitting the batch" in m for m in said)
    big, long_task = _pid(extra_layout, "thread_longcode"), _pid(extra_layout, "thread_longtask")
    reasons = {r["pattern_id"]: r["reason"] for r in result.rejections}
    assert set(reasons) == {big, long_task}  # the long task never left: the pipeline's validation
    assert reasons[big] == (
        "server: record of 9,571 bytes over the body limit "
        "(Request body too large. Maximum allowed: 3000 bytes.)"
    )
    assert result.stored == 11 and result.reconciles  # the 10 of the sample + the PII thread
    keys = {r["key"] for r in server.export()}
    assert len(keys) == 11 and f"patterns/{big}" not in keys
    state = ledger_state(extra_layout, server)
    assert state.filter(pl.col("pattern_id") == big)["outcome"][0] == Outcome.REJECTED

    # a re-run does not ask the server again about what it refused, and sends nothing
    again = load(extra_layout, server, env, opts(RestMode.IMPORT))
    assert again.sent == 0 and again.skipped == 1 and again.rejected == 1 and again.stored == 0

    # told the real limit, a client fills bodies under it and never sends what cannot fit
    fresh = engramia_servers(max_body=3_000)
    layout2 = DataLayout.at(extra_layout.root.parent / "data2")
    shutil.copytree(extra_layout.root, layout2.root)
    told = load(layout2, fresh, api_key_env(fresh), opts(RestMode.IMPORT, max_body_bytes=4_096))
    assert told.stored == 11 and told.rejected == 2
    assert {r["pattern_id"]: r["reason"] for r in told.rejections}[big].startswith(
        "pipeline: import record of 9,571 bytes does not fit a request body"
    )
    assert len(fresh.export()) == 11


def test_learn_422_is_recorded_with_the_servers_reason_while_the_rest_loads(
    engramia_servers, extra_layout, api_key_env
):
    engramia_server = engramia_servers()
    env = api_key_env(engramia_server)
    long_task = _pid(extra_layout, "thread_longtask")
    result = load(extra_layout, engramia_server, env, opts(RestMode.LEARN, validate=False))
    assert result.error is None, result.error
    assert result.rejected == 1
    assert result.rejections == [
        {"pattern_id": long_task, "reason": "server: task: String should have at most 10000 characters"}
    ]
    assert result.stored == 12 and result.reconciles
    state = ledger_state(extra_layout, engramia_server)
    assert state.filter(pl.col("outcome") == Outcome.REJECTED)["pattern_id"].to_list() == [long_task]

    # the pipeline's own validation (on by default) catches it before sending, in import mode too
    layout2 = DataLayout.at(extra_layout.root.parent / "data2")
    shutil.copytree(extra_layout.root, layout2.root)
    server2 = engramia_servers()
    res = load(layout2, server2, api_key_env(server2), opts(RestMode.IMPORT))
    assert res.rejected == 1 and res.rejections[0]["pattern_id"] == long_task
    assert re.fullmatch(
        r"pipeline: task has 120\d\d chars \(limit 10000\) \(server limit\)", res.rejections[0]["reason"]
    )
    assert res.sent == 12 and res.stored == 12 and len(server2.export()) == 12


def test_pii_is_redacted_in_task_and_code_in_both_modes(engramia_servers, extra_layout, api_key_env):
    pid = _pid(extra_layout, "thread_pii")
    for mode in (RestMode.IMPORT, RestMode.LEARN):
        server = engramia_servers()
        layout = DataLayout.at(extra_layout.root.parent / f"copy-{mode}")
        shutil.copytree(extra_layout.root, layout.root)
        result = load(layout, server, api_key_env(server), opts(mode, validate=True))
        assert result.error is None
        counts = json.loads(result.redactions)
        assert counts["email"] == 1 and counts["ipv4"] == 1 and counts["phone"] == 1
        assert counts["bearer"] == 1 and counts["api_key"] == 1
        [rec] = [r for r in server.export() if "[EMAIL]" in r["data"]["task"]]
        assert rec["data"]["task"] == "My email is [EMAIL] and my server is [IPV4], call [PHONE]"
        assert rec["data"]["design"]["code"] == "Use Authorization: Bearer [TOKEN] and never share [API_KEY]"
        text = json.dumps(server.export())
        assert "jane.roe@example.com" not in text and "10.20.30.40" not in text and "sk-abcdef" not in text
        if mode == RestMode.IMPORT:
            assert rec["key"] == f"patterns/{pid}"


# -- capacity, async, scripted 422 bisection --------------------------------------------------------


def test_capacity_preflight_refuses_before_sending_and_quota_exceeded_stops_with_what_to_fix(
    engramia_servers, staged, api_key_env
):
    # the sandbox plan allows 5,000 patterns; at 0.1% a project may hold 5
    server = engramia_servers(env={"ENGRAMIA_PROJECT_QUOTA_PCT": "0.001"})
    layout, env = staged("single"), api_key_env(server)
    result = load(layout, server, env, opts(RestMode.IMPORT, quota_pct=0.001))
    assert result.error and "cannot take 10 more patterns" in result.error and "quota is 5" in result.error
    assert result.sent == 0 and server.pattern_count() == 0
    assert ledger_state(layout, server).height == 0

    # a client that does not know the server's setting learns until the server says QUOTA_EXCEEDED
    result = load(layout, server, env, opts(RestMode.LEARN))
    assert result.error and "QUOTA_EXCEEDED" in result.error and "ENGRAMIA_PROJECT_QUOTA_PCT" in result.error
    assert result.stored == 5 and result.failed == 1 and result.reconciles
    assert server.pattern_count() == 5 == result.ledger_in_store


def test_async_import_polls_the_job_and_reruns_add_nothing(engramia_server, staged, api_key_env):
    layout, env = staged("single"), api_key_env(engramia_server)
    options = opts(RestMode.IMPORT, async_import=True, job_poll=0.1, max_batch_records=4)
    result = load(layout, engramia_server, env, options)
    assert result.error is None and result.stored == 10 and result.reconciles
    assert len(engramia_server.export()) == 10
    again = load(layout, engramia_server, env, options)
    assert again.sent == 0 and again.pattern_count_after == 10 and again.already_loaded == 10


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
