"""Context for follow-ups (``--task-context previous``): a task that only makes sense after the exchange
before it ("And only for the last 7 days?") is prefixed with that exchange, so recall can match it.

A task is a follow-up when it is not its thread's first pattern, its own text has at most
:data:`FOLLOW_UP_MAX_WORDS` words, and it either opens like a continuation (:data:`OPENERS`: "and",
"or", "but", "also", "then", "instead", "only", "same", "what about", "how about", "what if", ...) or
leans on a pronoun with no antecedent in it ("it", "that", "this", "those", "these", "them", "they").

Invariants: the task becomes ``Earlier: <previous task>\\nAnswer: <previous answer>`` +
:data:`FOLLOW_UP_MARKER` + the follow-up's own text, and the whole stays within the task budget
(``task_max_chars``): the follow-up's own words are never cut for context (when they leave too little
room, no context is added), and the earlier task and answer share what remains. Everything after the
last marker is the user's own text (the curation gates read only that).
"""

from __future__ import annotations

import polars as pl

FOLLOW_UP_MARKER = "\n\nFollow-up: "
FOLLOW_UP_MAX_WORDS = 12
CONTEXT_MODES = ("none", "previous")
OPENERS = (
    r"and", r"or", r"but", r"also", r"plus", r"then", r"instead", r"only",
    r"same", r"what about", r"how about", r"what if", r"why not", r"ok(ay)?,? (and|so|now|but)",
)  # fmt: skip
PRONOUNS = r"it|that|this|those|these|them|they|its|there"
_EARLIER, _ANSWER = "Earlier: ", "\nAnswer: "
# Less room than this for the earlier exchange is not worth adding.
_MIN_CONTEXT = 40


def is_follow_up(task: pl.Expr) -> pl.Expr:
    words = (
        task.str.strip_chars().str.split(" ").list.eval(pl.element().filter(pl.element() != "")).list.len()
    )
    opener = task.str.contains(r"(?i)^\s*(" + "|".join(OPENERS) + r")\b")
    pronoun = task.str.contains(r"(?i)\b(" + PRONOUNS + r")\b")
    return (words <= FOLLOW_UP_MAX_WORDS) & (opener | pronoun)


def with_previous_context(frame: pl.DataFrame, task_max_chars: int, mode: str = "previous") -> pl.DataFrame:
    """``frame`` (pairs in thread order with ``thread_id, full_task, full_code``) with each follow-up's
    ``full_task`` prefixed by the exchange before it (``mode`` "previous"; "none" changes nothing)."""
    if mode == "none":
        return frame
    own = pl.col("full_task")
    room = pl.lit(task_max_chars) - own.str.len_chars() - len(FOLLOW_UP_MARKER) - len(_EARLIER) - len(_ANSWER)
    prev_task, prev_code = own.shift(1), pl.col("full_code").shift(1)
    # The earlier task first (it names what the follow-up is about), the answer gets the rest.
    task_room = pl.min_horizontal(
        prev_task.str.len_chars(), pl.max_horizontal(room // 2, room - prev_code.str.len_chars())
    )
    code_room = room - task_room
    follow = (
        (pl.col("thread_id") == pl.col("thread_id").shift(1)).fill_null(False)
        & is_follow_up(own)
        & (room >= _MIN_CONTEXT)
    )
    context = (
        pl.lit(_EARLIER)
        + prev_task.str.slice(0, task_room)
        + pl.lit(_ANSWER)
        + prev_code.str.slice(0, pl.max_horizontal(code_room, pl.lit(0)))
        + pl.lit(FOLLOW_UP_MARKER)
    )
    return frame.with_columns(full_task=pl.when(follow).then(context + own).otherwise(own))
