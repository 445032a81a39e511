"""Reading the user's feedback export into scores on the 0..10 scale."""

from __future__ import annotations

import polars as pl
import pytest

from pipelines.scoring.feedback import read_feedback
from pipelines.scoring.options import ScoreStrategy, ScoringOptions


def test_numeric_ratings_map_into_0_10(tmp_path):
    fb = tmp_path / "ratings.parquet"
    pl.DataFrame({"thread_id": ["a", "b", "c", "c"], "rating": [1, 5, 4, 2]}).write_parquet(fb)
    out = read_feedback(ScoringOptions(ScoreStrategy.FEEDBACK, fb)).sort("key")
    assert out["score"].to_list() == [0.0, 10.0, 5.0]


def test_bad_feedback_names_file_and_lines(tmp_path):
    fb = tmp_path / "feedback.csv"
    fb.write_text("thread_id,feedback\nt1,positive\nt2,meh\n")
    with pytest.raises(ValueError, match=r"feedback.csv: 1 rows .*lines 3"):
        read_feedback(ScoringOptions(ScoreStrategy.FEEDBACK, fb))
    with pytest.raises(ValueError, match="needs a 'message_id' or a 'thread_id'"):
        (tmp_path / "x.csv").write_text("id,feedback\n1,positive\n")
        read_feedback(ScoringOptions(ScoreStrategy.FEEDBACK, tmp_path / "x.csv"))
