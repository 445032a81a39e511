"""Checks that every line and every message is accounted for. The per-scope ones are blocking: a scope
that does not reconcile is not loaded."""

from __future__ import annotations

import dagster as dg
import polars as pl

from pipelines.quality.reconcile import MessageCounts, PairingCounts, dump_line_counts
from pipelines.tables import DataLayout

DUMP_LINES_RECONCILE = dg.AssetCheckSpec(
    "dump_lines_reconcile",
    asset="raw_thread_exports",
    description="Per dump: lines = staged rows + quarantined rows.",
)
LINES_RECONCILE = dg.AssetCheckSpec(
    "lines_reconcile",
    asset="messages",
    blocking=True,
    description="Per scope: lines in = messages + quarantined + exact repeats.",
)
MESSAGES_ACCOUNTED = dg.AssetCheckSpec(
    "messages_accounted",
    asset="paired_patterns",
    blocking=True,
    description="Per scope: messages = messages in patterns + unpaired messages, and no message in both.",
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
        },
    )
