"""eval_score strategies and near-duplicate removal within a scope."""

from __future__ import annotations

import polars as pl

from pipelines.runner import backfill
from pipelines.scoring import scores as scoring
from pipelines.scoring.options import ScoreStrategy, ScoringOptions
from pipelines.scoring.scored import scan_scored
from pipelines.scoring.scores import score_scope
from tests.conftest import msg


def _exchange(thread: str, q: str, a: str, at: int) -> list[dict]:
    return [msg(thread, f"{thread}_q", "user", q, at), msg(thread, f"{thread}_a", "assistant", a, at + 1)]


def test_neutral_by_default_and_near_duplicates_dropped(layout, dump, landing):
    dump(
        "d.ndjson",
        _exchange("t1", "How do I reset my password?", "Settings > Security.", 0)
        + _exchange("t2", "how do i reset my password?", "Use the reset link.", 100)
        + _exchange("t3", "Where is my invoice?", "Billing > History.", 200),
    )
    run = backfill(layout, landing)
    [scope] = run.scopes
    scored = scan_scored(layout, scope).collect().sort("created_at")
    assert scored["eval_score"].to_list() == [5.0, 5.0, 5.0]
    assert scored["kept"].to_list() == [False, True, True]  # equal scores: the latest wins
    winner = scored["pattern_id"][1]
    assert scored["duplicate_of"][0] == winner and scored["similarity"][0] == 1.0
    assert run.scopes[scope].load.stored == 2


def test_feedback_scores_by_message_and_thread(layout, dump, landing, tmp_path):
    dump(
        "d.ndjson",
        _exchange("t1", "first question here", "a", 0)
        + _exchange("t2", "second question here please", "b", 10)
        + _exchange("t3", "third question about something", "c", 20)
        + _exchange("t4", "fourth one entirely different", "d", 30),
    )
    fb = tmp_path / "feedback.csv"
    fb.write_text(
        "message_id,thread_id,feedback\nt1_a,,positive\n,t2,negative\nt3_a,t3,thumbs_down\n,t3,positive\n"
    )
    run = backfill(layout, landing, scoring=ScoringOptions(ScoreStrategy.FEEDBACK, fb))
    [scope] = run.scopes
    scored = scan_scored(layout, scope).collect().sort("created_at")
    assert scored["eval_score"].to_list() == [7.0, 3.0, 3.0, 5.0]
    assert scored["score_source"].to_list() == [
        "feedback:message",
        "feedback:thread",
        "feedback:message",
        "neutral",
    ]


def test_scored_table_is_kept_until_an_input_changes(layout, dump, landing, tmp_path):

    dump(
        "d.ndjson",
        _exchange("t1", "How do I reset my password?", "Settings > Security.", 0)
        + _exchange("t2", "how do i reset my password?", "Use the reset link.", 100),
    )
    [scope] = backfill(layout, landing, load=False).scopes
    table = layout.scored(scope) / "scored.parquet"
    made = table.stat().st_mtime_ns
    first = score_scope(layout, scope, ScoringOptions())
    assert first.patterns == 2 and first.kept == 1
    assert table.stat().st_mtime_ns == made  # nothing changed: not rewritten

    # Each input, changed on its own, makes a new table: the threshold, the feedback, a new batch.
    assert score_scope(layout, scope, ScoringOptions(threshold=1.01)).kept == 2
    assert score_scope(layout, scope, ScoringOptions()).kept == 1
    fb = tmp_path / "feedback.csv"
    fb.write_text("message_id,feedback\nt1_a,positive\n")
    options = ScoringOptions(ScoreStrategy.FEEDBACK, fb)
    assert score_scope(layout, scope, options).from_feedback == 1
    assert sorted(scan_scored(layout, scope).collect()["eval_score"].to_list()) == [5.0, 7.0]
    fb.write_text("message_id,feedback\nt1_a,negative\n")
    score_scope(layout, scope, options)
    assert sorted(scan_scored(layout, scope).collect()["eval_score"].to_list()) == [3.0, 5.0]
    dump("e.ndjson", _exchange("t3", "Where is my invoice?", "Billing > History.", 200))
    assert backfill(layout, landing, load=False).scopes[scope].scoring.patterns == 3
    table.unlink()  # a table gone is made again
    assert score_scope(layout, scope, ScoringOptions()).patterns == 3 and table.exists()


def test_scored_table_updated_from_new_batches_equals_a_rebuild(layout, dump, landing, tmp_path, monkeypatch):
    updates = []
    update = scoring._brought_up_to_date
    monkeypatch.setattr(scoring, "_brought_up_to_date", lambda *a: updates.append(a) or update(*a))
    fb = tmp_path / "feedback.csv"
    # t1's answer in the later dump, t2 rated by thread, t4 (later dump) rated by message.
    fb.write_text("message_id,thread_id,rating\nt1_a2,,5\n,t2,1\nt4_a,,4\n")
    options = ScoringOptions(ScoreStrategy.FEEDBACK, fb)
    dump(
        "d1.ndjson",
        _exchange("t1", "How do I reset my password?", "Settings > Security.", 0)
        + _exchange("t2", "how do i reset my password?", "Use the reset link.", 100)
        + _exchange("t3", "Where is my invoice?", "Billing > History.", 200),
    )
    [scope] = backfill(layout, landing, scoring=options, load=False).scopes
    dump(
        "d2.ndjson",
        # t1 grows a second answer (its pattern is rebuilt under a new id), t4 is new.
        [
            msg("t1", "t1_a2", "assistant", "Or use the reset link.", 2),
            *_exchange("t4", "Where is my invoice please?", "Billing > History.", 300),
        ],
    )
    assert backfill(layout, landing, scoring=options, load=False).scopes[scope].scoring.patterns == 4
    assert len(updates) == 1  # the second run updated the table from its new batch
    table = layout.scored(scope) / "scored.parquet"
    updated = pl.read_parquet(table).sort("pattern_id")
    assert updated["pattern_id"].is_unique().all()

    # The same table made from scratch: no record of the last table, no near-duplicate cache.
    table.with_name("scored.json").unlink()
    for path in layout.dedup_cache(scope).iterdir():
        path.unlink()
    score_scope(layout, scope, options)
    rebuilt = pl.read_parquet(table).sort("pattern_id")
    assert updated.equals(rebuilt)
    assert rebuilt["score_source"].value_counts().sort("score_source").rows() == [
        ("feedback:message", 2),
        ("feedback:thread", 1),
        ("neutral", 1),
    ]


def test_feedback_rows_matching_no_message_are_counted(layout, dump, landing, tmp_path):
    dump("d.ndjson", _exchange("t1", "first question here", "a", 0))
    dump("e.ndjson", [msg("t2", "t2_q", "user", "another assistant's question", 0, assistant="asst_2")])
    fb = tmp_path / "feedback.csv"
    fb.write_text("message_id,thread_id,rating\nt1_a,,5\nt2_q,,1\ngone,,3\n,t_gone,2\n")
    options = ScoringOptions(ScoreStrategy.FEEDBACK, fb)
    run = backfill(layout, landing, scoring=options, load=False)
    # A row matching a message of another scope is matched: the file covers every scope.
    assert {s: r.scoring.feedback_unmatched for s, r in run.scopes.items()} == {
        "default__asst_1": 2,
        "default__asst_2": 2,
    }
    [scope] = [s for s in run.scopes if s.endswith("asst_1")]
    # The scored table is kept as it is on a second look; the figure is counted again.
    assert score_scope(layout, scope, options).feedback_unmatched == 2
    assert score_scope(layout, scope, ScoringOptions()).feedback_unmatched == 0
