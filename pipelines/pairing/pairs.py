"""Messages -> (user, assistant) patterns, and every message that pairs with nothing, with its reason.

Per thread, messages are ordered by ``(created_at, dump_seq, line_no)``: ``created_at`` has one-second
resolution and ties are common, so the export's own order breaks them.

``merge`` (default): consecutive messages of one role form one turn (texts joined by a blank line),
because one run can write several assistant messages and users send follow-ups before an answer.
``strict``: the guide's rule, only a user message directly followed by an assistant message pairs.
System and tool messages, messages with blank text and messages of an abandoned branch take no part
in turns in either mode.

The pairing is computed on narrow columns first (ids, roles, times); each turn remembers the row
positions of its messages, so the task and code are gathered from the text column by position (no
join on message ids) and only turns of several messages need a string join.

Invariant: every message of the input is in exactly one place, either one pattern (as a user or an
assistant message) or the unpaired rows with its reason: messages = paired messages + unpaired.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

import polars as pl

from pipelines.duck import thread_connection
from pipelines.pairing.context import with_previous_context
from pipelines.tables import PATTERN_COLUMNS, UNPAIRED_SCHEMA

DEFAULT_TASK_MAX_CHARS = 2_000
DEFAULT_CODE_MAX_CHARS = 8_000
TURN_SEPARATOR = "\n\n"


class Pairing(StrEnum):
    MERGE = "merge"
    STRICT = "strict"


@dataclass(frozen=True)
class PairingOptions:
    mode: Pairing = Pairing.MERGE
    task_max_chars: int = DEFAULT_TASK_MAX_CHARS
    code_max_chars: int = DEFAULT_CODE_MAX_CHARS
    # "previous": follow-up tasks carry the exchange before them (pipelines.pairing.context).
    task_context: str = "none"

    def describe(self) -> str:
        described = f"mode={self.mode.value} task_max={self.task_max_chars} code_max={self.code_max_chars}"
        # Only named when on, so folders paired before the option existed still match.
        return described + (f" context={self.task_context}" if self.task_context != "none" else "")


REASON_SYSTEM = "system message"
# A tool's output answers a call of the assistant, not the user: it takes no part in a pattern.
REASON_TOOL = "tool message: not part of a (user, assistant) exchange"
# An edited question or a regenerated answer the conversation moved away from (ChatGPT exports).
REASON_ABANDONED = "abandoned branch"
REASON_EMPTY = "empty text"
REASON_UNANSWERED = "unanswered last turn"
REASON_NO_QUESTION = "answer with no question"
REASON_USER_FOLLOWED_BY_USER = "unanswered: followed by another user message (strict pairing)"
REASON_ANSWER_AFTER_ANSWER = "answer follows another answer (strict pairing)"

# Ingest gives records of a newest-first source a negative ``line_no`` (their order key): among such rows
# the later dump holds the older messages, so their dump order is reversed too.
_ORDER = [
    pl.col("thread_id"),
    pl.col("created_at"),
    pl.when(pl.col("line_no") < 0).then(-pl.col("dump_seq")).otherwise(pl.col("dump_seq")),
    pl.col("line_no"),
]
# Up to this many pattern ids are hashed in Python, more in one DuckDB query (same sha256, lowercase hex).
_HASH_IN_PYTHON = 2_000
_NARROW = [
    "thread_id",
    "assistant_id",
    "message_id",
    "role",
    "created_at",
    "dump_seq",
    "line_no",
    "is_blank",
    "branch",
]
# Every message column the pairing reads.
PAIRING_COLUMNS = [*_NARROW, "text"]


def _turns(conv: pl.DataFrame, mode: Pairing) -> pl.DataFrame:
    if mode is Pairing.MERGE:
        boundary = (pl.col("role") != pl.col("role").shift(1)) | (
            pl.col("thread_id") != pl.col("thread_id").shift(1)
        )
        conv = conv.with_columns(turn=boundary.fill_null(True).cum_sum())
    else:
        conv = conv.with_row_index("turn")
    return (
        conv.group_by("turn", maintain_order=True)
        .agg(
            pl.col("thread_id").first(),
            pl.col("assistant_id").first(),
            pl.col("role").first(),
            pl.col("message_id").alias("message_ids"),
            pl.col("rid").alias("rids"),
            pl.col("created_at").first(),
            pl.col("created_at").last().alias("last_created_at"),
        )
        .with_columns(
            same_next=pl.col("thread_id") == pl.col("thread_id").shift(-1),
            same_prev=pl.col("thread_id") == pl.col("thread_id").shift(1),
            next_role=pl.col("role").shift(-1),
            prev_role=pl.col("role").shift(1),
        )
        .with_columns(pl.col("same_next", "same_prev").fill_null(False))
    )


def pattern_ids(user_ids: pl.Series, assistant_ids: pl.Series) -> pl.Series:
    """``oai_`` + 24 hex of sha256 over the source message ids: the same messages always give the same
    id (so re-runs store nothing twice), and a turn that grows gives a new one. Each id is prefixed with
    its length, so no choice of message ids can make two different sources hash the same text."""

    def encode(ids: pl.Series) -> pl.Series:
        return ids.list.eval(pl.element().str.len_bytes().cast(pl.String) + ":" + pl.element()).list.join("")

    frame = pl.DataFrame({"u": encode(user_ids), "a": encode(assistant_ids)})
    if frame.height <= _HASH_IN_PYTHON:
        # A handful of ids (an incremental run): hashlib beats a DuckDB query's fixed cost.
        digests = [
            "oai_" + hashlib.sha256(f"{u}>{a}".encode()).hexdigest()[:24] for u, a in frame.iter_rows()
        ]
        return pl.Series("pattern_id", digests, dtype=pl.String)
    con = thread_connection()
    con.register("id_parts", frame)
    try:
        ids = con.sql("SELECT 'oai_' || left(sha256(u || '>' || a), 24) AS id FROM id_parts").pl()["id"]
    finally:
        con.unregister("id_parts")
    return ids.alias("pattern_id")


def _pair_rows(narrow: pl.DataFrame, mode: Pairing) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Pairs (with the row positions ``user_rids`` / ``assistant_rids`` of their messages) and unpaired
    messages with reasons, from narrow rows that carry their position ``rid``."""
    narrow = narrow.sort(_ORDER)
    left_out = (
        pl.col("role").is_in(["system", "tool"]) | pl.col("is_blank") | (pl.col("branch") == "abandoned")
    )
    excluded = narrow.filter(left_out).select(
        "message_id",
        "thread_id",
        "role",
        "created_at",
        reason=pl.when(pl.col("branch") == "abandoned")
        .then(pl.lit(REASON_ABANDONED))
        .when(pl.col("role") == "system")
        .then(pl.lit(REASON_SYSTEM))
        .when(pl.col("role") == "tool")
        .then(pl.lit(REASON_TOOL))
        .otherwise(pl.lit(REASON_EMPTY)),
    )
    conv = narrow.filter(~left_out)
    turns = _turns(conv, mode)
    is_pair_user = (pl.col("role") == "user") & pl.col("same_next") & (pl.col("next_role") == "assistant")
    is_pair_answer = (pl.col("role") == "assistant") & pl.col("same_prev") & (pl.col("prev_role") == "user")
    users = turns.filter(is_pair_user)
    answers = turns.filter(is_pair_answer).select(
        turn=pl.col("turn") - 1,
        assistant_message_ids=pl.col("message_ids"),
        assistant_rids=pl.col("rids"),
        answered_at=pl.col("last_created_at"),
    )
    pairs = users.select(
        "turn",
        "thread_id",
        "assistant_id",
        user_message_ids=pl.col("message_ids"),
        user_rids=pl.col("rids"),
        created_at=pl.col("created_at"),
    ).join(answers, on="turn", how="inner", maintain_order="left")
    pairs = pairs.with_columns(pattern_ids(pairs["user_message_ids"], pairs["assistant_message_ids"])).drop(
        "turn"
    )

    reason = (
        pl.when(pl.col("role") == "user")
        .then(
            pl.when(pl.col("same_next"))
            .then(pl.lit(REASON_USER_FOLLOWED_BY_USER))
            .otherwise(pl.lit(REASON_UNANSWERED))
        )
        .otherwise(
            pl.when(pl.col("same_prev") & (pl.col("prev_role") == "assistant"))
            .then(pl.lit(REASON_ANSWER_AFTER_ANSWER))
            .otherwise(pl.lit(REASON_NO_QUESTION))
        )
    )
    lonely = (
        turns.filter(~is_pair_user & ~is_pair_answer)
        .select("thread_id", "role", "message_ids", reason=reason)
        .explode("message_ids")
        .rename({"message_ids": "message_id"})
        .join(narrow.select("message_id", "created_at"), on="message_id", how="left", maintain_order="left")
    )
    unpaired = pl.concat([excluded, lonely.select(excluded.columns)]).cast(UNPAIRED_SCHEMA)
    return pairs, unpaired


