"""A REST load against REAL Engramia 0.6.6 servers on 127.0.0.1 that die mid-load (killed, restarted)
or rate-limit it: a re-run, or the same run, stores every pattern exactly once and loses nothing."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import polars as pl
import pytest

from pipelines.load.ledger import IN_STORE, Outcome
from pipelines.load.rest.options import RestMode
from tests.support.engramia_server import (
    EngramiaServer,
)
from tests.support.rest_load import expected, ledger_state, load, opts, stored

pytestmark = pytest.mark.server


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
