"""Pairing rules: merge (default) and strict, every message accounted for, deterministic ids."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from pipelines.pairing.pairs import (
    REASON_ANSWER_AFTER_ANSWER,
    REASON_EMPTY,
    REASON_NO_QUESTION,
    REASON_SYSTEM,
    REASON_UNANSWERED,
    REASON_USER_FOLLOWED_BY_USER,
    Pairing,
    PairingOptions,
    pair_messages,
)

T0 = 1_717_200_000


def frame(rows: list[tuple]) -> pl.LazyFrame:
    """rows: (thread, message_id, role, text, seconds); the list order is the export order."""
    return pl.DataFrame(
        {
            "thread_id": [r[0] for r in rows],
            "assistant_id": ["asst_1"] * len(rows),
            "message_id": [r[1] for r in rows],
            "role": [r[2] for r in rows],
            "text": [r[3] for r in rows],
            "created_at": [datetime.fromtimestamp(T0 + r[4], UTC) for r in rows],
            "dump_seq": [1] * len(rows),
            "line_no": list(range(1, len(rows) + 1)),
            "is_blank": [r[3].strip() == "" for r in rows],
        }
    ).lazy()


def pair(rows: list[tuple], mode: Pairing = Pairing.MERGE, **kw: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    patterns, unpaired = pair_messages(frame(rows), PairingOptions(mode, **kw))
    return patterns.collect().sort("created_at", "pattern_id"), unpaired.sort("message_id")


def test_the_guide_example():
    patterns, unpaired = pair(
        [
            ("thread_abc", "msg_1", "user", "Build a CSV parser", 0),
            ("thread_abc", "msg_2", "assistant", "import csv", 3),
        ]
    )
    assert patterns.select("task", "code").rows() == [("Build a CSV parser", "import csv")]
    assert patterns["user_message_ids"].to_list() == [["msg_1"]]
    assert patterns["assistant_message_ids"].to_list() == [["msg_2"]]
    assert patterns["pattern_id"].item().startswith("oai_") and len(patterns["pattern_id"].item()) == 28
    assert unpaired.is_empty()


def test_multi_turn_gives_one_pattern_per_exchange():
    patterns, _ = pair(
        [
            ("t", "m1", "user", "q1", 0),
            ("t", "m2", "assistant", "a1", 1),
            ("t", "m3", "user", "q2", 2),
            ("t", "m4", "assistant", "a2", 3),
        ]
    )
    assert patterns.select("task", "code").rows() == [("q1", "a1"), ("q2", "a2")]


def test_ties_keep_export_order():
    # Same second for all: only the export order says the question came first.
    patterns, unpaired = pair([("t", "m9", "user", "q", 0), ("t", "m1", "assistant", "a", 0)])
    assert patterns.select("task", "code").rows() == [("q", "a")]
    assert unpaired.is_empty()


def test_merge_joins_consecutive_messages_of_one_role():
    rows = [
        ("t", "u1", "user", "my build is slow", 0),
        ("t", "u2", "user", "it reinstalls everything", 1),
        ("t", "a1", "assistant", "cache the layer", 2),
        ("t", "a2", "assistant", "and pin versions", 2),
    ]
    patterns, unpaired = pair(rows)
    assert patterns.select("task", "code").rows() == [
        ("my build is slow\n\nit reinstalls everything", "cache the layer\n\nand pin versions")
    ]
    assert unpaired.is_empty()
    strict, strict_unpaired = pair(rows, Pairing.STRICT)
    assert strict.select("task", "code").rows() == [("it reinstalls everything", "cache the layer")]
    assert dict(zip(strict_unpaired["message_id"], strict_unpaired["reason"], strict=True)) == {
        "u1": REASON_USER_FOLLOWED_BY_USER,
        "a2": REASON_ANSWER_AFTER_ANSWER,
    }


def test_every_unpaired_message_has_its_reason():
    rows = [
        ("t1", "s", "system", "be nice", 0),
        ("t1", "a0", "assistant", "hello, how can I help?", 1),
        ("t1", "u1", "user", "reset my password", 2),
        ("t1", "a1", "assistant", "   ", 3),
        ("t2", "u2", "user", "are you there?", 0),
    ]
    patterns, unpaired = pair(rows)
    assert patterns.is_empty()
    assert dict(zip(unpaired["message_id"], unpaired["reason"], strict=True)) == {
        "s": REASON_SYSTEM,
        "a0": REASON_NO_QUESTION,
        "a1": REASON_EMPTY,
        "u1": REASON_UNANSWERED,
        "u2": REASON_UNANSWERED,
    }


def test_truncation_is_counted_and_ids_are_stable():
    long_task, long_code = "x" * 50, "y" * 90
    rows = [("t", "u", "user", long_task, 0), ("t", "a", "assistant", long_code, 1)]
    patterns, _ = pair(rows, task_max_chars=10, code_max_chars=20)
    row = patterns.row(0, named=True)
    assert (len(row["task"]), len(row["code"]), row["task_chars"], row["code_chars"]) == (10, 20, 50, 90)
    assert row["task_truncated"] and row["code_truncated"]
    again, _ = pair(list(reversed(rows)), task_max_chars=10, code_max_chars=20)  # file order reversed
    assert again["pattern_id"].to_list() == patterns["pattern_id"].to_list()
    assert again.select("task", "code").rows() == patterns.select("task", "code").rows()
    grown, _ = pair([*rows, ("t", "a2", "assistant", "more", 2)])
    assert grown["pattern_id"].item() != patterns["pattern_id"].item()


def test_message_accounting_on_random_threads():
    import random

    rng = random.Random(3)
    rows = []
    for t in range(60):
        for i in range(rng.randint(1, 9)):
            role = rng.choice(["user", "user", "assistant", "assistant", "system"])
            text = rng.choice(["hi there", "", "answer text", "a question?"])
            rows.append((f"t{t}", f"t{t}m{i}", role, text, rng.randint(0, 3)))
    for mode in Pairing:
        patterns, unpaired = pair(rows, mode)
        in_patterns = (
            patterns.select(pl.concat_list("user_message_ids", "assistant_message_ids")).to_series().explode()
        )
        assert in_patterns.n_unique() == in_patterns.len()
        assert set(in_patterns.to_list()).isdisjoint(unpaired["message_id"].to_list())
        assert in_patterns.len() + unpaired.height == len(rows)


def test_ids_cannot_be_made_to_collide_by_separators():
    from pipelines.pairing.pairs import pattern_ids

    a = pattern_ids(pl.Series([["a"]]), pl.Series([["b>c"]]))
    b = pattern_ids(pl.Series([["a>b"]]), pl.Series([["c"]]))
    c = pattern_ids(pl.Series([["a,b"]]), pl.Series([["c"]]))
    d = pattern_ids(pl.Series([["a", "b"]]), pl.Series([["c"]]))
    assert len({a.item(), b.item(), c.item(), d.item()}) == 4