def with_branch[F: (pl.DataFrame, pl.LazyFrame)](messages: F) -> F:
    """Messages made without a ``branch`` (by hand, or by a caller that has only one) are all current."""
    names = messages.collect_schema().names()
    return messages if "branch" in names else messages.with_columns(branch=pl.lit("current"))


def pair_narrow(messages: pl.LazyFrame, mode: Pairing) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Pairs as message-id lists, and unpaired messages with reasons, from ids, roles and times only."""
    narrow = with_branch(messages).select(_NARROW).collect().with_row_index("rid")
    pairs, unpaired = _pair_rows(narrow, mode)
    return pairs.drop("user_rids", "assistant_rids"), unpaired


def _join_turn_texts(rids: pl.Series, text: pl.Series) -> pl.Series:
    """The text of each turn: its messages' texts, in turn order, joined by a blank line."""
    out = text.gather(rids.list.first())
    several = (rids.list.len() > 1).arg_true()
    if several.len():
        parts = pl.DataFrame({"rid": rids.gather(several)}).with_row_index("turn").explode("rid")
        joined = (
            parts.with_columns(text=text.gather(parts["rid"]))
            .group_by("turn", maintain_order=True)
            .agg(pl.col("text").str.join(TURN_SEPARATOR))
        )
        out = out.scatter(several, joined["text"])
    return out


