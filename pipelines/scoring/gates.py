"""Curation gates: patterns not worth remembering are filtered before near-duplicate removal, each
with the gate that caught it and why.

- ``trivial`` (task): greetings, thanks, acknowledgements and "continue"-style nudges (the whole task
  is one of :data:`TRIVIAL_PHRASES`, punctuation and emoji aside), or a task below ``min_words`` words
  or ``min_chars`` characters.
- ``non_answer`` (answer): empty once markdown, punctuation and whitespace are stripped, or a refusal
  (:data:`REFUSAL` at the start of an answer shorter than ``refusal_max_chars``; a long answer that
  opens with an apology is kept).
- ``min_score``: the final eval_score is below ``min_score`` (applied after every score source).

Invariants: the first gate that applies names the pattern's ``filtered`` reason (in the order above);
a gated pattern takes no part in near-duplicate removal and is never loaded; gates look at the user's
own words, so a follow-up's prepended context (``--task-context previous``) does not count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from pipelines.pairing.context import FOLLOW_UP_MARKER

GATES = ("trivial", "non_answer", "min_score")
TRIVIAL_PHRASES = (
    "hi", "hello", "hey", "hi there", "hello there", "hey there", "good morning", "good afternoon",
    "good evening", "yo", "howdy", "greetings",
    "thanks", "thank you", "thanks a lot", "thank you very much", "thx", "ty", "cheers", "many thanks",
    "ok", "okay", "k", "cool", "great", "nice", "perfect", "awesome", "got it", "sure", "yes", "no",
    "yep", "nope", "alright", "fine", "sounds good", "bye", "goodbye", "see you",
    "continue", "go on", "keep going", "more", "next", "proceed", "go ahead", "please continue",
    "continue please", "and", "so", "?", "test", "testing",
)  # fmt: skip
REFUSAL = (
    r"(?i)^\s*(i'?m sorry|i am sorry|sorry|i apologi[sz]e|unfortunately)?[,.!\s]*(but\s+)?"
    r"(i\s+(can(no|')t|can not|am (not able|unable)|'m (not able|unable)|won'?t be able|must decline)"
    r"|as an ai\b)"
)
_SEP = r"[\s\p{P}\p{S}]"
_WORD = r"[^\s\p{P}\p{S}]"
_PUNCT = f"{_SEP}+"
_PHRASE_WORDS = max(len(phrase.split()) for phrase in TRIVIAL_PHRASES)

FILTERED_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "pattern_id": pl.String,
    "filtered": pl.String,
    "filter_reason": pl.String,
}


@dataclass(frozen=True)
class GateOptions:
    enabled: frozenset[str] = field(default_factory=frozenset)
    min_words: int = 2
    min_chars: int = 6
    refusal_max_chars: int = 400
    min_score: float = 0.0

    def __post_init__(self) -> None:
        unknown = set(self.enabled) - set(GATES)
        if unknown:
            raise ValueError(f"unknown gates {sorted(unknown)}; known: {', '.join(GATES)}")

    @classmethod
    def defaults(cls) -> GateOptions:
        """What the command line and the Dagster settings start from."""
        return cls(enabled=frozenset(("trivial", "non_answer", "min_score")))

    def describe(self) -> dict[str, object]:
        return {
            "enabled": sorted(self.enabled),
            "min_words": self.min_words,
            "min_chars": self.min_chars,
            "refusal_max_chars": self.refusal_max_chars,
            "min_score": self.min_score,
        }


def own_words(task: pl.Expr) -> pl.Expr:
    """The user's own text of a task (after a prepended follow-up context, if any)."""
    return task.str.split(FOLLOW_UP_MARKER).list.last()


