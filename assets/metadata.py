"""Metadata the asset pages render: column schemas and row previews as Dagster tables.

A preview is a handful of rows, never a scan of the table: long texts are shortened and timestamps shown
to the second, so the page stays readable whatever the messages hold.
"""

from __future__ import annotations

import dagster as dg
import polars as pl

PREVIEW_ROWS = 5
PREVIEW_CHARS = 80


def _type_name(dtype: pl.DataType) -> str:
    if dtype == pl.String:
        return "string"
    if dtype.is_integer():
        return "int"
    if dtype.is_float():
        return "float"
    if dtype == pl.Boolean:
        return "bool"
    if isinstance(dtype, pl.Datetime):
        return "timestamp"
    if isinstance(dtype, pl.List):
        return f"list<{_type_name(dtype.inner)}>"
    return str(dtype).lower()


def column_schema(schema: pl.Schema | dict[str, pl.DataType]) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name, _type_name(t)) for name, t in schema.items()])


def _printable(frame: pl.DataFrame) -> pl.DataFrame:
    def cell(name: str, dtype: pl.DataType) -> pl.Expr:
        col = pl.col(name)
        if isinstance(dtype, pl.Datetime):
            return col.dt.strftime("%Y-%m-%d %H:%M:%S")
        if isinstance(dtype, pl.List):
            return col.cast(pl.List(pl.String)).list.join(",")
        if dtype == pl.String:
            # One line per cell: a newline would break the table row in the UI.
            shortened = col.str.replace_all(r"\s+", " ")
            return (
                pl.when(shortened.str.len_chars() > PREVIEW_CHARS)
                .then(shortened.str.slice(0, PREVIEW_CHARS - 1) + "…")
                .otherwise(shortened)
            )
        return col

    return frame.select(cell(n, t).alias(n) for n, t in frame.schema.items())


def table_preview(frame: pl.DataFrame | pl.LazyFrame | None, rows: int = PREVIEW_ROWS) -> dg.MetadataValue:
    """The first rows as a ``MetadataValue.table`` (an empty table when there is nothing yet)."""
    if frame is None:
        return dg.MetadataValue.table(records=[], schema=dg.TableSchema(columns=[]))
    head = frame.head(rows).collect() if isinstance(frame, pl.LazyFrame) else frame.head(rows)
    schema = column_schema(head.schema)
    printable = _printable(head)
    return dg.MetadataValue.table(
        records=[dg.TableRecord(row) for row in printable.iter_rows(named=True)], schema=schema
    )


def first_rows(frame: pl.LazyFrame | None, key: str, rows: int = PREVIEW_ROWS) -> pl.LazyFrame | None:
    """The first ``rows`` of ``frame`` found on the ``key`` column alone (unique in ``frame``), then read
    whole: the head of a join, sorted or not, reads every text of the table first (one scope at 10M
    messages: its kept patterns, sorted, 3.3 s for the head, 1.3 s this way; its current paired
    patterns 0.75 s, 0.17 s this way)."""
    if frame is None:
        return None
    first = frame.select(key).head(rows).collect()[key]
    return frame.filter(pl.col(key).is_in(first.implode()))


def schema_metadata(frame: pl.DataFrame | pl.LazyFrame | None) -> dict[str, dg.TableSchema]:
    """``dagster/column_schema`` of a table, for the asset's Overview tab."""
    if frame is None:
        return {}
    schema = frame.collect_schema() if isinstance(frame, pl.LazyFrame) else frame.schema
    return {"dagster/column_schema": column_schema(schema)}
