"""The scoring options of ``run`` and ``plan``: the LLM judge, implicit signals, curation gates and
follow-up context. Defined once here; ``run`` turns them into :class:`BackfillSettings` fields and the
option check reads them before any work (one line per problem, naming the option)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from pipelines.objectstore.location import absolute
from pipelines.pairing.context import CONTEXT_MODES
from pipelines.scoring.judge.options import DEFAULT_KEY_ENV, OPENAI_BASE_URL, JudgeConfigError, JudgeOptions
from pipelines.scoring.signals import SignalRules, SignalRulesError

DEFAULT_MIN_SCORE = 3.0


def add_scoring_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scoring: LLM judge, implicit signals, curation gates")
    g.add_argument(
        "--llm-judge", metavar="MODEL", help="score patterns with this model as judge (off by default)"
    )
    g.add_argument(
        "--llm-base-url", metavar="URL", default=OPENAI_BASE_URL, help="OpenAI-compatible endpoint"
    )
    g.add_argument(
        "--llm-api-key-env",
        metavar="NAME",
        default=DEFAULT_KEY_ENV,
        help="environment variable holding the key",
    )
    g.add_argument("--llm-concurrency", type=int, default=8, help="judge requests in flight")
    g.add_argument("--llm-max-patterns", type=int, help="judge at most this many patterns in a run")
    g.add_argument("--llm-max-cost", type=float, metavar="USD", help="stop judging before this cost")
    g.add_argument("--llm-price-per-mtok-in", type=float, default=0.0, help="USD per million prompt tokens")
    g.add_argument("--llm-price-per-mtok-out", type=float, default=0.0, help="USD per million answer tokens")
    g.add_argument(
        "--llm-batch", action="store_true", help="judge through the OpenAI Batch API (bulk, cheaper)"
    )
    g.add_argument("--signals", action="store_true", help="implicit signals from the next user turn")
    g.add_argument("--signal-rules", type=Path, help="your own YAML of implicit-signal rules")
    g.add_argument(
        "--no-gate-trivial", action="store_true", help="keep greetings, thanks, nudges, tiny tasks"
    )
    g.add_argument("--no-gate-non-answer", action="store_true", help="keep refusals and empty answers")
    g.add_argument(
        "--min-score",
        type=float,
        default=DEFAULT_MIN_SCORE,
        help="filter patterns scored below this (0 = off)",
    )
    g.add_argument("--min-task-words", type=int, default=2, help="trivial gate: tasks with fewer words")
    g.add_argument("--min-task-chars", type=int, default=6, help="trivial gate: tasks with fewer characters")
    g.add_argument(
        "--task-context",
        choices=CONTEXT_MODES,
        default="none",
        help="previous: prefix follow-up tasks with the exchange before them (within the task budget)",
    )


def scoring_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`BackfillSettings` fields of these options."""
    return {
        "task_context": args.task_context,
        "llm_judge": args.llm_judge,
        "llm_base_url": args.llm_base_url,
        "llm_api_key_env": args.llm_api_key_env,
        "llm_concurrency": args.llm_concurrency,
        "llm_max_patterns": args.llm_max_patterns,
        "llm_max_cost": args.llm_max_cost,
        "llm_price_per_mtok_in": args.llm_price_per_mtok_in,
        "llm_price_per_mtok_out": args.llm_price_per_mtok_out,
        "llm_batch": args.llm_batch,
        "signals": args.signals,
        "signal_rules": absolute(args.signal_rules) if args.signal_rules else None,
        "gate_trivial": not args.no_gate_trivial,
        "gate_non_answer": not args.no_gate_non_answer,
        "min_score": args.min_score,
        "min_task_words": args.min_task_words,
        "min_task_chars": args.min_task_chars,
    }


def judge_from_args(args: argparse.Namespace) -> JudgeOptions | None:
    if not getattr(args, "llm_judge", None):
        return None
    return JudgeOptions(
        model=args.llm_judge,
        base_url=args.llm_base_url,
        api_key_env=args.llm_api_key_env,
        concurrency=args.llm_concurrency,
        max_patterns=args.llm_max_patterns,
        max_cost=args.llm_max_cost,
        price_in=args.llm_price_per_mtok_in,
        price_out=args.llm_price_per_mtok_out,
        batch=args.llm_batch,
    )


def scoring_problems(args: argparse.Namespace) -> list[str]:
    """One line per problem with the scoring options; nothing is read but the rules file."""
    problems = []
    if not 0 <= args.min_score <= 10:
        problems.append(f"--min-score {args.min_score}: give a score from 0 to 10 (0 switches the gate off)")
    for option, value in (
        ("--min-task-words", args.min_task_words),
        ("--min-task-chars", args.min_task_chars),
    ):
        if value < 0:
            problems.append(f"{option} {value}: must be 0 or more")
    if args.signal_rules is not None:
        try:
            SignalRules.load(args.signal_rules)
        except SignalRulesError as exc:
            problems.append(str(exc))
    if args.llm_judge is None:
        return problems
    try:
        judge_from_args(args)
    except JudgeConfigError as exc:
        problems += exc.problems
    if not args.llm_base_url.startswith(("http://", "https://")):
        problems.append(f"--llm-base-url {args.llm_base_url}: give an http(s) URL")
    if not os.environ.get(args.llm_api_key_env):
        problems.append(
            f"--llm-api-key-env {args.llm_api_key_env}: the environment variable is not set; export the "
            "judge's key there (it is never taken from the command line)"
        )
    return problems


def judge_plan_lines(scopes: list[Any]) -> list[str]:
    """The plan's lines on the judge: per scope (``ScopePlan.judge``) and in total."""
    lines = []
    judged = [(s.scope, s.judge) for s in scopes if s.judge]
    for scope, j in judged:
        mark = "~" if j["estimated"] else ""
        over = f"; {j['over_limit']:,} over the limits (they fall back)" if j["over_limit"] else ""
        lines.append(
            f"  {scope}: judge {j['model']} ({j['prompt_version']}): {mark}{j['to_ask']:,} patterns to ask, "
            f"{j['cached']:,} cached, {mark}{j['tokens_in']:,} tokens in, {mark}{j['tokens_out']:,} out, "
            f"{mark}${j['cost_usd']:,.4f}{over}"
        )
    if judged:
        cost = sum(float(j["cost_usd"]) for _, j in judged)
        tokens = sum(int(j["tokens_in"]) + int(j["tokens_out"]) for _, j in judged)
        lines.append(
            f"judge total: ~{tokens:,} tokens, ~${cost:,.4f} (at most: feedback and gates ask fewer)"
        )
    return lines
