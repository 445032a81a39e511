"""The judge end to end: a new judge model rewrites loaded scores in place (pattern_count unchanged),
the scored_patterns asset reports token usage and cost and proves patterns = kept + duplicates +
filtered, ``plan`` shows tokens and cost, and ``run`` refuses a judge whose key is not set."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from assets.cli.main import main
from assets.destination import EngramiaDestination
from assets.jobs import ALL_ASSETS as BACKFILL_ASSETS
from assets.jobs import SCOPE_ASSETS
from assets.patterns import scored_patterns
from assets.resources import BackfillSettings
from pipelines.ingest.catalog import read_scopes
from pipelines.load.store import engramia_scope, open_memory, pattern_count
from pipelines.runner import backfill
from pipelines.scoring.judge.options import JudgeOptions
from pipelines.scoring.options import ScoringOptions
from tests.support.openai_server import openai_server

FIXTURES = (openai_server,)
KEY_ENV = "JUDGE_TEST_KEY"
KEY = "sk-test-judge-key-not-secret"


def test_a_new_judge_model_rewrites_loaded_scores_in_place(layout, sample_dir, openai_server):
    store = layout.root / "store"

    def run(model: str):
        options = ScoringOptions(judge=JudgeOptions(model, base_url=openai_server.url, api_key_env=KEY_ENV))
        return backfill(layout, sample_dir, scoring=options, store=store)

    def loaded(scope: str) -> tuple[int, set[float]]:
        tenant, project = read_scopes(layout).filter(scope=scope).row(0)[1:]
        with engramia_scope(tenant, project):
            memory = open_memory(store)
            scores = {float(r["data"]["success_score"]) for r in memory.export()}
            return pattern_count(memory), scores

    openai_server.grade = lambda body: (8.0, "good") if body["model"] == "judge-a" else (4.0, "meh")
    first = run("judge-a")
    before = {scope: loaded(scope) for scope in first.scopes}
    assert all(scores == {8.0} for _, scores in before.values())
    asked = len(openai_server.chat_calls())

    second = run("judge-b")
    assert len(openai_server.chat_calls()) == 2 * asked  # every pattern asked again, once
    for scope, result in second.scopes.items():
        count, scores = loaded(scope)
        assert scores == {4.0} and count == before[scope][0]
        assert result.load.updated == result.load.kept and result.load.stored == 0
        assert result.load.pattern_count_after == result.load.pattern_count_before

    third = run("judge-b")
    assert len(openai_server.chat_calls()) == 2 * asked  # cached: zero calls
    assert all(r.load.updated == 0 for r in third.scopes.values())


def test_the_asset_reports_tokens_cost_and_accounts_for_every_pattern(layout, sample_dir, openai_server):
    settings = BackfillSettings(
        data_dir=str(layout.root),
        landing=str(sample_dir),
        settle_seconds=0,
        llm_judge="judge-a",
        llm_base_url=openai_server.url,
        llm_api_key_env=KEY_ENV,
        llm_price_per_mtok_in=2.0,
        llm_price_per_mtok_out=8.0,
    )
    resources = {"settings": settings, "engramia": EngramiaDestination(store_dir=str(layout.root / "s"))}
    with dg.instance_for_test() as instance:
        dg.materialize(
            BACKFILL_ASSETS, selection=["raw_thread_exports"], resources=resources, instance=instance
        )
        scope = "default__asst_coder"
        result = dg.materialize(
            BACKFILL_ASSETS,
            selection=dg.AssetSelection.assets(*SCOPE_ASSETS),
            partition_key=scope,
            resources=resources,
            instance=instance,
        )
    meta = result.asset_materializations_for_node(scored_patterns.key.path[-1])[0].metadata
    judge = meta["llm_judge"].value
    assert judge["asked"] == judge["answered"] > 0
    assert meta["llm_tokens_in"].value == 120 * judge["asked"]
    assert meta["llm_cost_usd"].value == pytest.approx((120 * 2.0 + 20 * 8.0) * judge["asked"] / 1e6)
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["duplicates_accounted"] and checks["scored_quality"]
    assert KEY not in json.dumps({k: str(v.value) for k, v in meta.items()})


def test_plan_shows_tokens_and_cost_and_run_refuses_a_missing_key(tmp_path, sample_dir, capsys, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv(KEY_ENV, KEY)
    args = ["--input", str(sample_dir), "--data-dir", str(tmp_path / "d"), "--llm-judge", "judge-a"]
    args += ["--llm-api-key-env", KEY_ENV, "--llm-price-per-mtok-in", "2", "--llm-price-per-mtok-out", "8"]
    with pytest.raises(SystemExit) as exit_info:
        main(["plan", *args, "--llm-max-patterns", "3"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0, out
    assert "judge judge-a (rubric-v1): ~3 patterns to ask" in out and "over the limits" in out
    assert "judge total: ~" in out and "$" in out
    with pytest.raises(SystemExit):
        main(["plan", *args, "--json"])
    plan = json.loads(capsys.readouterr().out)
    judged = [s["judge"] for s in plan["scopes"].values()]
    assert all(j["tokens_in"] > 0 and j["cost_usd"] > 0 for j in judged)

    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", *args, "--json"])
    refused = json.loads(capsys.readouterr().out)
    assert exit_info.value.code == 2
    assert [f for f in refused["failures"] if f.startswith(f"--llm-api-key-env {KEY_ENV}:")]
