"""What a run would do, on the demo sample: pending dumps and their estimates before anything is staged,
exact figures once staged, the embedded store's and a real Engramia server's capacity, and nothing
written or sent."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from pipelines.ingest.catalog import read_scopes
from pipelines.load.embedded import load_embedded
from pipelines.load.rest.client import EngramiaClient
from pipelines.load.rest.options import RestOptions
from pipelines.load.rest.scope_load import load_rest
from pipelines.load.rest.servers import ServerMap
from pipelines.quality import run_plan as run_plan_module
from pipelines.quality.capacity import DEFAULT_PLAN_PATTERNS, EmbeddedTarget, RestTarget, store_keys
from pipelines.quality.pending import count_lines
from pipelines.quality.run_plan import plan_run
from pipelines.quality.status import backfill_status
from pipelines.scopes import ScopeBy, ScopeMapping
from tests.quality.test_status import tree
from tests.support.engramia_server import (
    SAMPLE,
)

KEPT = {"default__asst_analyst": 3, "default__asst_coder": 5, "default__asst_support": 2}
ASSISTANT = ScopeMapping(scope_by=ScopeBy.ASSISTANT)


def test_before_anything_is_staged(tmp_path, staged):
    data = tmp_path / "data"
    plan = plan_run(data, SAMPLE, ASSISTANT, EmbeddedTarget(data / "engramia"))
    assert not data.exists()  # nothing written, not even the folder
    files = sorted(SAMPLE.glob("*.ndjson"))
    assert [Path(d.file).name for d in plan.pending_dumps] == [p.name for p in files]
    assert [d.size for d in plan.pending_dumps] == [p.stat().st_size for p in files]
    assert [d.lines for d in plan.pending_dumps] == [25, 6]
    assert plan.ingested_dumps == 0
    # The cheap scan routes lines as the ingest does: compare with the staged sample's own figures.
    truth = {s.scope: s for s in backfill_status(staged("assistant").root).scopes}
    assert {s.scope: s.lines_to_ingest for s in plan.scopes} == {k: s.lines_in for k, s in truth.items()}
    # One exchange per pattern; a question in the first dump and its answer in the second count too.
    assert {s.scope: s.new_patterns - truth[s.scope].patterns for s in plan.scopes} == {
        "default__asst_analyst": 0,
        "default__asst_coder": 0,
        "default__asst_support": 1,  # an exchange whose answer is blank: unpaired once staged
    }
    assert plan.unscoped_lines == 1
    for s in plan.scopes:
        assert s.new and s.already_loaded == 0 and s.to_retract == 0
        assert {"lines_to_ingest", "new_patterns", "kept", "to_load"} <= set(s.estimated)
        # An upper bound: near-duplicates and repeats are only known once staged.
        assert s.to_load == s.kept == s.new_patterns >= KEPT[s.scope]
        assert s.capacity.pattern_count == 0 and s.capacity.fits
    assert plan.as_dict()["totals"]["lines_to_ingest"] == 30


def test_staged_exact_then_loaded(staged):
    layout = staged("assistant")
    target = EmbeddedTarget(layout.engramia)
    before = tree(layout.root)
    plan = plan_run(layout.root, SAMPLE, ASSISTANT, target)
    assert tree(layout.root) == before
    assert plan.pending_dumps == [] and plan.ingested_dumps == 2
    assert {s.scope: (s.kept, s.to_load, s.already_loaded) for s in plan.scopes} == {
        k: (n, n, 0) for k, n in KEPT.items()
    }
    assert all(s.estimated == [] and not s.new for s in plan.scopes)

    for scope, tenant_id, project_id in read_scopes(layout).iter_rows():
        load_embedded(layout, scope, tenant_id, project_id)
    plan = plan_run(layout.root, SAMPLE, ASSISTANT, target)
    for s in plan.scopes:
        assert (s.to_load, s.already_loaded, s.to_update) == (0, KEPT[s.scope], 0)
        assert s.capacity.pattern_count == KEPT[s.scope] == s.capacity.projected
        assert len(store_keys(layout.engramia, s.tenant_id, s.project_id)) == KEPT[s.scope]


def test_embedded_cap(staged, monkeypatch):
    layout = staged("assistant")
    monkeypatch.setattr(run_plan_module, "SCOPE_PATTERN_CAP", 3)
    plan = plan_run(layout.root, SAMPLE, ASSISTANT, EmbeddedTarget(layout.engramia))
    assert {s.scope: s.capacity.fits for s in plan.scopes} == {
        "default__asst_analyst": True,
        "default__asst_coder": False,
        "default__asst_support": True,
    }


def test_mapping_change_noted(staged):
    layout = staged("assistant")
    plan = plan_run(
        layout.root, SAMPLE, ScopeMapping(scope_by=ScopeBy.SINGLE), EmbeddedTarget(layout.engramia)
    )
    assert any("would refuse" in n for n in plan.notes)


def test_count_lines(tmp_path):
    (tmp_path / "a.ndjson").write_bytes(b"{}\n{}\n{}")
    (tmp_path / "b.ndjson").write_bytes(b"{}\n\n")
    assert count_lines(tmp_path / "a.ndjson") == 3
    assert count_lines(tmp_path / "b.ndjson") == 2


@pytest.mark.server
def test_rest_capacity_on_a_real_server(staged, engramia_server, api_key_env, monkeypatch):
    layout = staged("single")
    env = api_key_env(engramia_server)
    servers = ServerMap.one(engramia_server.url, env)
    single = ScopeMapping(scope_by=ScopeBy.SINGLE)

    def plan(mode: str, **kw):
        options = RestOptions(mode=mode, requests_per_minute=30, **kw)
        (s,) = plan_run(layout.root, SAMPLE, single, RestTarget(servers, options)).scopes
        return s

    learn = plan("rest-learn")
    assert learn.to_load == learn.kept == 10
    c = learn.capacity
    assert c.error is None and c.server_version.startswith("engramia ")
    assert c.pattern_count == 0 and c.projected == 10 and c.fits
    billing = httpx.get(
        f"{engramia_server.url}/v1/billing/status",
        headers={"Authorization": f"Bearer {engramia_server.api_key}"},
        timeout=10,
    ).json()
    assert c.quota == int(billing["patterns_limit"] * 0.8) and "billing status" in c.quota_source
    assert (c.requests, c.requests_per_minute, c.minutes) == (10, 30, pytest.approx(10 / 30))

    imports = plan("rest-import", max_body_bytes=4_096)
    # 10 records of about 1 KB each under a 3 KB body budget: several requests, not one per pattern.
    assert 1 < imports.capacity.requests < 10
    assert plan("rest-import").capacity.requests == 1
    assert plan("rest-learn", quota_pct=0.0005).capacity.fits is False  # quota 5 < 10 patterns

    # A server without billing routes: the default plan of 10,000 patterns, 80% per project.
    with monkeypatch.context() as m:
        m.setattr(EngramiaClient, "billing_status", lambda self: None)
        c = plan("rest-learn").capacity
    assert c.quota == int(DEFAULT_PLAN_PATTERNS * 0.8) == 8_000 and "default plan" in c.quota_source

    # Only reads were sent: the server holds nothing and the ledger was not created.
    assert engramia_server.pattern_count() == 0 and engramia_server.export() == []
    assert not layout.ledger("default__default").exists()

    result = load_rest(
        layout,
        "default__default",
        "default",
        "default",
        servers.for_scope("default__default", "default", "default"),
        RestOptions(mode="rest-import", requests_per_minute=0),
    )
    assert result.error is None and result.stored == 10
    after = plan("rest-import")
    assert (after.to_load, after.already_loaded) == (0, 10)
    assert after.capacity.pattern_count == 10 and after.capacity.requests == 0
