"""Client pieces without a server: backoff, rate limiter, byte batching, status handling, the key's
handling, the servers mapping file and the server-limit validation."""

from __future__ import annotations

import itertools
import json
import random

import httpx
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.load.limits import CODE_MAX_CHARS, TASK_MAX_CHARS, split_valid
from pipelines.load.rest.client import (
    AmbiguousRequest,
    AuthError,
    Backoff,
    EngramiaClient,
    MissingApiKey,
    QuotaExceeded,
    RateLimiter,
    RateLimitExhausted,
    Rejected,
    ServerUnavailable,
    error_reason,
    parse_retry_after,
)
from pipelines.load.rest.scope_load import ENVELOPE_HEAD, ENVELOPE_TAIL, encode, import_body, pack_by_bytes
from pipelines.load.rest.servers import ServerConfig, ServerConfigError, ServerMap, normalize_url

SECRET = "ebk_unit_0123456789abcdef0123456789abcdef"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


# -- backoff ---------------------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap_with_jitter_inside_bounds():
    b = Backoff(base=0.5, factor=2, cap=8, max_retries=10)
    assert [b.ceiling(n) for n in range(1, 8)] == [0.5, 1, 2, 4, 8, 8, 8]
    rng = random.Random(7)
    for n in range(1, 8):
        delays = [b.delay(n, rng) for _ in range(200)]
        assert all(b.ceiling(n) / 2 <= d <= b.ceiling(n) for d in delays)
        assert max(delays) - min(delays) > 0.2 * b.ceiling(n)  # jittered, not constant


# -- rate limiter ----------------------------------------------------------------------------------


def test_rate_limiter_spaces_requests_evenly_and_never_exceeds_the_window():
    clock = FakeClock()
    limiter = RateLimiter(60, clock=clock, sleep=clock.sleep)
    times = []
    for _ in range(130):
        limiter.acquire()
        times.append(clock.now)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) == pytest.approx(1.0)
    # any fixed one-minute window (like the server's) holds at most 60 of them
    for start in range(int(times[0]), int(times[-1])):
        assert sum(1 for t in times if start <= t < start + 60) <= 60


