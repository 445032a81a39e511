"""Implicit signals: the user's next turn in the thread says how an answer landed.

Thanks and confirmation raise the score, complaints, errors and retries lower it. The rules are data
(``signals.yaml`` beside this module, or a file of the same shape given with ``--signal-rules``): named
rules, each a weight and case-insensitive regular expressions. Every rule that matches the next turn
adds its weight once to the neutral 5.0, clipped to 0..10.

Invariants: deterministic (the same next turn always gives the same score and reason); the next turn
of a pattern is the first non-blank user message after its last answer message in the thread's order
``(created_at, dump_seq, line_no)``, paired or not (a closing "thanks!" usually has no answer); a
pattern with no next turn, or whose next turn matches nothing, gets no implicit score.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import yaml

from pipelines.pairing.pairs import with_branch
from pipelines.scoring.feedback import NEUTRAL_SCORE
from pipelines.tables import parquet_files

DEFAULT_RULES = Path(__file__).with_name("signals.yaml")
_ORDER = ["created_at", "dump_seq", "line_no"]


class SignalRulesError(ValueError):
    """The rules file cannot be used; the message names the file and what to fix."""


@dataclass(frozen=True)
class Rule:
    name: str
    weight: float
    patterns: tuple[str, ...]

    @property
    def regex(self) -> str:
        return "(?i)" + "|".join(f"(?:{p})" for p in self.patterns)


@dataclass(frozen=True)
class SignalRules:
    rules: tuple[Rule, ...]
    source: str
    fingerprint: str

    @classmethod
    def load(cls, path: Path | None = None) -> SignalRules:
        path = Path(path) if path is not None else DEFAULT_RULES
        try:
            text = path.read_text(encoding="utf-8")
            data = yaml.safe_load(text)
        except (OSError, yaml.YAMLError) as exc:
            raise SignalRulesError(f"--signal-rules {path}: not a readable YAML file ({exc})") from None
        items = data.get("rules") if isinstance(data, dict) else None
        if not isinstance(items, list) or not items:
            raise SignalRulesError(f"--signal-rules {path}: needs a non-empty 'rules' list")
        rules = []
        for i, item in enumerate(items, start=1):
            try:
                rule = Rule(str(item["name"]), float(item["weight"]), tuple(str(p) for p in item["patterns"]))
                re.compile(rule.regex)
            except (KeyError, TypeError, ValueError, re.error) as exc:
                raise SignalRulesError(
                    f"--signal-rules {path}: rule {i} needs name, weight (number) and patterns (regular "
                    f"expressions): {exc}"
                ) from None
            rules.append(rule)
        return cls(tuple(rules), str(path), hashlib.sha256(text.encode()).hexdigest()[:16])


IMPLICIT_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "pattern_id": pl.String,
    "implicit_score": pl.Float64,
    "implicit_reason": pl.String,
    "signals": pl.List(pl.String),
}


def next_turns(messages: pl.LazyFrame, patterns: pl.DataFrame) -> pl.DataFrame:
    """``pattern_id, next_text`` for ``patterns`` (``pattern_id, thread_id, assistant_message_ids``)."""
    threads = patterns.select("thread_id").unique()
    ordered = (
        with_branch(messages)
        .select("thread_id", "message_id", "role", "is_blank", "branch", "text", *_ORDER)
        .join(threads.lazy(), on="thread_id", how="semi")
        .sort(["thread_id", *_ORDER])
        .with_columns(pos=pl.int_range(pl.len()).over("thread_id"))
        .collect()
    )
    ends = (
        patterns.select("pattern_id", "thread_id", message_id=pl.col("assistant_message_ids"))
        .explode("message_id")
        .join(ordered.select("message_id", "thread_id", "pos"), on=["thread_id", "message_id"])
        .group_by("pattern_id", "thread_id")
        .agg(pl.col("pos").max() + 1)
        .sort("pos")
    )
    users = (
        # An edit the user moved away from is not what they said next.
        ordered.filter((pl.col("role") == "user") & ~pl.col("is_blank") & (pl.col("branch") != "abandoned"))
        .select("thread_id", "pos", next_text="text")
        .sort("pos")
    )
    return ends.join_asof(users, on="pos", by="thread_id", strategy="forward", check_sortedness=False).select(
        "pattern_id", "next_text"
    )


def implicit_scores(turns: pl.DataFrame, rules: SignalRules) -> pl.DataFrame:
    """``pattern_id, implicit_score, implicit_reason, signals`` for the patterns whose next turn matches
    at least one rule."""
    text = pl.col("next_text").fill_null("")
    hits = [pl.when(text.str.contains(r.regex)).then(pl.lit(r.name)) for r in rules.rules]
    weights = {r.name: r.weight for r in rules.rules}
    frame = turns.with_columns(signals=pl.concat_list(hits).list.drop_nulls()).filter(
        pl.col("signals").list.len() > 0
    )
    if frame.is_empty():
        return pl.DataFrame(schema=IMPLICIT_SCHEMA)
    delta = (
        pl.col("signals").list.eval(pl.element().replace_strict(weights, return_dtype=pl.Float64)).list.sum()
    )
    named = pl.col("signals").list.eval(
        pl.element()
        + pl.lit(" (")
        + pl.element().replace_strict(_signed(weights), return_dtype=pl.String)
        + ")"
    )
    quoted = pl.col("next_text").str.replace_all(r"\s+", " ").str.slice(0, 60)
    return frame.select(
        "pattern_id",
        implicit_score=(pl.lit(NEUTRAL_SCORE) + delta).clip(0.0, 10.0),
        implicit_reason=pl.lit("next user turn ")
        + pl.lit('"')
        + quoted
        + pl.lit('": ')
        + named.list.join(", "),
        signals="signals",
    ).cast(IMPLICIT_SCHEMA)  # type: ignore[arg-type]


def _signed(weights: dict[str, float]) -> dict[str, str]:
    return {name: f"{w:+g}" for name, w in weights.items()}


def scope_messages(messages_folder: Path) -> pl.LazyFrame | None:
    files = parquet_files(messages_folder)
    return pl.scan_parquet(files) if files else None


def signal_counts(implicit: pl.DataFrame) -> dict[str, int]:
    """How many patterns each rule touched."""
    if implicit.is_empty():
        return {}
    counts = implicit.select(pl.col("signals").explode()).group_by("signals").len().sort("signals")
    return {str(k): int(v) for k, v in counts.iter_rows()}
