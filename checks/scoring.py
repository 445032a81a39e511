"""Checks on curation and near-duplicate removal: every current paired pattern has exactly one scored row
(compared by id with the pairing's own table, so a row lost or invented between pairing and scoring is
named), every pattern is kept, a near-duplicate naming a kept one, or filtered by a gate with its reason
(patterns = kept + duplicates + filtered), and a warning when a scope loses an unusual share of its
patterns to near-duplicates."""

from __future__ import annotations

import dagster as dg
import polars as pl

DUPLICATE_WARN_SHARE = 0.5
# Ids listed by name in a check's metadata (the counts beside them are complete).
NAMED = 20

DUPLICATES_ACCOUNTED = dg.AssetCheckSpec(
    "duplicates_accounted",
    asset="scored_patterns",
    blocking=True,
    description="The scored table holds each current paired pattern once (by id, against the pairing's "
    "table), every dropped near-duplicate names a kept pattern, every filtered pattern has its gate and "
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


def _ids(frame: pl.DataFrame) -> list[str]:
    return sorted(frame["pattern_id"].cast(pl.String).to_list())[:NAMED]


def duplicates_accounted(
    scored: pl.DataFrame | None, current: pl.DataFrame | None, filtered_table: pl.DataFrame | None = None
) -> dg.AssetCheckResult:
    """``scored``: the scored table's ``pattern_id, kept, duplicate_of`` and, with gates, ``filtered,
    filter_reason`` (None when there is no table); ``current``: the ``pattern_id`` of the scope's current
    paired patterns (None when it has none); ``filtered_table``: the ids of the filtered table."""
    current = current if current is not None else pl.DataFrame(schema={"pattern_id": pl.String})
    if scored is None:
        return dg.AssetCheckResult(
            check_name=DUPLICATES_ACCOUNTED.name,
            passed=current.is_empty(),
            metadata={
                "patterns": current.height,
                "missing_from_scored": dg.MetadataValue.json(_ids(current)),
            },
        )
    if "filtered" not in scored.columns:
        scored = scored.with_columns(
            filtered=pl.lit(None, dtype=pl.String), filter_reason=pl.lit(None, dtype=pl.String)
        )
    current_ids = current.select("pattern_id").unique()
    missing = current_ids.join(scored, on="pattern_id", how="anti")
    not_current = scored.join(current_ids, on="pattern_id", how="anti")
    repeated = scored.group_by("pattern_id").len().filter(pl.col("len") > 1)
    is_filtered = pl.col("filtered").is_not_null()
    kept_ids = scored.filter(pl.col("kept")).select("pattern_id")
    dropped = scored.filter(~pl.col("kept") & ~is_filtered)
    orphans = dropped.join(kept_ids, left_on="duplicate_of", right_on="pattern_id", how="anti")
    is_duplicate = ~pl.col("kept") & pl.col("duplicate_of").is_not_null()
    kept = scored.filter(pl.col("kept") & ~is_filtered & pl.col("duplicate_of").is_null()).height
    duplicates = scored.filter(is_duplicate & ~is_filtered).height
    filtered = scored.filter(is_filtered & ~pl.col("kept") & pl.col("duplicate_of").is_null())
    unreasoned = filtered.filter(pl.col("filter_reason").is_null() | (pl.col("filter_reason") == ""))
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
            missing.is_empty()
            and not_current.is_empty()
            and repeated.is_empty()
            and orphans.is_empty()
            and scored.height == current.height == kept + duplicates + filtered.height
            and unreasoned.is_empty()
            and table_matches
        ),
        metadata={
            "patterns": current.height,
            "scored_rows": scored.height,
            "missing_from_scored": dg.MetadataValue.json(_ids(missing)),
            "scored_but_not_current": dg.MetadataValue.json(_ids(not_current)),
            "scored_more_than_once": dg.MetadataValue.json(_ids(repeated)),
            "kept": kept,
            "dropped": dropped.height,
            "dropped_without_kept_winner": dg.MetadataValue.json(_ids(orphans)),
            "duplicates": duplicates,
            "filtered": filtered.height,
            "filtered_by_gate": dg.MetadataValue.json(by_gate),
            "filtered_without_reason": dg.MetadataValue.json(_ids(unreasoned)),
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
