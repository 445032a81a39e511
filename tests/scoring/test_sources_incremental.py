"""An incremental run with the judge, implicit signals and gates gives the scored table a full run gives:
a later dump that adds the user's "thanks!" to an old thread rescores that thread's pattern, and only new
patterns are asked."""

from __future__ import annotations

import polars as pl

from pipelines.runner import backfill
from pipelines.scoring.gates import GateOptions
from pipelines.scoring.judge.options import JudgeOptions
from pipelines.scoring.options import ScoringOptions
from pipelines.scoring.scored import scan_scored
from pipelines.tables import DataLayout
from tests.conftest import msg, write_ndjson
from tests.support.openai_server import openai_server, task_of

FIXTURES = (openai_server,)

FIRST = [
    msg("a", "a1", "user", "How do I export invoices as CSV files?", 0),
    msg("a", "a2", "assistant", "Billing > Export, pick CSV.", 1),
    msg("b", "b1", "user", "Write a cron line for every Monday at 9", 10),
    msg("b", "b2", "assistant", "0 9 * * 1", 11),
    msg("c", "c1", "user", "hello", 20),
    msg("c", "c2", "assistant", "Hi! How can I help?", 21),
]
SECOND = [
    msg("a", "a3", "user", "Thanks, that worked!", 30),
    msg("d", "d1", "user", "Explain the CAP theorem in two sentences", 40),
    msg(
        "d",
        "d2",
        "assistant",
        "You cannot have all three of consistency, availability, partition tolerance.",
        41,
    ),
]


def options(server) -> ScoringOptions:
    judge = JudgeOptions("judge-a", base_url=server.url, api_key_env="JUDGE_TEST_KEY")
    gates = GateOptions(enabled=frozenset({"trivial", "non_answer", "min_score"}), min_score=3.0)
    return ScoringOptions(judge=judge, signals=True, gates=gates)


def _table(layout: DataLayout) -> pl.DataFrame:
    [scope] = [p.name.removeprefix("scope=") for p in (layout.staged / "scored").iterdir()]
    columns = ["pattern_id", "eval_score", "score_source", "score_reason", "filtered", "kept", "duplicate_of"]
    return scan_scored(layout, scope).collect().select(columns).sort("pattern_id")


def test_incremental_equals_full(tmp_path, openai_server):
    # The judge only knows the cron task: the others fall back to signals or neutral.
    def grade(body):
        return (9.0, "precise") if "cron" in task_of(body) else (None, "")

    openai_server.grade = lambda body: grade(body) if grade(body)[0] is not None else (11.0, "out of range")
    landing = tmp_path / "landing"
    write_ndjson(landing / "1.ndjson", FIRST)
    incremental = DataLayout.at(tmp_path / "incremental")
    backfill(incremental, landing, scoring=options(openai_server), load=False)
    asked = len(openai_server.chat_calls())
    write_ndjson(landing / "2.ndjson", SECOND)
    backfill(incremental, landing, scoring=options(openai_server), load=False)
    # Only the new pattern and the one that failed before were asked again.
    assert len(openai_server.chat_calls()) == asked + 2

    full = DataLayout.at(tmp_path / "full")
    backfill(full, landing, scoring=options(openai_server), load=False)
    got, want = _table(incremental), _table(full)
    assert got.equals(want), (got, want)
    by_source = dict(got.group_by("score_source").len().iter_rows())
    assert by_source == {"llm_judge": 1, "implicit": 1, "neutral": 2}
    assert got.filter(pl.col("filtered").is_not_null()).height == 1
