"""The LLM judge through the real ``openai`` client against an OpenAI-compatible server on 127.0.0.1:
answers, the cache (a re-run asks nothing, a new model asks again), 429 with Retry-After, 5xx, malformed
replies, servers without structured outputs, the cost limits and the Batch API (resumed after a stop)."""

from __future__ import annotations

import json

import polars as pl
import pytest

from pipelines.runner import backfill
from pipelines.scoring.judge.options import JudgeConfigError, JudgeOptions
from pipelines.scoring.options import ScoringOptions
from pipelines.scoring.scored import scan_scored
from pipelines.scoring.scores import score_scope
from pipelines.tables import parquet_files
from tests.conftest import msg
from tests.support.openai_server import OpenAIServer, Reply, chat_body, openai_server, task_of

FIXTURES = (openai_server,)
KEY_ENV = "JUDGE_TEST_KEY"

TASKS = [
    ("Write SQL that returns the top 5 customers by revenue", "SELECT customer_id, sum(amount) FROM t"),
    ("How do I skip the header row of a CSV file in Python?", "Call next(reader) once before the loop."),
    ("Explain the difference between a process and a thread", "A process has its own memory space."),
    ("Reverse a linked list in place, in Python please", "Walk the list keeping prev and curr."),
]


def _exchanges(n: int = len(TASKS)) -> list[dict]:
    rows = []
    for i, (q, a) in enumerate(TASKS[:n]):
        rows += [
            msg(f"t{i}", f"t{i}_q", "user", q, i * 10),
            msg(f"t{i}", f"t{i}_a", "assistant", a, i * 10 + 1),
        ]
    return rows


def judge(server: OpenAIServer, model: str = "judge-a", **kw) -> ScoringOptions:
    options = JudgeOptions(
        model, base_url=server.url, api_key_env=KEY_ENV, backoff_seconds=0.01, max_backoff_seconds=0.05, **kw
    )
    return ScoringOptions(judge=options)


@pytest.fixture
def staged(layout, dump, landing):
    dump("d.ndjson", _exchanges())
    run = backfill(layout, landing, load=False)
    [scope] = run.scopes
    return scope


def _scored(layout, scope) -> pl.DataFrame:
    return scan_scored(layout, scope).collect().sort("pattern_id")


def test_judge_scores_with_reason_and_a_cached_rerun_asks_nothing(layout, staged, openai_server):
    openai_server.grade = lambda body: (9.0 if "SQL" in task_of(body) else 6.5, "reusable answer")
    result = score_scope(layout, staged, judge(openai_server))
    scored = _scored(layout, staged)
    assert scored["score_source"].unique().to_list() == ["llm_judge"]
    assert sorted(scored["eval_score"].to_list()) == [6.5, 6.5, 6.5, 9.0]
    assert scored["score_reason"].unique().to_list() == ["judge: reusable answer"]
    assert result.judge["asked"] == 4 and result.judge["answered"] == 4 and result.judge["errors"] == 0
    assert result.judge["tokens_in"] == 4 * 120 and result.judge["tokens_out"] == 4 * 20
    calls = openai_server.chat_calls()
    assert len(calls) == 4 and all(c["response_format"]["type"] == "json_schema" for c in calls)
    assert all(c["model"] == "judge-a" and c["messages"][0]["role"] == "system" for c in calls)

    again = score_scope(layout, staged, judge(openai_server))
    assert len(openai_server.chat_calls()) == 4  # not one more request
    assert again.judge["asked"] == 0 and again.judge["cached"] == 4
    # The table made again from scratch (scored.json gone) still asks nothing: the cache answers.
    (layout.scored(staged) / "scored.json").unlink()
    assert score_scope(layout, staged, judge(openai_server)).judge["cached"] == 4
    assert len(openai_server.chat_calls()) == 4

    openai_server.grade = lambda body: (3.0, "another model")
    score_scope(layout, staged, judge(openai_server, model="judge-b"))
    assert len(openai_server.chat_calls()) == 8  # a new model asks again
    assert _scored(layout, staged)["eval_score"].to_list() == [3.0] * 4


def test_rate_limits_wait_for_retry_after_and_5xx_back_off(layout, staged, openai_server):
    def script(body, n):
        if n < 3:
            return Reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "0.05"})
        if n < 6:
            return Reply(500, {"error": {"message": "boom"}})
        return None

    openai_server.script = script
    result = score_scope(layout, staged, judge(openai_server, concurrency=2))
    assert result.judge["answered"] == 4 and result.judge["errors"] == 0
    assert result.judge["rate_limited"] == 3
    assert _scored(layout, staged)["score_source"].unique().to_list() == ["llm_judge"]


