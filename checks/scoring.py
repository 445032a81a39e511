"""Checks on near-duplicate removal: every dropped pattern names a kept one, and a warning when a scope
loses an unusual share of its patterns to it."""

from __future__ import annotations

import dagster as dg
import polars as pl

DUPLICATE_WARN_SHARE = 0.5

DUPLICATES_ACCOUNTED = dg.AssetCheckSpec(
    "duplicates_accounted",
    asset="scored_patterns",
    blocking=True,
    description="Every dropped near-duplicate names a kept pattern; kept + dropped = patterns.",
)
DUPLICATE_SHARE = dg.AssetCheckSpec(
    "duplicate_share",
    asset="scored_patterns",
    description=f"Warns when more than {DUPLICATE_WARN_SHARE:.0%} of a scope's patterns were "
    "near-duplicates.",
)


def duplicates_accounted(scored: pl.DataFrame | None) -> dg.AssetCheckResult:
    """``scored``: the scored table's ``pattern_id, kept, duplicate_of`` (None when there is none)."""
    if scored is None:
        return dg.AssetCheckResult(
            check_name=DUPLICATES_ACCOUNTED.name, passed=True, metadata={"patterns": 0}
        )
    kept_ids = scored.filter(pl.col("kept")).select("pattern_id")
    dropped = scored.filter(~pl.col("kept"))
    orphans = dropped.join(kept_ids, left_on="duplicate_of", right_on="pattern_id", how="anti")
    return dg.AssetCheckResult(
        check_name=DUPLICATES_ACCOUNTED.name,
        passed=orphans.is_empty() and scored["pattern_id"].n_unique() == scored.height,
        metadata={
            "patterns": scored.height,
            "kept": kept_ids.height,
            "dropped": dropped.height,
            "dropped_without_kept_winner": orphans.height,
        },
    )


def duplicate_share(scored: pl.DataFrame | None) -> dg.AssetCheckResult:
    total = 0 if scored is None else scored.height
    dropped = 0 if scored is None else int((~scored["kept"]).sum())
    share = dropped / total if total else 0.0
    return dg.AssetCheckResult(
        check_name=DUPLICATE_SHARE.name,
        passed=share <= DUPLICATE_WARN_SHARE,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"patterns": total, "duplicates": dropped, "duplicate_share": round(share, 4)},
    )
