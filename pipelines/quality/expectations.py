"""Data-quality expectations on the staged tables, run with Great Expectations 1.x.

GX does not read Polars frames, and its pandas path would copy whole texts, so each table is reduced in
Polars to the columns an expectation needs (ids, roles, scores, and whether task and code hold more than
white space) and handed to GX as pandas. GX is imported lazily: importing it costs seconds.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from pipelines.imports import GREAT_EXPECTATIONS, GX_UNUSED, deferred, ready

MESSAGE_COLUMNS = {
    "message_id": pl.String,
    "thread_id": pl.String,
    "assistant_id": pl.String,
    "role": pl.String,
    "text": pl.String,
    "created_at": pl.Datetime("us", "UTC"),
    "tenant_id": pl.String,
    "project_id": pl.String,
    "dump_id": pl.String,
    "line_no": pl.Int64,
    "branch": pl.String,
}


@dataclass
class QualityReport:
    table: str
    rows: int
    success: bool
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.results if not r["success"]]


def _import_gx() -> None:
    """GX, imported here or by the thread a run started for it (:mod:`pipelines.imports`)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    ready(GREAT_EXPECTATIONS)
    deferred(GX_UNUSED)
    from great_expectations.execution_engine import pandas_execution_engine

    # GX fingerprints a pandas batch smaller than this by hashing every row, twice per validation (when
    # the batch is made, and again inside validate): over half of a check's time at 10M messages. The
    # fingerprint only names the batch in stored results, and these contexts are ephemeral and store
    # none; GX itself leaves it out above 1 GB.
    pandas_execution_engine.HASH_THRESHOLD = 0


class _ThreadContext(threading.local):
    """This thread's ephemeral GX context and its batch definitions, one per table."""

    def __init__(self) -> None:
        self.context: Any = None
        self.definitions: dict[str, Any] = {}


_this_thread = _ThreadContext()


def _batch_definition(table: str) -> Any:
    """The whole-dataframe batch definition of ``table`` in this thread's ephemeral GX context.

    Made once per thread and table, not per validation: a new context and data source cost more than
    a small suite's validation (GX writes its project config out as YAML for each one). A batch's
    frame is handed over per validation and not kept.
    """
    local = _this_thread
    if table not in local.definitions:
        if local.context is None:
            import great_expectations as gx

            local.context = gx.get_context(mode="ephemeral")
            local.context.variables.progress_bars = {"globally": False}
        local.definitions[table] = (
            local.context.data_sources.add_pandas(f"{table}_source")
            .add_dataframe_asset(table)
            .add_batch_definition_whole_dataframe("all")
        )
    return local.definitions[table]


def _gx_validate(table: str, frame: pl.DataFrame, expectations: list) -> QualityReport:
    import great_expectations as gx

    batch = _batch_definition(table).get_batch(batch_parameters={"dataframe": frame.to_pandas()})
    suite = gx.ExpectationSuite(name=table, expectations=expectations)
    # BASIC: the unexpected count and a few unexpected values, which is all a report keeps. GX's
    # default (SUMMARY) also counts the unexpected values and lists their row indices.
    outcome = batch.validate(suite, result_format="BASIC")
    results = []
    for r in outcome.results:
        cfg = r.expectation_config
        results.append(
            {
                "expectation": cfg.type,
                "column": cfg.kwargs.get("column"),
                "success": bool(r.success),
                "unexpected_count": (r.result or {}).get("unexpected_count"),
                "observed_value": str((r.result or {}).get("observed_value", ""))[:200] or None,
            }
        )
    return QualityReport(table=table, rows=frame.height, success=bool(outcome.success), results=results)


def schema_problems(schema: pl.Schema, expected: dict[str, pl.DataType]) -> list[str]:
    problems = []
    for name, dtype in expected.items():
        if name not in schema:
            problems.append(f"missing column {name}")
        elif schema[name] != dtype:
            problems.append(f"column {name} is {schema[name]}, expected {dtype}")
    return problems


