"""The client without a server: backoff, rate limiter, status handling and the key's handling."""

from __future__ import annotations

import itertools
import random

import httpx
import pytest

from pipelines.load.rest.client import Backoff, EngramiaClient, RateLimiter
from pipelines.load.rest.errors import (
    AmbiguousRequest,
    AuthError,
    MissingApiKey,
    QuotaExceeded,
    RateLimitExhausted,
    Rejected,
    ServerUnavailable,
    error_reason,
    parse_retry_after,
)

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


@pytest.mark.parametrize(
    "body",
    [
        # what Engramia's error handler sends (api/app.py _build_error_body)
        {
            "error_code": "QUOTA_EXCEEDED",
            "detail": "quota reached",
            "error_context": {"current": 8000, "limit": 8000},
        },
        # a route's detail dict as FastAPI sends it without that handler
        {
            "detail": {
                "error_code": "QUOTA_EXCEEDED",
                "current": 8000,
                "limit": 8000,
                "detail": "quota reached",
            }
        },
    ],
)
def test_429_quota_exceeded_keeps_the_servers_figures(monkeypatch, body):
    client, _ = make_client(lambda request: httpx.Response(429, json=body), monkeypatch)
    with pytest.raises(QuotaExceeded) as info:
        client.request("POST", "/v1/learn", json={})
    assert (info.value.current, info.value.limit) == (8000, 8000)


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
