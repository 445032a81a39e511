"""Patterns deleted on the server after a load: the next load finds them gone (the server counts fewer
than the ledger says it holds) and sends them again, so the scope holds every kept pattern once more. A
key that cannot export cannot tell which are gone, and the load says so."""

from __future__ import annotations

import httpx
import polars as pl
import pytest

from pipelines.load.ledger import Ledger
from pipelines.load.rest.options import RestMode, destination_id
from pipelines.load.rest.scope_load import load_rest
from pipelines.load.rest.servers import ServerConfig
from tests.support.rest_load import SCOPE, ledger_state, load, opts
from tests.support.scripted_engramia import Scripted07

GONE_REASON = "key gone from the server (deleted there): sent again"


@pytest.mark.server
@pytest.mark.parametrize("mode", [RestMode.IMPORT, RestMode.LEARN])
def test_patterns_deleted_on_the_server_are_sent_again(engramia_server, staged, api_key_env, mode):
    layout, env = staged("single"), api_key_env(engramia_server)
    first = load(layout, engramia_server, env, opts(mode))
    assert first.error is None and first.loaded == first.kept
    state = ledger_state(layout, engramia_server).sort("pattern_id")
    deleted = state.head(2)
    for key in deleted["key"]:
        httpx.delete(
            f"{engramia_server.url}/v1/patterns/{key}",
            headers={"Authorization": f"Bearer {engramia_server.api_key}"},
        ).raise_for_status()

    again = load(layout, engramia_server, env, opts(mode))
    assert again.error is None and again.reconciles, again
    assert (again.stored, again.already_loaded) == (2, first.kept - 2)
    assert again.pattern_count_before == first.kept - 2 and again.pattern_count_after == first.kept
    after = ledger_state(layout, engramia_server)
    assert after.filter(pl.col("pattern_id").is_in(deleted["pattern_id"].implode()))["outcome"].to_list() == [
        "stored",
        "stored",
    ]
    # Each was recorded gone before it was sent again; this run's figures do not count it retracted.
    assert again.retracted == 0
    history = Ledger(layout, SCOPE, destination_id(ServerConfig(engramia_server.url, "UNUSED"))).history()
    for pid in deleted["pattern_id"]:
        reasons = (
            history.filter(pl.col("pattern_id") == pid).sort("at", maintain_order=True)["reason"].to_list()
        )
        assert GONE_REASON in reasons and reasons.index(GONE_REASON) < len(reasons) - 1


def test_a_key_that_cannot_export_cannot_tell_which_and_says_so(staged, monkeypatch):
    monkeypatch.setenv("SCRIPTED07_KEY", "scripted-07-key-value")
    layout, fake = staged("single"), Scripted07(role="editor")
    server = ServerConfig("http://engramia07.test", "SCRIPTED07_KEY")

    def learn():
        options = opts(RestMode.LEARN)
        return load_rest(layout, SCOPE, "default", "default", server, options, transport=fake.transport())

    first = learn()
    assert first.stored == first.kept
    fake.store.pop(next(iter(fake.store)))
    again = learn()
    assert again.stored == 0 and "(deleted on the server? a key that may export finds them" in again.notes
