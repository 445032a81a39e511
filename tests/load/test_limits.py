"""The server's input limits, checked before anything is sent."""

from __future__ import annotations

import polars as pl

from pipelines.load.limits import CODE_MAX_CHARS, TASK_MAX_CHARS, split_valid

# -- server limits ---------------------------------------------------------------------------------


def test_split_valid_names_the_first_broken_limit():
    frame = pl.DataFrame(
        {
            "pattern_id": ["ok", "blank_task", "blank_code", "long_task", "long_code", "score", "nan"],
            "task": ["t", "  \n", "t", "x" * (TASK_MAX_CHARS + 1), "t", "t", "t"],
            "code": ["c", "c", " ", "c", "y" * (CODE_MAX_CHARS + 1), "c", "c"],
            "eval_score": [5.0, 5.0, 5.0, 5.0, 5.0, 10.5, float("nan")],
        }
    )
    valid, invalid = split_valid(frame)
    assert valid["pattern_id"].to_list() == ["ok"]
    reasons = dict(invalid.select("pattern_id", "invalid_reason").iter_rows())
    assert reasons["blank_task"] == "task is blank" and reasons["blank_code"] == "code is blank"
    assert reasons["long_task"] == f"task has {TASK_MAX_CHARS + 1} chars (limit {TASK_MAX_CHARS})"
    assert reasons["long_code"].startswith("code has 500001 chars")
    assert reasons["score"].startswith("eval_score 10.5 outside") and reasons["nan"].startswith(
        "eval_score NaN"
    )
    assert "invalid_reason" not in valid.columns
