"""Taking patterns back: superseded patterns retracted by the next load, and rollback of exactly what
the pipeline loaded (REST with deterministic and learned keys, and the embedded store)."""

from __future__ import annotations

import json

import polars as pl
import pytest

from pipelines.load.embedded import destination_id as embedded_destination_id
from pipelines.load.embedded import load_embedded
from pipelines.load.ledger import Ledger, Outcome
from pipelines.load.records import kept_patterns
from pipelines.load.rest.options import RestMode, RestOptions, destination_id
from pipelines.load.rest.scope_load import load_rest
from pipelines.load.rest.servers import ServerConfig
from pipelines.load.rollback import rollback_embedded, rollback_rest
from pipelines.load.store import engramia_scope, open_memory, pattern_count
from tests.support.engramia_server import (
    stage,
)

pytestmark = pytest.mark.server
SCOPE = "default__default"


def opts(mode: str) -> RestOptions:
    return RestOptions(mode=mode, requests_per_minute=0, backoff_base=0.05, max_retries=2, timeout=10)


def grow_thread_abc(tmp_path, layout) -> None:
    """A later dump adds an assistant message to the last turn of thread_abc: that turn becomes a new
    pattern (new id) and the old one is no longer kept."""
    src = tmp_path / "later"
    src.mkdir()
    row = {
        "thread_id": "thread_abc",
        "assistant_id": "asst_coder",
        "message_id": "msg_abc_5",
        "role": "assistant",
        "text": "Also open the file with newline='' so quoted line breaks survive.",
        "created_at": 1717200063,
    }
    (src / "assistants-export-2026-09-01.ndjson").write_text(json.dumps(row) + "\n")
    stage(src, layout.root, "single")


@pytest.mark.parametrize("mode", [RestMode.IMPORT, RestMode.LEARN])
def test_a_superseded_pattern_is_retracted_from_the_server_by_the_next_load(
    engramia_server, staged, api_key_env, tmp_path, mode
):
    layout = staged("single")
    server = ServerConfig(engramia_server.url, api_key_env(engramia_server))
    first = load_rest(layout, SCOPE, "default", "default", server, opts(mode))
    assert first.stored == 10 and first.error is None
    old_keys = {r["key"] for r in engramia_server.export()}
    ledger = Ledger(layout, SCOPE, destination_id(server))
    assert set(ledger.in_store()["key"]) == old_keys  # learned keys too (the owner key may export)

    grow_thread_abc(tmp_path, layout)
    second = load_rest(layout, SCOPE, "default", "default", server, opts(mode))
    assert second.error is None and second.retracted == 1 and second.stored == 1 and second.reconciles
    assert second.pattern_count_before == second.pattern_count_after == 10
    records = engramia_server.export()
    grown = [r for r in records if "quoted line breaks survive" in r["data"]["design"]["code"]]
    assert len(records) == 10 and len(grown) == 1
    assert len(old_keys - {r["key"] for r in records}) == 1  # exactly the superseded one is gone
    state = ledger.state()
    assert state.filter(pl.col("outcome") == Outcome.RETRACTED).height == 1 and state.height == 11

    report = rollback_rest(layout, SCOPE, server, opts(mode), dry_run=True)
    assert [i.action for i in report.items] == ["would delete"] * 10 and engramia_server.pattern_count() == 10
    report = rollback_rest(layout, SCOPE, server, opts(mode))
    assert report.error is None and report.count("deleted") == 10 and engramia_server.pattern_count() == 0
    assert report.pattern_count_before == 10 and report.pattern_count_after == 0


def test_rollback_never_touches_patterns_the_pipeline_did_not_load(engramia_server, staged, api_key_env):
    layout = staged("single")
    server = ServerConfig(engramia_server.url, api_key_env(engramia_server))
    import httpx

    foreign = {"task": "someone else's pattern", "code": "print('mine')", "eval_score": 9}
    headers = {"Authorization": f"Bearer {engramia_server.api_key}"}
    assert httpx.post(f"{engramia_server.url}/v1/learn", json=foreign, headers=headers).json()["stored"]
    result = load_rest(layout, SCOPE, "default", "default", server, opts(RestMode.IMPORT))
    assert result.stored == 10 and result.pattern_count_after == 11 and result.reconciles
    report = rollback_rest(layout, SCOPE, server, opts(RestMode.IMPORT))
    assert report.count("deleted") == 10
    [left] = engramia_server.export()
    assert left["data"]["task"] == "someone else's pattern"


def test_embedded_rollback_deletes_exactly_the_loaded_patterns(staged):
    layout = staged("single")
    result = load_embedded(layout, "default__default", "default", "default")
    assert result.stored == 10
    dry = rollback_embedded(layout, SCOPE, "default", "default", dry_run=True)
    assert dry.count("would delete") == 10
    report = rollback_embedded(layout, SCOPE, "default", "default")
    assert report.count("deleted") == 10 and report.pattern_count_after == 0
    with engramia_scope("default", "default"):
        assert pattern_count(open_memory(layout.engramia)) == 0
    state = Ledger(layout, SCOPE, embedded_destination_id(layout.engramia)).state()
    assert set(state["outcome"]) == {Outcome.RETRACTED}
    # the next load stores them again: rollback is a clean undo, not a tombstone
    again = load_embedded(layout, "default__default", "default", "default")
    assert again.stored == 10
    kept = kept_patterns(layout, SCOPE).collect()
    assert set(
        Ledger(layout, SCOPE, embedded_destination_id(layout.engramia)).in_store()["pattern_id"]
    ) == set(kept["pattern_id"])
    assert set(Ledger(layout, SCOPE, embedded_destination_id(layout.engramia)).state()["outcome"]) == {
        Outcome.STORED
    }