def test_rate_limiter_block_pushes_everyone_back_and_zero_means_unlimited():
    clock = FakeClock()
    limiter = RateLimiter(6000, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    limiter.block(30)
    assert limiter.acquire() == pytest.approx(30)
    free = RateLimiter(0, clock=clock, sleep=clock.sleep)
    before = clock.now
    for _ in range(1000):
        assert free.acquire() == 0
    assert clock.now == before


# -- byte batching ---------------------------------------------------------------------------------


@given(
    sizes=st.lists(st.integers(min_value=1, max_value=3_000), max_size=200),
    budget=st.integers(min_value=100, max_value=10_000),
    max_records=st.integers(min_value=1, max_value=50),
)
def test_pack_by_bytes_keeps_order_and_every_body_under_the_budget(sizes, budget, max_records):
    batches, oversize = pack_by_bytes(sizes, budget, max_records)
    overhead = len(ENVELOPE_HEAD) + len(ENVELOPE_TAIL)
    flat = [i for b in batches for i in b]
    assert sorted(flat + oversize) == list(range(len(sizes)))
    assert flat == sorted(flat)  # order kept
    for batch in batches:
        assert batch and len(batch) <= max_records
        assert overhead + sum(sizes[i] for i in batch) + len(batch) - 1 <= budget
    assert all(overhead + sizes[i] > budget for i in oversize)


def test_pack_by_bytes_body_size_is_exact_for_real_records():
    records = [
        {"version": 1, "key": f"patterns/oai_{i}", "data": {"task": "é" * i, "n": i}} for i in range(60)
    ]
    encoded = [encode(r) for r in records]
    batches, oversize = pack_by_bytes([len(e) for e in encoded], 1_000, 100)
    assert not oversize and len(batches) > 3
    for batch in batches:
        body = import_body([encoded[i] for i in batch])
        assert len(body) <= 1_000
        assert json.loads(body) == {"records": [records[i] for i in batch], "overwrite": False}


# -- the client against scripted answers -----------------------------------------------------------


def make_client(handler, monkeypatch, clock=None, **kw) -> tuple[EngramiaClient, FakeClock]:
    monkeypatch.setenv("UNIT_ENGRAMIA_KEY", SECRET)
    clock = clock or FakeClock()
    kw.setdefault("backoff", Backoff(base=0.1, cap=1, max_retries=3))
    client = EngramiaClient(
        "http://engramia.test",
        "UNIT_ENGRAMIA_KEY",
        label="unit",
        requests_per_minute=0,
        transport=httpx.MockTransport(handler),
        sleep=clock.sleep,
        clock=clock,
        rng=random.Random(1),
        **kw,
    )
    return client, clock


def test_auth_header_comes_from_the_named_variable_and_never_shows(monkeypatch):
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(200, json={"pattern_count": 3})

    client, _ = make_client(handler, monkeypatch)
    assert client.pattern_count() == 3
    assert seen == [f"Bearer {SECRET}"]
    assert SECRET not in repr(client) and SECRET not in repr(client._http.auth)
    monkeypatch.setenv("UNIT_ENGRAMIA_KEY", "rotated-key-value-1234")
    client.pattern_count()
    assert seen[-1] == "Bearer rotated-key-value-1234"  # read when the request is built
    monkeypatch.delenv("UNIT_ENGRAMIA_KEY")
    with pytest.raises(MissingApiKey, match="UNIT_ENGRAMIA_KEY is not set"):
        client.pattern_count()


def test_429_rate_limited_waits_retry_after_capped_then_succeeds(monkeypatch):
    answers = iter(
        [
            httpx.Response(
                429, json={"error_code": "RATE_LIMITED", "detail": "slow down"}, headers={"Retry-After": "60"}
            ),
            httpx.Response(429, json={"error_code": "RATE_LIMITED"}, headers={"Retry-After": "3"}),
            httpx.Response(200, json={"pattern_count": 1}),
        ]
    )
    client, clock = make_client(lambda r: next(answers), monkeypatch, max_retry_after=10)
    assert client.pattern_count() == 1
    assert client.stats.retry_after_waits == [(60.0, 10.0), (3.0, 3.0)]
    assert clock.slept == [10.0, 3.0]  # the limiter slept exactly what Retry-After asked (capped)
    assert client.stats.rate_limited == 2 and client.stats.retries == 0


def test_429_rate_limited_beyond_the_budget_gives_up(monkeypatch):
    def handler(request):
        return httpx.Response(429, json={"error_code": "RATE_LIMITED"}, headers={"Retry-After": "60"})

    client, _ = make_client(handler, monkeypatch, max_retry_after=60, rate_limit_budget=150)
    with pytest.raises(RateLimitExhausted):
        client.pattern_count()
    assert client.stats.rate_limited == 2


def test_429_quota_exceeded_is_not_retried(monkeypatch):
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(
            429, json={"error_code": "QUOTA_EXCEEDED", "detail": "Project pattern quota reached"}
        )

    client, _ = make_client(handler, monkeypatch)
    with pytest.raises(QuotaExceeded, match="quota reached"):
        client.request("POST", "/v1/learn", json={})
    assert len(calls) == 1


def test_5xx_and_dropped_connections_are_retried_for_idempotent_calls(monkeypatch):
    answers = iter(
        ["drop", httpx.Response(503, json={"detail": "storage"}), httpx.Response(200, json={"imported": 2})]
    )

    def handler(request):
        a = next(answers)
        if a == "drop":
            raise httpx.RemoteProtocolError("server disconnected", request=request)
        return a

    client, clock = make_client(handler, monkeypatch)
    reply = client.request("POST", "/v1/import", json={"records": []})
    assert reply.body == {"imported": 2} and reply.retried_ambiguous
    assert client.stats.retries == 2 and len(clock.slept) == 2


def test_non_idempotent_call_is_ambiguous_after_a_lost_answer_but_retried_when_never_sent(monkeypatch):
    answers = iter(["refused", "refused", "drop"])

    def handler(request):
        a = next(answers)
        if a == "refused":
            raise httpx.ConnectError("connection refused", request=request)
        raise httpx.ReadError("connection reset", request=request)

    client, _ = make_client(handler, monkeypatch)
    with pytest.raises(AmbiguousRequest) as info:
        client.request("POST", "/v1/learn", json={}, idempotent=False)
    assert info.value.reason == "dropped"
    assert client.stats.retries == 2  # the two refused connections were retried, the lost answer was not

    client, _ = make_client(lambda r: httpx.Response(500, json={"detail": "boom"}), monkeypatch)
    with pytest.raises(AmbiguousRequest):
        client.request("POST", "/v1/learn", json={}, idempotent=False)


def test_retries_run_out(monkeypatch):
    def handler(request):
        raise httpx.ConnectError("connection refused", request=request)

    client, clock = make_client(handler, monkeypatch)
    with pytest.raises(ServerUnavailable, match="gave up after 3 retries"):
        client.pattern_count()
    assert len(clock.slept) == 3 and clock.slept == sorted(clock.slept)


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_are_typed_and_carry_the_reason(monkeypatch, status):
    def handler(request):
        return httpx.Response(
            status, json={"error_code": "FORBIDDEN", "detail": "Role 'reader' lacks 'learn'."}
        )

    client, _ = make_client(handler, monkeypatch)
    with pytest.raises(AuthError) as info:
        client.request("POST", "/v1/learn", json={})
    assert info.value.status == status and "reader" in info.value.reason
    assert SECRET not in str(info.value)


def test_422_reasons_are_readable_without_echoing_the_input(monkeypatch):
    body = {
        "detail": [
            {
                "type": "string_too_long",
                "loc": ["body", "task"],
                "msg": "String should have at most 10000 characters",
                "input": "x" * 12_000,
            }
        ]
    }
    client, _ = make_client(lambda r: httpx.Response(422, json=body), monkeypatch)
    with pytest.raises(Rejected) as info:
        client.request("POST", "/v1/learn", json={})
    assert info.value.reason == "task: String should have at most 10000 characters"
    assert error_reason(
        {"error_code": "VALIDATION_ERROR", "detail": "Invalid", "issues": ["code is blank"]}
    ) == ("Invalid; code is blank")


def test_retry_after_parsing():
    assert parse_retry_after("60") == 60
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # a date in the past


# -- servers mapping -------------------------------------------------------------------------------


def test_servers_file_yaml_by_scope_and_by_tenant_project(tmp_path):
    path = tmp_path / "servers.yaml"
    path.write_text(
        "defaults:\n  url: https://engramia.example.com/v1/\n"
        "scopes:\n"
        "  - scope: acme__asst_coder\n    api_key_env: KEY_CODER\n"
        "  - tenant: acme\n    project: asst_support\n"
        "    url: http://127.0.0.1:8100\n    api_key_env: KEY_SUPPORT\n"
    )
    servers = ServerMap.load(path)
    coder = servers.for_scope("acme__asst_coder", "acme", "asst_coder")
    assert coder == ServerConfig("https://engramia.example.com", "KEY_CODER")
    assert servers.for_scope("acme__asst_support", "acme", "asst_support").url == "http://127.0.0.1:8100"
    with pytest.raises(ServerConfigError, match="no Engramia server configured for scope acme__other"):
        servers.for_scope("acme__other", "acme", "other")
    (tmp_path / "servers.json").write_text(
        json.dumps([{"scope": "s", "url": "http://h:1", "api_key_env": "K"}])
    )
    assert ServerMap.load(tmp_path / "servers.json").for_scope("s", "t", "p").url == "http://h:1"


def test_servers_file_refuses_keys_and_bad_urls_without_echoing_them(tmp_path):
    path = tmp_path / "servers.yaml"
    path.write_text(f"scopes:\n  - scope: s\n    url: http://h\n    api_key: {SECRET}\n")
    with pytest.raises(ServerConfigError) as info:
        ServerMap.load(path)
    assert "api_key_env" in str(info.value) and SECRET not in str(info.value)
    with pytest.raises(ServerConfigError) as info:
        ServerConfig(f"https://user:{SECRET}@engramia.example.com", "K")
    assert SECRET not in str(info.value)
    with pytest.raises(ServerConfigError) as info:
        ServerConfig("http://h", SECRET.replace("_", "-"))  # the key itself passed as the variable name
    assert SECRET.replace("_", "-") not in str(info.value)
    assert normalize_url("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    assert normalize_url("https://x.example.com/engramia/v1") == "https://x.example.com/engramia"


# -- server limits ---------------------------------------------------------------------------------


def test_split_valid_names_the_first_broken_limit():
    frame = pl.DataFrame(
        {
            "pattern_id": ["ok", "blank_task", "blank_code", "long_task", "long_code", "score", "nan"],
            "task": ["t", "  \n", "t", "x" * (TASK_MAX_CHARS + 1), "t", "t", "t"],
            "code": ["c", "c", " ", "c", "y" * (CODE_MAX_CHARS + 1), "c", "c"],
            "eval_score": [5.0, 5.0, 5.0, 5.0, 5.0, 10.5, float("nan")],
        }
    )
    valid, invalid = split_valid(frame)
    assert valid["pattern_id"].to_list() == ["ok"]
    reasons = dict(invalid.select("pattern_id", "invalid_reason").iter_rows())
    assert reasons["blank_task"] == "task is blank" and reasons["blank_code"] == "code is blank"
    assert reasons["long_task"] == f"task has {TASK_MAX_CHARS + 1} chars (limit {TASK_MAX_CHARS})"
    assert reasons["long_code"].startswith("code has 500001 chars")
    assert reasons["score"].startswith("eval_score 10.5 outside") and reasons["nan"].startswith(
        "eval_score NaN"
    )
    assert "invalid_reason" not in valid.columns
