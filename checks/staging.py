"""Checks that every line and every message is accounted for. The per-scope ones are blocking: a scope
that does not reconcile is not loaded. The per-dump one is not, so that scopes of sound dumps still
load; a scope's own line check includes the dumps that fed it, which blocks its load."""

from __future__ import annotations

import dagster as dg
import polars as pl

from pipelines.quality.reconcile import MessageCounts, PairingCounts, ScopeCounts, dump_line_counts
from pipelines.tables import DataLayout

DUMP_LINES_RECONCILE = dg.AssetCheckSpec(
    "dump_lines_reconcile",
    asset="raw_thread_exports",
    description="Per dump: lines = staged rows + quarantined rows (not blocking here, so scopes of other "
    "dumps still load: each scope's lines_reconcile includes its dumps and blocks its load).",
)
LINES_RECONCILE = dg.AssetCheckSpec(
    "lines_reconcile",
    asset="messages",
    blocking=True,
    description="Per scope: lines in = messages + quarantined + exact repeats, and every dump that staged "
    "rows into the scope has lines = staged + quarantined.",
)
MESSAGES_ACCOUNTED = dg.AssetCheckSpec(
    "messages_accounted",
    asset="paired_patterns",
    blocking=True,
    description="Per scope: messages = messages in patterns + unpaired messages, every message id in one "
    "of them, and no message in both.",
)


def dump_lines_reconcile(layout: DataLayout) -> dg.AssetCheckResult:
    counts = dump_line_counts(layout)
    bad = counts.filter(~pl.col("ok"))
    return dg.AssetCheckResult(
        check_name=DUMP_LINES_RECONCILE.name,
        passed=bad.is_empty(),
        metadata={
            "dumps": counts.height,
            "lines": int(counts["lines"].sum() or 0),
            "staged": int(counts["staged"].sum() or 0),
            "quarantined": int(counts["quarantined"].sum() or 0),
            "mismatched_dumps": dg.MetadataValue.json(
                bad.select("file", "lines", "staged", "quarantined").to_dicts()
            ),
        },
    )


def lines_reconcile(counts: MessageCounts) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=LINES_RECONCILE.name,
        passed=counts.lines_reconcile,
        metadata={
            "lines_in": counts.lines_in,
            "messages": counts.messages,
            "quarantined": counts.quarantined,
            "repeats": counts.repeats,
            "dumps_mismatched": dg.MetadataValue.json(counts.dumps_mismatched),
        },
    )


def messages_accounted(counts: PairingCounts) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=MESSAGES_ACCOUNTED.name,
        passed=counts.messages_reconcile,
        metadata={
            "messages": counts.messages,
            "in_patterns": counts.in_patterns,
            "unpaired": counts.unpaired,
            "in_both": counts.in_both,
            "unaccounted_message_ids": dg.MetadataValue.json(counts.unaccounted_ids),
            "in_both_message_ids": dg.MetadataValue.json(counts.in_both_ids),
        },
    )


def counts_of(evaluations: list[dg.AssetCheckEvaluation], scope: str) -> ScopeCounts | None:
    """A scope's counts as its run's own :data:`LINES_RECONCILE` and :data:`MESSAGES_ACCOUNTED` checks
    found them (None unless the run evaluated both): a run's summary need not count the files again."""
    found = {e.check_name: {k: v.value for k, v in e.metadata.items()} for e in evaluations}
    lines, pairing = found.get(LINES_RECONCILE.name), found.get(MESSAGES_ACCOUNTED.name)
    if lines is None or pairing is None:
        return None
    return ScopeCounts(
        MessageCounts(
            scope=scope,
            lines_in=int(lines["lines_in"]),
            messages=int(lines["messages"]),
            quarantined=int(lines["quarantined"]),
            repeats=int(lines["repeats"]),
            dumps_mismatched=list(lines["dumps_mismatched"]),
        ),
        PairingCounts(
            scope=scope,
            messages=int(pairing["messages"]),
            in_patterns=int(pairing["in_patterns"]),
            unpaired=int(pairing["unpaired"]),
            in_both=int(pairing["in_both"]),
            unaccounted_ids=list(pairing["unaccounted_message_ids"]),
            in_both_ids=list(pairing["in_both_message_ids"]),
        ),
    )
