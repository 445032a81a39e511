"""Great Expectations suites on the staged messages and on the patterns to load, as blocking checks.

GX is imported only when a suite runs (importing it costs seconds).
"""

from __future__ import annotations

import dagster as dg
import polars as pl

from pipelines.quality.expectations import QualityReport, validate_messages, validate_scored

MESSAGES_QUALITY = dg.AssetCheckSpec(
    "messages_quality",
    asset="messages",
    blocking=True,
    description="Great Expectations: schema, non-null ids, unique message_id, role in the allowed set.",
)
SCORED_QUALITY = dg.AssetCheckSpec(
    "scored_quality",
    asset="scored_patterns",
    blocking=True,
    description="Great Expectations on the patterns to load: unique non-null ids, eval_score in 0..10, "
    "task and code not blank.",
)


def _result(spec: dg.AssetCheckSpec, report: QualityReport) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=spec.name,
        passed=report.success,
        metadata={
            "rows": report.rows,
            "failed_expectations": dg.MetadataValue.json(report.failed),
            "expectations": len(report.results),
        },
    )


def messages_quality(messages: pl.LazyFrame | None) -> dg.AssetCheckResult:
    if messages is None:
        return dg.AssetCheckResult(check_name=MESSAGES_QUALITY.name, passed=True, metadata={"rows": 0})
    return _result(MESSAGES_QUALITY, validate_messages(messages))


def scored_quality(kept: pl.LazyFrame | None) -> dg.AssetCheckResult:
    if kept is None:
        return dg.AssetCheckResult(check_name=SCORED_QUALITY.name, passed=True, metadata={"rows": 0})
    return _result(SCORED_QUALITY, validate_scored(kept))
