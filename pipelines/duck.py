"""DuckDB connections and atomic Parquet writes shared by the stages."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import duckdb


def connect(memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    # Rows carry their own order (line numbers); keeping insertion order only costs memory.
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET enable_progress_bar = false")
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    return con


def copy_parquet(con: duckdb.DuckDBPyConnection, query: str, path: Path, params: Sequence | None = None) -> int:
    """Write a query's result to ``path`` atomically; returns the number of rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    con.execute(f"COPY ({query}) TO '{tmp}' (FORMAT parquet, COMPRESSION zstd)", params or [])
    rows = con.execute(f"SELECT count(*) FROM read_parquet('{tmp}')").fetchone()[0]
    os.replace(tmp, path)
    return int(rows)


def file_list(paths: Sequence[Path | str]) -> str:
    """A SQL list literal of file paths for ``read_parquet``."""
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"