def validate_messages(messages: pl.LazyFrame) -> QualityReport:
    _import_gx()
    import great_expectations.expectations as gxe

    problems = schema_problems(messages.collect_schema(), MESSAGE_COLUMNS)
    narrow = messages.select("message_id", "thread_id", "assistant_id", "role", "branch").collect()
    report = _gx_validate(
        "messages",
        narrow,
        [
            gxe.ExpectColumnValuesToNotBeNull(column="message_id"),
            gxe.ExpectColumnValuesToNotBeNull(column="thread_id"),
            gxe.ExpectColumnValuesToNotBeNull(column="assistant_id"),
            gxe.ExpectColumnValuesToBeUnique(column="message_id"),
            gxe.ExpectColumnValuesToBeInSet(column="role", value_set=["user", "assistant", "system", "tool"]),
            gxe.ExpectColumnValuesToBeInSet(column="branch", value_set=["current", "abandoned"]),
        ],
    )
    report.results.insert(
        0,
        {
            "expectation": "schema",
            "column": None,
            "success": not problems,
            "unexpected_count": len(problems),
            "observed_value": "; ".join(problems) or None,
        },
    )
    report.success = report.success and not problems
    return report


# What the scored suite needs of each pattern's texts. Not blank = holds a character that is not white
# space: the same test as a stripped length >= 1 without copying every text (1.2-1.3 s against 2.3 s for a
# scope's kept patterns at 10M messages). Int64, not a narrower type: GX's "between" compares int64 and
# float64 columns as whole arrays and calls a Python function per row for any other dtype.
TEXT_MEASURES: dict[str, pl.Expr] = {
    "task_nonblank": pl.col("task").str.contains(r"\S").cast(pl.Int64),
    "code_nonblank": pl.col("code").str.contains(r"\S").cast(pl.Int64),
}


def validate_scored(kept: pl.LazyFrame) -> QualityReport:
    """Expectations on the patterns that will be loaded (:func:`~pipelines.load.records.kept_patterns`:
    every kept row of the scored table, with the text of its paired pattern, or with the
    :data:`TEXT_MEASURES` of that text already taken: ``kept_patterns(..., reduced=TEXT_MEASURES)``)."""
    _import_gx()
    import great_expectations.expectations as gxe

    schema = kept.collect_schema()
    narrow = kept.select(
        "pattern_id",
        pl.col("eval_score").cast(pl.Float64),
        *(pl.col(name) if name in schema else measure.alias(name) for name, measure in TEXT_MEASURES.items()),
        paired=pl.col("thread_id").is_not_null(),
    ).collect()
    missing = narrow.filter(~pl.col("paired"))["pattern_id"].to_list()
    report = _gx_validate(
        "scored_patterns",
        narrow.drop("paired"),
        [
            gxe.ExpectColumnValuesToNotBeNull(column="pattern_id"),
            gxe.ExpectColumnValuesToBeUnique(column="pattern_id"),
            gxe.ExpectColumnValuesToNotBeNull(column="eval_score"),
            gxe.ExpectColumnValuesToBeBetween(column="eval_score", min_value=0, max_value=10),
            gxe.ExpectColumnValuesToNotBeNull(column="task_nonblank"),
            gxe.ExpectColumnValuesToBeBetween(column="task_nonblank", min_value=1),
            gxe.ExpectColumnValuesToNotBeNull(column="code_nonblank"),
            gxe.ExpectColumnValuesToBeBetween(column="code_nonblank", min_value=1),
        ],
    )
    # Kept in the scored table but no current paired pattern: named, never dropped (a dropped row
    # would be retracted from Engramia by the load).
    report.results.insert(
        0,
        {
            "expectation": "kept patterns have their paired pattern",
            "column": "pattern_id",
            "success": not missing,
            "unexpected_count": len(missing),
            "observed_value": ", ".join(missing[:20]) or None,
        },
    )
    report.success = report.success and not missing
    return report
