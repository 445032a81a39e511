"""Ctrl-C stops a REST load with requests in flight at once, even while the server rate-limits it: the
workers waiting out a Retry-After are stopped rather than waited for, and what they were sending keeps
its ``sending`` row for the next run to resolve."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx
import polars as pl
import pytest

from pipelines.load.ledger import Ledger, Outcome
from pipelines.load.rest.options import RestMode, destination_id
from pipelines.load.rest.scope_load import load_rest
from pipelines.load.rest.servers import ServerConfig
from tests.support.rest_load import SCOPE, opts

SERVER = ServerConfig("http://engramia.test", "INTERRUPT_TEST_KEY")
RETRY_AFTER = 5.0


class RateLimitingServer:
    """A Postgres-backed 0.6.6 as far as the load can tell (so requests go concurrently) that answers
    every import 429 RATE_LIMITED; once both workers are waiting out a Retry-After it sends the
    process SIGINT, as Ctrl-C does."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.limited = 0
        self.sent_at: list[float] = []
        self.sigint_at: float | None = None
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/version":
            return httpx.Response(200, json={"app_version": "0.6.6", "api_version": "v1"})
        if path == "/v1/health":
            return httpx.Response(200, json={"status": "ok", "storage": "PostgresStorage"})
        if path == "/v1/metrics":
            return httpx.Response(200, json={"pattern_count": 0})
        if path == "/v1/import" and json.loads(request.content or b"{}").get("records"):
            with self.lock:
                self.limited += 1
                self.sent_at.append(time.monotonic())
                if self.limited == self.workers:
                    threading.Timer(0.3, self.interrupt).start()
            return httpx.Response(
                429,
                json={"error_code": "RATE_LIMITED", "detail": "Rate limit exceeded."},
                headers={"Retry-After": str(int(RETRY_AFTER))},
            )
        if path == "/v1/import":  # the role probe's empty body
            return httpx.Response(422, json={"error_code": "VALIDATION_ERROR", "detail": "records"})
        return httpx.Response(404, json={"detail": "Not Found"})

    def interrupt(self) -> None:
        self.sigint_at = time.monotonic()
        os.kill(os.getpid(), signal.SIGINT)


def load_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("engramia-load")]


@pytest.fixture
def ctrl_c_raises():
    """SIGINT raises KeyboardInterrupt during the test, even when the tests were started in the background
    (a shell starts a background job with SIGINT ignored, and Python keeps an ignored SIGINT ignored)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_ctrl_c_stops_a_concurrent_load_waiting_out_a_rate_limit(staged, monkeypatch, ctrl_c_raises):
    monkeypatch.setenv(SERVER.api_key_env, "interrupt-test-key-value")
    layout, server = staged("single"), RateLimitingServer(workers=2)
    options = opts(
        RestMode.IMPORT,
        concurrency=2,
        max_batch_records=1,
        max_retry_after=RETRY_AFTER,
        rate_limit_budget=4 * RETRY_AFTER,
    )
    with pytest.raises(KeyboardInterrupt):
        load_rest(layout, SCOPE, "default", "default", SERVER, options, transport=httpx.MockTransport(server))
    assert server.sigint_at is not None
    # Before: about rate_limit_budget (20 s), the workers' Retry-After waits held the pool's shutdown.
    assert time.monotonic() - server.sigint_at < RETRY_AFTER / 2
    deadline = time.monotonic() + RETRY_AFTER / 2
    while load_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert load_threads() == []  # stopped, not left waiting in the background
    assert max(server.sent_at) < server.sigint_at  # nothing was sent after the interrupt

    state = Ledger(layout, SCOPE, destination_id(SERVER)).state()
    # the two batches in flight: not known to be stored or not, so the next run looks them up
    assert state.filter(pl.col("outcome") == Outcome.SENDING.value).height == 2
    assert state.filter(pl.col("outcome") != Outcome.SENDING.value).height == 0
