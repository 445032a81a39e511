"""Checks that every line and every message is accounted for. The per-scope ones are blocking: a scope
that does not reconcile is not loaded. The per-dump one is not, so that scopes of sound dumps still
load; a scope's own line check includes the dumps that fed it, which blocks its load."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

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


# Metadata keys that name a count differently from its field (the UI's names are kept).
_KEYS = {"unaccounted_ids": "unaccounted_message_ids", "in_both_ids": "in_both_message_ids"}


def _metadata(counts: MessageCounts | PairingCounts) -> dict[str, Any]:
    """The counts as a check's metadata, one entry per field: :func:`counts_of` reads them back."""
    return {
        _KEYS.get(f.name, f.name): dg.MetadataValue.json(v)
        if isinstance(v := getattr(counts, f.name), list)
        else v
        for f in fields(counts)
        if f.name != "scope"
    }


def _from_metadata[T: (MessageCounts, PairingCounts)](
    kind: type[T], metadata: dict[str, Any], scope: str
) -> T:
    values = {f.name: metadata[_KEYS.get(f.name, f.name)].value for f in fields(kind) if f.name != "scope"}
    return kind(scope=scope, **values)


def lines_reconcile(counts: MessageCounts) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=LINES_RECONCILE.name, passed=counts.lines_reconcile, metadata=_metadata(counts)
    )


def messages_accounted(counts: PairingCounts) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=MESSAGES_ACCOUNTED.name, passed=counts.messages_reconcile, metadata=_metadata(counts)
    )


def counts_of(evaluations: list[dg.AssetCheckEvaluation], scope: str) -> ScopeCounts | None:
    """A scope's counts as its run's own :data:`LINES_RECONCILE` and :data:`MESSAGES_ACCOUNTED` checks
    found them (None unless the run evaluated both): a run's summary need not count the files again."""
    found = {e.check_name: e.metadata for e in evaluations}
    lines, pairing = found.get(LINES_RECONCILE.name), found.get(MESSAGES_ACCOUNTED.name)
    if lines is None or pairing is None:
        return None
    return ScopeCounts(
        _from_metadata(MessageCounts, lines, scope), _from_metadata(PairingCounts, pairing, scope)
    )
