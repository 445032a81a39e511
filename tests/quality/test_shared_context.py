"""The GX suites validate through one context per thread: each validation still judges the frame it is
given, and threads validating at once do not see each other's frames."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import polars as pl

from pipelines.quality.expectations import MESSAGE_COLUMNS, QualityReport, validate_messages


def messages(n: int, duplicated: int = 0, role: str = "user") -> pl.LazyFrame:
    """``n`` well-formed messages, the last ``duplicated`` of them with the first message's id."""
    ids = [f"msg_{i}" for i in range(n - duplicated)] + ["msg_0"] * duplicated
    return pl.LazyFrame(
        {
            "message_id": ids,
            "thread_id": [f"thread_{i // 2}" for i in range(n)],
            "assistant_id": ["asst_a"] * n,
            "role": [role] * n,
            "text": ["hello"] * n,
            "created_at": [datetime(2026, 8, 1, tzinfo=UTC)] * n,
            "tenant_id": ["default"] * n,
            "project_id": ["default"] * n,
            "dump_id": ["dump-1"] * n,
            "line_no": list(range(n)),
            "branch": ["current"] * n,
        },
        schema=MESSAGE_COLUMNS,
    )


def failed(report: QualityReport) -> dict[str, int | None]:
    return {r["expectation"]: r["unexpected_count"] for r in report.failed}


def test_a_suite_judges_each_frame_it_is_given_in_turn():
    first = validate_messages(messages(10))
    duplicated = validate_messages(messages(50, duplicated=3))
    again = validate_messages(messages(20))
    wrong_role = validate_messages(messages(7, role="narrator"))

    assert first.success and first.rows == 10
    assert not duplicated.success and duplicated.rows == 50
    # The first id and its three copies.
    assert failed(duplicated) == {"expect_column_values_to_be_unique": 4}
    assert again.success and again.rows == 20
    assert failed(wrong_role) == {"expect_column_values_to_be_in_set": 7}


def test_threads_validating_at_once_each_judge_their_own_frames():
    outcomes: dict[str, list[dict[str, int | None]]] = {}

    def validate(name: str, frames: list[pl.LazyFrame]) -> None:
        outcomes[name] = [failed(validate_messages(frame)) for frame in frames]

    good, bad = messages(200), messages(300, duplicated=5)
    # The first id and its five copies.
    ok, duplicates = {}, {"expect_column_values_to_be_unique": 6}
    threads = [
        threading.Thread(target=validate, args=("good first", [good, bad, good, bad])),
        threading.Thread(target=validate, args=("bad first", [bad, good, bad, good])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert outcomes == {
        "good first": [ok, duplicates, ok, duplicates],
        "bad first": [duplicates, ok, duplicates, ok],
    }