def test_failures_fall_back_are_recorded_and_asked_again(layout, staged, openai_server):
    bad = {"How do I skip": "no json here at all", "Explain": '{"score": 14, "reason": "x"}'}

    def script(body, n):
        task = task_of(body)
        if task.startswith("Reverse"):
            return Reply(503, {"error": {"message": "down"}})
        for start, content in bad.items():
            if task.startswith(start):
                return Reply(200, chat_body(content))
        return None

    openai_server.script = script
    result = score_scope(layout, staged, judge(openai_server, max_retries=2))
    assert result.judge["answered"] == 1 and result.judge["errors"] == 3
    scored = _scored(layout, staged)
    assert sorted(scored["score_source"].to_list()) == ["llm_judge", "neutral", "neutral", "neutral"]
    assert scored["kept"].sum() == 4  # never lost
    cache = pl.read_parquet(parquet_files(layout.judge_cache(staged), "answers-*.parquet"))
    errors = sorted(e for e in cache["error"].to_list() if e)
    assert any(e.startswith("malformed reply: no score") for e in errors)
    assert any("outside 0..10" in e for e in errors)
    assert any("no answer after 3 attempts: HTTP 503" in e for e in errors)

    openai_server.script = None
    again = score_scope(layout, staged, judge(openai_server, max_retries=2))
    assert again.judge["asked"] == 3 and again.judge["cached"] == 1  # only the failed ones
    assert _scored(layout, staged)["score_source"].unique().to_list() == ["llm_judge"]


def test_failures_are_asked_again_when_a_new_dump_brings_up_the_table(
    layout, staged, openai_server, dump, landing
):
    # The scored table is then brought up to date from the new batch, which alone would judge only
    # the new thread: the earlier failure must still be asked again.
    openai_server.script = lambda body, n: (
        Reply(503, {"error": {"message": "down"}}) if task_of(body).startswith("Reverse") else None
    )
    first = score_scope(layout, staged, judge(openai_server, max_retries=0))
    assert first.judge["errors"] == 1

    openai_server.script = None
    dump(
        "e.ndjson",
        [msg("t9", "t9_q", "user", "What is a CRDT?", 100), msg("t9", "t9_a", "assistant", "A type.", 101)],
    )
    backfill(layout, landing, scoring=judge(openai_server, max_retries=0), load=False)
    scored = _scored(layout, staged)
    assert scored.height == 5
    assert scored["score_source"].unique().to_list() == ["llm_judge"]


def test_tolerant_parse_when_the_server_has_no_structured_outputs(layout, staged, openai_server):
    openai_server.structured = False
    openai_server.script = lambda body, n: Reply(
        200, chat_body('Sure! Here it is:\n```json\n{"score": 7, "reason": "fine"}\n```')
    )
    result = score_scope(layout, staged, judge(openai_server, concurrency=1))
    assert result.judge["answered"] == 4
    # One refused request taught the client; the rest went without response_format.
    assert sum("response_format" in c for c in openai_server.chat_calls()) == 1
    assert _scored(layout, staged)["eval_score"].to_list() == [7.0] * 4


def test_limits_stop_before_they_are_exceeded(layout, staged, openai_server):
    result = score_scope(layout, staged, judge(openai_server, max_patterns=2))
    assert result.judge["asked"] == 2 and result.judge["skipped"] == 2
    assert "--llm-max-patterns 2" in result.judge["stopped"]
    assert sorted(_scored(layout, staged)["score_source"].to_list()) == ["llm_judge"] * 2 + ["neutral"] * 2

    # Each request costs about 300 estimated tokens in: at 1000 USD per Mtok, 0.3 USD; 0.7 USD allows 2.
    priced = judge(openai_server, model="judge-c", max_cost=0.7, price_in=1000.0, price_out=1000.0)
    result = score_scope(layout, staged, priced)
    assert result.judge["asked"] == 2 and "--llm-max-cost 0.7" in result.judge["stopped"]
    assert result.judge["cost_usd"] <= 0.7


def test_batch_api_and_resume_after_a_stop(layout, staged, openai_server):
    openai_server.batch_polls = 1_000  # still running when the first run stops waiting
    first = score_scope(layout, staged, judge(openai_server, batch=True, batch_timeout=0.0))
    assert (
        first.judge["asked"] == 0
        and first.judge["skipped"] == 4
        and "still in_progress" in first.judge["stopped"]
    )
    assert (layout.judge_cache(staged) / "batch.json").exists()
    assert _scored(layout, staged)["score_source"].unique().to_list() == ["neutral"]

    openai_server.batch_polls = 0
    second = score_scope(layout, staged, judge(openai_server, batch=True, batch_poll_seconds=0.01))
    assert second.judge["answered"] == 4
    assert openai_server.calls("/v1/files") == 2  # one upload, one download: the batch was resumed
    assert len(openai_server.batches) == 1 and not openai_server.chat_calls()
    assert not (layout.judge_cache(staged) / "batch.json").exists()
    assert _scored(layout, staged)["score_source"].unique().to_list() == ["llm_judge"]
    uploaded = next(iter(openai_server.files.values())).decode().splitlines()
    assert {json.loads(line)["url"] for line in uploaded} == {"/v1/chat/completions"}


def test_the_key_comes_from_the_environment_only(layout, staged, openai_server, monkeypatch):
    score_scope(layout, staged, judge(openai_server))
    key = "sk-test-judge-key-not-secret"
    assert all(h.get("authorization") == f"Bearer {key}" for m, p, b, h in openai_server.requests)
    for path in layout.root.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(JudgeConfigError, match=f"--llm-api-key-env {KEY_ENV}"):
        JudgeOptions("m", api_key_env=KEY_ENV).api_key()