def text_gates(texts: pl.LazyFrame | pl.DataFrame, options: GateOptions) -> pl.DataFrame:
    """``pattern_id, filtered, filter_reason`` for ``texts`` (``pattern_id, task, code``), one row per
    pattern id (the first where an id repeats); null where no text gate applies.

    The texts are streamed, never held whole (a scope's answers are ~1 GB at 10M messages), and a
    reason is written only for the patterns a rule caught (a few in a hundred): out of the texts come
    each pattern's rule and the few values its reason is made of."""
    task = own_words(pl.col("task").fill_null(""))
    # A task with more than `enough` words passes every task rule: more words than any phrase, at least
    # min_words, and at least 2 * enough + 1 >= min_chars characters once stripped. Telling that is a
    # search anchored at the task's start that stops at its (enough + 1)-th word; the words and
    # characters are counted, and the task cleaned, only for the few tasks that are not that long
    # (counting the words of every task took half of the gates' time). Null stands for "many".
    enough = max(_PHRASE_WORDS, options.min_words - 1, options.min_chars // 2)
    many = task.str.contains(rf"^{_SEP}*(?:{_WORD}+{_SEP}+){{{enough}}}{_WORD}")
    few = pl.when(~many).then(task)
    # Words: runs of characters other than white space, punctuation and symbols (lowercasing keeps a
    # character in or out of those classes, so these are the words of the cleaned task too).
    words = few.str.count_matches(f"{_WORD}+").cast(pl.Int64)
    short = pl.when(words <= _PHRASE_WORDS).then(few)
    bare = short.str.to_lowercase().str.replace_all(_PUNCT, " ").str.strip_chars()
    chars = few.str.strip_chars().str.len_chars()
    code = pl.col("code").fill_null("")
    # Both answer rules read only the answer's start: "empty after cleanup" is "no character outside
    # white space, punctuation and symbols", which a search stops at the first one of; a refusal counts
    # only in an answer shorter than refusal_max_chars characters, which has fewer than four times as
    # many bytes: the length in bytes (free) rules out most answers before characters are counted.
    substance = code.str.contains(_WORD)
    brief = pl.when(code.str.len_bytes() < 4 * options.refusal_max_chars).then(code)
    head = pl.when(brief.str.len_chars() < options.refusal_max_chars).then(brief)
    # (condition on the texts, gate, reason from the values carried out: _bare, _words, _chars, _head)
    rules: list[tuple[pl.Expr, str, pl.Expr]] = []
    carried: dict[str, pl.Expr] = {}
    if "trivial" in options.enabled:
        carried |= {"_bare": bare, "_words": words, "_chars": chars}
        rules += [
            (
                bare.is_in(list(TRIVIAL_PHRASES)),
                "trivial",
                pl.lit("greeting, thanks or nudge: ") + pl.col("_bare"),
            ),
            (
                words < options.min_words,
                "trivial",
                pl.format("task has {} words (< {})", pl.col("_words"), pl.lit(options.min_words)),
            ),
            (
                chars < options.min_chars,
                "trivial",
                pl.format("task has {} characters (< {})", pl.col("_chars"), pl.lit(options.min_chars)),
            ),
        ]
    if "non_answer" in options.enabled:
        carried |= {"_head": head}
        rules += [
            (~substance, "non_answer", pl.lit("answer empty after cleanup")),
            (
                head.str.contains(REFUSAL),
                "non_answer",
                pl.lit("refusal: ") + pl.col("_head").str.replace_all(r"\s+", " ").str.slice(0, 60),
            ),
        ]
    # Built from the last rule to the first, so the first that applies wins.
    first = pl.lit(None, dtype=pl.Int8)
    for i in reversed(range(len(rules))):
        first = pl.when(rules[i][0]).then(pl.lit(i, dtype=pl.Int8)).otherwise(first)
    caught = first.is_not_null()
    narrow = (
        texts.lazy()
        .select(
            "pattern_id",
            _rule=first,
            **{name: pl.when(caught).then(value) for name, value in carried.items()},
        )
        .collect(engine="streaming")
        .unique("pattern_id", keep="first", maintain_order=True)
    )
    gate = pl.lit(None, dtype=pl.String)
    reason = pl.lit(None, dtype=pl.String)
    for i, (_, name, why) in enumerate(rules):
        gate = pl.when(pl.col("_rule") == i).then(pl.lit(name)).otherwise(gate)
        reason = pl.when(pl.col("_rule") == i).then(why).otherwise(reason)
    return narrow.select("pattern_id", filtered=gate, filter_reason=reason).cast(FILTERED_SCHEMA)  # type: ignore[arg-type]


def score_gate(frame: pl.DataFrame, options: GateOptions) -> pl.DataFrame:
    """``frame`` (with ``eval_score, filtered, filter_reason``) with the min_score gate applied to the
    patterns no text gate caught."""
    if "min_score" not in options.enabled or options.min_score <= 0:
        return frame
    low = pl.col("filtered").is_null() & (pl.col("eval_score") < options.min_score)
    return frame.with_columns(
        filtered=pl.when(low).then(pl.lit("min_score")).otherwise("filtered"),
        filter_reason=pl.when(low)
        .then(
            pl.format("score {} < --min-score {}", pl.col("eval_score").round(2), pl.lit(options.min_score))
        )
        .otherwise("filter_reason"),
    )
