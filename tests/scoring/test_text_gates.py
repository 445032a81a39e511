"""The text gates against a plain-Python statement of their rules, on tasks and answers built to sit on
every threshold: word and character counts around ``min_words``, ``min_chars`` and the longest trivial
phrase, separators of every kind, follow-up context, and answers around ``refusal_max_chars``."""

from __future__ import annotations

import random
import re
import unicodedata
import zlib

import polars as pl
import pytest

from pipelines.pairing.context import FOLLOW_UP_MARKER
from pipelines.scoring.gates import REFUSAL, TRIVIAL_PHRASES, GateOptions, text_gates


def _sep(c: str) -> bool:
    return c.isspace() or unicodedata.category(c)[0] in "PS"


def _words(text: str) -> int:
    runs, inside = 0, False
    for c in text:
        if not _sep(c) and not inside:
            runs += 1
        inside = not _sep(c)
    return runs


def _bare(text: str) -> str:
    out, gap = [], False
    for c in text.lower():
        if _sep(c):
            gap = True
        else:
            if gap:
                out.append(" ")
            out.append(c)
            gap = False
    return ("".join(out) + (" " if gap else "")).strip()


def _reference(task: str | None, code: str | None, o: GateOptions) -> tuple[str | None, str | None]:
    own = (task or "").split(FOLLOW_UP_MARKER)[-1]
    answer = code or ""
    if "trivial" in o.enabled:
        if _bare(own) in TRIVIAL_PHRASES:
            return "trivial", f"greeting, thanks or nudge: {_bare(own)}"
        if _words(own) < o.min_words:
            return "trivial", f"task has {_words(own)} words (< {o.min_words})"
        if len(own.strip()) < o.min_chars:
            return "trivial", f"task has {len(own.strip())} characters (< {o.min_chars})"
    if "non_answer" in o.enabled:
        if all(_sep(c) for c in answer):
            return "non_answer", "answer empty after cleanup"
        if len(answer) < o.refusal_max_chars and re.search(REFUSAL, answer):
            return "non_answer", "refusal: " + re.sub(r"\s+", " ", answer)[:60]
    return None, None


WORDS = ["hi", "Thanks", "ok", "a", "go", "on", "Hello", "there", "I'm", "sorry", "but", "I", "can't",
         "continue", "please", "é", "中文", "x1", "what", "is", "the", "capital", "of", "France",
         "very", "much", "thank", "you", "Keep", "going"]  # fmt: skip
REFUSALS = ["I'm sorry, but I can't ", "As an AI", "Unfortunately I cannot ", "sorry "]
SEPARATORS = [" ", "  ", "\t", "\n", ", ", "!!", "...", " - ", "\u00a0", " 🙂 ", "$", "?", "\n\n"]


def _text(rng: random.Random, words: int) -> str:
    parts = [rng.choice(SEPARATORS) if rng.random() < 0.3 else ""]
    for i in range(words):
        parts.append(rng.choice(WORDS))
        if i < words - 1 or rng.random() < 0.4:
            parts.append(rng.choice(SEPARATORS))
    return "".join(parts)


def _rows(seed: int, n: int) -> pl.DataFrame:
    rng = random.Random(seed)
    tasks, codes = [], []
    for _ in range(n):
        task = _text(rng, rng.choice([0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 9, 12, 40]))
        if rng.random() < 0.1:
            task = rng.choice(TRIVIAL_PHRASES).upper() + rng.choice(["", "!", " :)", ".", "  "])
        if rng.random() < 0.15:
            task = _text(rng, rng.randint(3, 20)) + FOLLOW_UP_MARKER + task
        code = _text(rng, rng.choice([0, 1, 3, 8, 30, 60, 70, 90, 400]))
        if rng.random() < 0.2:
            code = rng.choice(REFUSALS) + code
        if rng.random() < 0.05:
            code = rng.choice(["", " \n\t", "...!?", "🙂🙂"])
        tasks.append(None if rng.random() < 0.02 else task)
        codes.append(None if rng.random() < 0.02 else code)
    return pl.DataFrame({"pattern_id": [f"p{i:05d}" for i in range(n)], "task": tasks, "code": codes})


BOTH = frozenset({"trivial", "non_answer"})
OPTIONS = [
    GateOptions.defaults(),
    GateOptions(enabled=BOTH, min_words=7, min_chars=40, refusal_max_chars=30),
    GateOptions(enabled=frozenset({"trivial"}), min_words=1, min_chars=1),
    GateOptions(enabled=BOTH, min_words=3, min_chars=13, refusal_max_chars=1),
    GateOptions(enabled=frozenset({"non_answer"}), refusal_max_chars=2000),
    GateOptions(enabled=frozenset({"trivial"}), min_words=9, min_chars=6),
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: f"{sorted(o.enabled)}-{o.min_words}-{o.min_chars}")
def test_text_gates_follow_their_rules_on_every_threshold(options: GateOptions) -> None:
    rows = _rows(seed=zlib.crc32(repr(options.describe()).encode()), n=3000)
    got = text_gates(rows.lazy(), options)
    want = [_reference(t, c, options) for t, c in zip(rows["task"], rows["code"], strict=True)]
    assert got["pattern_id"].to_list() == rows["pattern_id"].to_list()
    mismatches = [
        (pid, task, code, (gate, reason), w)
        for (pid, task, code), gate, reason, w in zip(
            rows.iter_rows(), got["filtered"], got["filter_reason"], want, strict=True
        )
        if (gate, reason) != w
    ]
    assert not mismatches, mismatches[:5]
    caught = {g for g, _ in want if g}
    assert caught == ({"trivial", "non_answer"} & options.enabled), "the rows must reach every gate"
