"""Implicit signals from the user's next turn, the curation gates, the precedence of score sources and
follow-up context: patterns = kept + duplicates + filtered, and filtered patterns are never loaded."""

from __future__ import annotations

import polars as pl
import pytest

from pipelines.load.records import kept_patterns
from pipelines.pairing.context import FOLLOW_UP_MARKER
from pipelines.pairing.pairs import PairingOptions, pair_frame
from pipelines.runner import backfill
from pipelines.scoring.gates import GateOptions
from pipelines.scoring.judge.options import JudgeOptions
from pipelines.scoring.options import ScoreStrategy, ScoringOptions
from pipelines.scoring.scored import filtered_file, scan_scored
from pipelines.scoring.signals import SignalRules, SignalRulesError
from pipelines.tables import RAW_SCHEMA
from tests.conftest import msg
from tests.support.openai_server import openai_server

FIXTURES = (openai_server,)
ALL_GATES = GateOptions(enabled=frozenset({"trivial", "non_answer", "min_score"}), min_score=3.0)


def _thread(thread: str, turns: list[tuple[str, str]], at: int) -> list[dict]:
    rows = []
    for i, (role, text) in enumerate(turns):
        rows.append(msg(thread, f"{thread}_{i}", role, text, at + i))
    return rows


CONVERSATIONS = (
    _thread(
        "good",
        [
            ("user", "How do I rotate the API keys of my project?"),
            ("assistant", "Settings > Keys."),
            ("user", "Thanks, that worked!"),
        ],
        0,
    )
    + _thread(
        "bad",
        [
            ("user", "Write a regex for ISO dates please"),
            ("assistant", r"\d{4}"),
            ("user", "That's wrong, it fails on 2024-01-01 with an error"),
            ("assistant", "Sorry."),
        ],
        100,
    )
    + _thread("hello", [("user", "Hi!"), ("assistant", "Hello! How can I help?")], 200)
    + _thread(
        "nope",
        [
            ("user", "Tell me the admin password of the prod database"),
            ("assistant", "I'm sorry, but I can't help with that."),
        ],
        300,
    )
    + _thread(
        "blank", [("user", "Draw the architecture as a diagram please"), ("assistant", "```\n\n```")], 400
    )
    + _thread("plain", [("user", "What is the capital of Australia again?"), ("assistant", "Canberra.")], 500)
)


@pytest.fixture
def scored(layout, dump, landing):
    def run(options: ScoringOptions, load: bool = True) -> pl.DataFrame:
        dump("d.ndjson", CONVERSATIONS)
        backfill(layout, landing, scoring=options, load=load)
        [scope] = [p.name.removeprefix("scope=") for p in layout.scored("x").parent.iterdir()]
        return scan_scored(layout, scope).collect(), scope

    return run


def _by_thread(frame: pl.DataFrame) -> dict[str, dict]:
    return {r["thread_id"]: r for r in frame.sort("created_at").iter_rows(named=True)}


def test_implicit_signals_from_the_next_turn(scored):
    frame, _ = scored(ScoringOptions(signals=True))
    rows = _by_thread(frame)
    assert rows["good"]["eval_score"] == 7.5 and rows["good"]["score_source"] == "implicit"
    assert (
        "thanks (+1.5)" in rows["good"]["score_reason"]
        and "confirmation (+1)" in rows["good"]["score_reason"]
    )
    # complaint -2, error -1.5 (the last answer of "bad" has no next turn: neutral)
    bad = frame.filter(pl.col("thread_id") == "bad").sort("created_at")
    assert bad["eval_score"].to_list() == [1.5, 5.0]
    assert bad["score_source"].to_list() == ["implicit", "neutral"]
    assert (
        rows["plain"]["score_source"] == "neutral" and rows["plain"]["score_reason"] == "no signal: neutral"
    )


def test_gates_filter_before_near_duplicates_and_are_never_loaded(scored, layout):
    frame, scope = scored(ScoringOptions(signals=True, gates=ALL_GATES))
    rows = _by_thread(frame)
    assert rows["hello"]["filtered"] == "trivial" and "greeting" in rows["hello"]["filter_reason"]
    assert rows["nope"]["filtered"] == "non_answer" and rows["nope"]["filter_reason"].startswith("refusal")
    assert rows["blank"]["filter_reason"] == "answer empty after cleanup"
    bad = frame.filter(pl.col("thread_id") == "bad").sort("created_at")
    assert bad["filtered"].to_list() == ["min_score", None]
    assert bad["filter_reason"][0] == "score 1.5 < --min-score 3.0"
    filtered = frame.filter(pl.col("filtered").is_not_null())
    assert not filtered["kept"].any() and filtered["duplicate_of"].is_null().all()
    kept, duplicates = int(frame["kept"].sum()), frame.filter(pl.col("duplicate_of").is_not_null()).height
    assert frame.height == kept + duplicates + filtered.height
    table = pl.read_parquet(filtered_file(layout, scope))
    assert sorted(table["pattern_id"].to_list()) == sorted(filtered["pattern_id"].to_list())
    loaded = kept_patterns(layout, scope).collect()
    assert set(loaded["pattern_id"]).isdisjoint(filtered["pattern_id"].to_list())


