"""A judge that cannot answer anyone (a refused key, no such model, no server) is asked no more: the
patterns not asked fall back to the next source at once, and the stop says what to fix, instead of every
pattern of a scope waiting out its own retries against the same answer."""

from __future__ import annotations

import socket
import time
from dataclasses import replace

import pytest

from pipelines.scoring.judge.client import Judge, Request
from pipelines.scoring.judge.options import JudgeOptions
from pipelines.scoring.scores import score_scope
from tests.scoring.test_judge import KEY_ENV, _scored, judge, staged
from tests.support.cli import cli
from tests.support.openai_server import OpenAIServer, Reply, openai_server, task_of

FIXTURES = (openai_server, staged)
REQUESTS = [Request(f"p{i:03}", f"task {i}", f"answer {i}", 20) for i in range(40)]


def _options(url: str, **kw) -> JudgeOptions:
    return JudgeOptions(
        "judge-a", base_url=url, api_key_env=KEY_ENV, concurrency=2, max_retries=2, backoff_seconds=0.01, **kw
    )


@pytest.mark.parametrize(
    ("status", "says"),
    [
        (401, f"refuses the key in {KEY_ENV}"),
        (403, f"refuses the key in {KEY_ENV}"),
        (404, "no model 'judge-a'"),
    ],
)
def test_a_refused_key_or_a_missing_model_stops_the_sending(openai_server: OpenAIServer, status, says):
    openai_server.script = lambda body, n: Reply(status, {"error": {"message": "no"}})
    asker = Judge(_options(openai_server.url))
    answers = list(asker.ask_all(REQUESTS))
    assert asker.halted is not None and says in asker.halted and f"HTTP {status}" in asker.halted
    # The requests in flight when the first answer came, and no more.
    assert len(openai_server.chat_calls()) <= 2
    assert len(answers) <= 2 and all(a.error for a in answers)


def test_a_server_that_cannot_be_reached_is_tried_once_not_per_pattern(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    asker = Judge(_options(f"http://127.0.0.1:{port}/v1"))
    answers = list(asker.ask_all(REQUESTS))
    assert asker.halted == f"http://127.0.0.1:{port}/v1 unreachable: connection error after 3 attempts"
    assert len(answers) <= 2


def test_one_pattern_that_times_out_does_not_stop_the_others(openai_server: OpenAIServer):
    def script(body, n):
        if task_of(body).startswith("task 0 "):
            time.sleep(0.6)  # longer than the client's timeout
        return None

    openai_server.script = script
    requests = [Request("p000", "task 0 is slow", "answer", 20), *REQUESTS[1:11]]
    # One at a time: the slow pattern runs out of retries before any other is answered.
    asker = Judge(replace(_options(openai_server.url, timeout=0.2), concurrency=1))
    answers = {a.pattern_id: a for a in asker.ask_all(requests)}
    assert asker.halted is None and len(answers) == 11
    assert answers["p000"].error == "no answer after 3 attempts: timeout"
    assert all(a.error is None for p, a in answers.items() if p != "p000")


def test_the_scope_reports_the_stop_and_keeps_every_pattern(layout, staged, openai_server):
    openai_server.script = lambda body, n: Reply(401, {"error": {"message": "bad key"}})
    result = score_scope(layout, staged, judge(openai_server, concurrency=1))
    assert "HTTP 401" in result.judge["stopped"] and KEY_ENV in result.judge["stopped"]
    assert len(openai_server.chat_calls()) == 1
    assert result.judge["errors"] == 1 and result.judge["skipped"] == 3
    scored = _scored(layout, staged)
    assert scored.height == 4 and scored["kept"].sum() == 4
    assert scored["score_source"].unique().to_list() == ["neutral"]


def test_the_cli_run_warns_of_the_stop_per_scope(sample_dir, capsys, tmp_path, monkeypatch, openai_server):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    openai_server.script = lambda body, n: Reply(401, {"error": {"message": "bad key"}})
    args = ["--input", str(sample_dir), "--data-dir", str(tmp_path / "d"), "--destination", "none"]
    args += ["--llm-judge", "judge-a", "--llm-base-url", openai_server.url, "--llm-api-key-env", KEY_ENV]
    summary = cli(capsys, "run", *args)
    stops = [w for w in summary["warnings"] if "judge stopped: HTTP 401" in w]
    assert sorted(w.split(":")[0] for w in stops) == sorted(summary["scopes"])
    assert all(KEY_ENV in w and "unanswered (scored by the next source)" in w for w in stops)