def _assemble(pairs: pl.DataFrame, text: pl.Series, options: PairingOptions) -> pl.DataFrame:
    full_task = _join_turn_texts(pairs["user_rids"], text)
    full_code = _join_turn_texts(pairs["assistant_rids"], text)
    return (
        pairs.drop("user_rids", "assistant_rids")
        .with_columns(full_task=full_task, full_code=full_code)
        .pipe(with_previous_context, options.task_max_chars, options.task_context)
        .with_columns(
            task_chars=pl.col("full_task").str.len_chars(),
            code_chars=pl.col("full_code").str.len_chars(),
        )
        .with_columns(
            task=pl.col("full_task").str.slice(0, options.task_max_chars),
            code=pl.col("full_code").str.slice(0, options.code_max_chars),
            task_truncated=pl.col("task_chars") > options.task_max_chars,
            code_truncated=pl.col("code_chars") > options.code_max_chars,
        )
        .select(PATTERN_COLUMNS)
    )


def pair_frame(
    messages: pl.DataFrame, options: PairingOptions = PairingOptions()
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Patterns (with text) and unpaired messages for whole threads held in one DataFrame."""
    narrow = with_branch(messages).select(_NARROW).with_row_index("rid")
    pairs, unpaired = _pair_rows(narrow, options.mode)
    return _assemble(pairs, messages["text"], options), unpaired


def pair_messages(
    messages: pl.LazyFrame, options: PairingOptions = PairingOptions()
) -> tuple[pl.LazyFrame, pl.DataFrame]:
    """Patterns (lazy, with text) and unpaired messages for a set of whole threads."""
    # One collect for ids and text together: the rows' positions then mean the same in both.
    frame = with_branch(messages).select(PAIRING_COLUMNS).collect()
    patterns, unpaired = pair_frame(frame, options)
    return patterns.lazy(), unpaired