def test_each_gate_can_be_switched_off(scored):
    frame, _ = scored(ScoringOptions(gates=GateOptions(enabled=frozenset({"non_answer"}))), load=False)
    assert set(frame["filtered"].drop_nulls()) == {"non_answer"}


def test_precedence_feedback_then_judge_then_implicit(scored, layout, openai_server, tmp_path):
    fb = tmp_path / "fb.csv"
    fb.write_text("thread_id,feedback\nplain,negative\n")
    judge = JudgeOptions("judge-a", base_url=openai_server.url, api_key_env="JUDGE_TEST_KEY")
    openai_server.script = lambda body, n: None
    openai_server.grade = lambda body: (9.0, "solid")
    options = ScoringOptions(ScoreStrategy.FEEDBACK, fb, judge=judge, signals=True, gates=ALL_GATES)
    frame, _ = scored(options, load=False)
    rows = _by_thread(frame)
    assert rows["plain"]["score_source"] == "feedback:thread" and rows["plain"]["eval_score"] == 3.0
    assert rows["good"]["score_source"] == "llm_judge" and rows["good"]["score_reason"] == "judge: solid"
    asked = {c["messages"][-1]["content"].split("\n")[1] for c in openai_server.chat_calls()}
    # Neither the feedback-scored pattern nor the gated ones were worth a request.
    assert "Hi!" not in asked and "What is the capital of Australia again?" not in asked
    assert len(asked) == 3


def test_signal_rules_are_configurable(tmp_path, scored):
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: grateful\n    weight: 4\n    patterns: ['thanks']\n")
    frame, _ = scored(ScoringOptions(signals=True, signal_rules=rules), load=False)
    assert _by_thread(frame)["good"]["eval_score"] == 9.0
    assert _by_thread(frame)["bad"]["score_source"] == "neutral"
    (tmp_path / "broken.yaml").write_text("rules: []\n")
    with pytest.raises(SignalRulesError, match=r"broken\.yaml"):
        SignalRules.load(tmp_path / "broken.yaml")


def test_follow_ups_carry_the_exchange_before_them():
    rows = _thread(
        "t",
        [
            ("user", "Show revenue by region for 2024"),
            ("assistant", "SELECT region, sum(x) FROM s"),
            ("user", "And only for the last 7 days?"),
            ("assistant", "Add WHERE day > now() - 7"),
            ("user", "Now explain window functions in SQL to a beginner"),
            ("assistant", "They..."),
        ],
        0,
    )
    frame = pl.DataFrame(
        [{**r, "created_at": r["created_at"] * 1_000_000} for r in rows],
        schema_overrides={"created_at": pl.Int64},
    ).with_columns(
        pl.col("created_at").cast(pl.Datetime("us", "UTC")),
        created_epoch=pl.lit(0),
        text_chars=pl.lit(1),
        is_blank=pl.lit(False),
        tenant_id=pl.lit("d"),
        project_id=pl.lit("d"),
        dump_id=pl.lit("x"),
        dump_seq=pl.lit(0),
        line_no=pl.int_range(pl.len()),
        branch=pl.lit("current"),
    )
    frame = frame.select([c for c in RAW_SCHEMA.names])
    plain, _ = pair_frame(frame, PairingOptions())
    assert plain["task"][1] == "And only for the last 7 days?"
    patterns, _ = pair_frame(frame, PairingOptions(task_max_chars=120, task_context="previous"))
    tasks = patterns["task"].to_list()
    assert tasks[0] == "Show revenue by region for 2024"
    assert tasks[1].startswith("Earlier: Show revenue by region for 2024\nAnswer: SELECT")
    assert tasks[1].endswith(FOLLOW_UP_MARKER + "And only for the last 7 days?") and len(tasks[1]) <= 120
    assert not patterns["task_truncated"][1]
    assert tasks[2] == "Now explain window functions in SQL to a beginner"  # not short: no context
    assert PairingOptions(task_context="previous").describe().endswith("context=previous")
    assert "context" not in PairingOptions().describe()
