"""Checks on curation and near-duplicate removal: every pattern is kept, a near-duplicate naming a kept
one, or filtered by a gate with its reason (patterns = kept + duplicates + filtered), and a warning when
a scope loses an unusual share of its patterns to near-duplicates."""

from __future__ import annotations

import dagster as dg
import polars as pl

DUPLICATE_WARN_SHARE = 0.5

DUPLICATES_ACCOUNTED = dg.AssetCheckSpec(
    "duplicates_accounted",
    asset="scored_patterns",
    blocking=True,
    description="Every dropped near-duplicate names a kept pattern, every filtered pattern has its gate and "
    "reason (and is in the filtered table), and per scope patterns = kept + duplicates + filtered.",
)
DUPLICATE_SHARE = dg.AssetCheckSpec(
    "duplicate_share",
    asset="scored_patterns",
    description=f"Warns when more than {DUPLICATE_WARN_SHARE:.0%} of a scope's patterns were "
    "near-duplicates.",
)


def _filtered(scored: pl.DataFrame) -> pl.Expr:
    return pl.col("filtered").is_not_null() if "filtered" in scored.columns else pl.lit(False)


def duplicates_accounted(
    scored: pl.DataFrame | None, patterns: int | None = None, filtered_table: pl.DataFrame | None = None
) -> dg.AssetCheckResult:
    """``scored``: the scored table's ``pattern_id, kept, duplicate_of`` and, with gates, ``filtered,
    filter_reason`` (None when there is no table); ``patterns``: the scope's current patterns (None:
    the scored table's rows); ``filtered_table``: the ids of the filtered table."""
    if scored is None:
        return dg.AssetCheckResult(
            check_name=DUPLICATES_ACCOUNTED.name, passed=not patterns, metadata={"patterns": patterns or 0}
        )
    patterns = scored.height if patterns is None else patterns
    if "filtered" not in scored.columns:
        scored = scored.with_columns(
            filtered=pl.lit(None, dtype=pl.String), filter_reason=pl.lit(None, dtype=pl.String)
        )
    is_filtered = pl.col("filtered").is_not_null()
    kept_ids = scored.filter(pl.col("kept")).select("pattern_id")
    dropped = scored.filter(~pl.col("kept") & ~is_filtered)
    orphans = dropped.join(kept_ids, left_on="duplicate_of", right_on="pattern_id", how="anti")
    is_duplicate = ~pl.col("kept") & pl.col("duplicate_of").is_not_null()
    kept = scored.filter(pl.col("kept") & ~is_filtered & pl.col("duplicate_of").is_null()).height
    duplicates = scored.filter(is_duplicate & ~is_filtered).height
    filtered = scored.filter(is_filtered & ~pl.col("kept") & pl.col("duplicate_of").is_null())
    unreasoned = filtered.filter(pl.col("filter_reason").is_null() | (pl.col("filter_reason") == "")).height
    listed = (
        filtered_table.select("pattern_id")
        if filtered_table is not None
        else pl.DataFrame(schema={"pattern_id": pl.String})
    )
    table_matches = listed.sort("pattern_id").equals(filtered.select("pattern_id").sort("pattern_id"))
    by_gate = {str(k): int(v) for k, v in filtered.group_by("filtered").len().iter_rows()}
    return dg.AssetCheckResult(
        check_name=DUPLICATES_ACCOUNTED.name,
        passed=(
            orphans.is_empty()
            and scored["pattern_id"].n_unique() == scored.height
            and scored.height == patterns == kept + duplicates + filtered.height
            and unreasoned == 0
            and table_matches
        ),
        metadata={
            "patterns": patterns,
            "scored_rows": scored.height,
            "kept": kept,
            "dropped": dropped.height,
            "dropped_without_kept_winner": orphans.height,
            "duplicates": duplicates,
            "filtered": filtered.height,
            "filtered_by_gate": dg.MetadataValue.json(by_gate),
            "filtered_without_reason": unreasoned,
            "filtered_table_matches": table_matches,
        },
    )


def duplicate_share(scored: pl.DataFrame | None) -> dg.AssetCheckResult:
    total = 0 if scored is None else scored.height
    dropped = 0 if scored is None else scored.filter(~pl.col("kept") & ~_filtered(scored)).height
    share = dropped / total if total else 0.0
    return dg.AssetCheckResult(
        check_name=DUPLICATE_SHARE.name,
        passed=share <= DUPLICATE_WARN_SHARE,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"patterns": total, "duplicates": dropped, "duplicate_share": round(share, 4)},
    )
