"""Reading the user's feedback export into scores on the 0..10 scale."""

from __future__ import annotations

import polars as pl
import pytest

from pipelines.scoring.feedback import FeedbackError, check_feedback, read_feedback, unmatched_rows
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


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_rating_outside_the_scale_is_an_error_naming_file_row_key_and_scale(tmp_path, suffix):
    fb = tmp_path / f"ratings{suffix}"
    frame = pl.DataFrame({"message_id": ["m1", "m2", "m3"], "rating": ["4", "10", "5"]})
    frame.write_parquet(fb) if suffix == ".parquet" else frame.write_csv(fb)
    with pytest.raises(FeedbackError) as info:
        read_feedback(ScoringOptions(ScoreStrategy.FEEDBACK, fb))
    text = str(info.value)
    where = "rows 2" if suffix == ".parquet" else "lines 3"
    assert f"ratings{suffix}: 1 ratings outside the rating scale 1..5 ({where}; " in text
    assert "rating 10 for message_id m2" in text and "--rating-min/--rating-max" in text
    assert "\n" not in text
    assert check_feedback(ScoringOptions(ScoreStrategy.FEEDBACK, fb)) == text
    # The file's own scale makes it valid: nothing is clipped.
    options = ScoringOptions(ScoreStrategy.FEEDBACK, fb, rating_min=0, rating_max=10)
    assert check_feedback(options) is None
    assert read_feedback(options).sort("key")["score"].to_list() == [4.0, 10.0, 5.0]


def test_a_rating_below_the_scale_is_an_error_too(tmp_path):
    fb = tmp_path / "feedback.csv"
    fb.write_text("thread_id,rating\nt1,0\nt2,3\n")
    with pytest.raises(FeedbackError, match=r"outside the rating scale 1\.\.5 \(lines 2; first: rating 0 "):
        read_feedback(ScoringOptions(ScoreStrategy.FEEDBACK, fb))


def test_errors_are_feedback_errors(tmp_path):
    missing = ScoringOptions(ScoreStrategy.FEEDBACK, tmp_path / "none.csv")
    assert check_feedback(missing) == f"feedback file not found: {tmp_path / 'none.csv'}"
    (tmp_path / "x.parquet").write_text("not parquet")
    assert "not a readable CSV or Parquet file" in check_feedback(
        ScoringOptions(ScoreStrategy.FEEDBACK, tmp_path / "x.parquet")
    )


def test_unmatched_rows_count_rows_none_of_whose_keys_match(tmp_path):
    fb = tmp_path / "feedback.csv"
    fb.write_text(
        "message_id,thread_id,feedback\n"
        "m1,,positive\n"  # matches a message
        "m9,,positive\n"  # matches nothing
        ",t1,negative\n"  # matches a thread
        ",t9,negative\n"  # matches nothing
        "m9,t1,up\n"  # its thread matches: not unmatched
        "m8,t8,down\n"  # neither matches: one row
    )
    feedback = read_feedback(ScoringOptions(ScoreStrategy.FEEDBACK, fb))
    messages = pl.LazyFrame({"message_id": ["m1", "m2"], "thread_id": ["t1", "t1"]})
    assert unmatched_rows(feedback, messages) == 3
