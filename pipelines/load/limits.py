"""The Engramia server's input limits, checked by the pipeline before anything is sent.

``POST /v1/learn`` validates its body (a bad pattern is answered 422), but ``POST /v1/import`` stores
records without any validation. So both REST modes validate here, vectorised over the frame, and a
pattern that breaks a limit is recorded ``rejected`` with the reason while the rest goes on.

Invariant: every limit of the server the pipeline relies on is defined here once, the per-scope
pattern cap included (the embedded and REST loads both check it before writing).
"""

from __future__ import annotations

import polars as pl

from pipelines.load.records import pattern_key

# POST /v1/learn (engramia.api.schemas.LearnRequest) and what Memory.learn refuses.
TASK_MAX_CHARS = 10_000
CODE_MAX_CHARS = 500_000
SCORE_MIN, SCORE_MAX = 0.0, 10.0
RUN_ID_MAX_CHARS = 200
# POST /v1/import (ImportRecord.key) and Engramia's import_data key rule.
KEY_MAX_CHARS = 500
# Engramia refuses to learn beyond this many patterns in one scope; an import past it would leave the
# scope in a state the library itself does not expect.
SCOPE_PATTERN_CAP = 100_000
# The share of the plan's pattern limit a project may use (the server's ENGRAMIA_PROJECT_QUOTA_PCT,
# default 0.8); the server does not publish its own, so a load assumes this unless told (--quota-pct).
SERVER_QUOTA_PCT = 0.8
# POST /v1/import accepts at most this many records per request (ImportRequest.records max_length).
IMPORT_MAX_RECORDS = 10_000


def invalid_reason() -> pl.Expr:
    """Why a row breaks the server's limits (first reason wins), or null when it is valid."""
    task, code, score = pl.col("task"), pl.col("code"), pl.col("eval_score")
    blank_task = task.is_null() | (task.str.strip_chars() == "")
    blank_code = code.is_null() | (code.str.strip_chars() == "")
    bad_score = score.is_null() | score.is_nan() | (score < SCORE_MIN) | (score > SCORE_MAX)
    key = pattern_key(pl.col("pattern_id"))
    bad_key = (key.str.len_chars() > KEY_MAX_CHARS) | key.str.contains("..", literal=True)
    return (
        pl.when(blank_task)
        .then(pl.lit("task is blank"))
        .when(blank_code)
        .then(pl.lit("code is blank"))
        .when(task.str.len_chars() > TASK_MAX_CHARS)
        .then(pl.format("task has {} chars (limit {})", task.str.len_chars(), pl.lit(TASK_MAX_CHARS)))
        .when(code.str.len_chars() > CODE_MAX_CHARS)
        .then(pl.format("code has {} chars (limit {})", code.str.len_chars(), pl.lit(CODE_MAX_CHARS)))
        .when(bad_score)
        .then(pl.format("eval_score {} outside {}..{}", score, pl.lit(SCORE_MIN), pl.lit(SCORE_MAX)))
        .when(pl.col("pattern_id").str.len_chars() > RUN_ID_MAX_CHARS)
        .then(pl.lit(f"pattern id longer than {RUN_ID_MAX_CHARS} chars"))
        .when(bad_key)
        .then(pl.lit("key is not a valid Engramia pattern key"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )


def split_valid(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(valid rows, invalid rows with an ``invalid_reason`` column)."""
    marked = frame.with_columns(invalid_reason=invalid_reason())
    valid = marked.filter(pl.col("invalid_reason").is_null()).drop("invalid_reason")
    invalid = marked.filter(pl.col("invalid_reason").is_not_null())
    return valid, invalid
