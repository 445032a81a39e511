"""DuckDB connections and atomic Parquet writes shared by the stages.

Invariants: a file written here appears complete or not at all (a temporary file, then a rename), and
the row count returned is read back from that file; a connection from :func:`thread_connection` is only
ever used by the thread that opened it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import duckdb

_local = threading.local()


def connect(memory_limit: str | None = None, preserve_order: bool = False) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection.

    Rows carry their own order (line numbers), so keeping insertion order usually only costs memory;
    ``preserve_order`` keeps it for queries whose output order must follow their input's.
    """
    con = duckdb.connect()
    con.execute(f"SET preserve_insertion_order = {'true' if preserve_order else 'false'}")
    con.execute("SET enable_progress_bar = false")
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    return con


def thread_connection() -> duckdb.DuckDBPyConnection:
    """This thread's own long-lived :func:`connect` connection: opening one costs ~20 ms, which adds up
    over many small per-scope steps, and a connection must not be shared between threads. Callers
    drop the temp tables they create."""
    con = getattr(_local, "con", None)
    if con is None:
        con = _local.con = connect()
    return con


def copy_parquet(
    con: duckdb.DuckDBPyConnection, query: str, path: Path, params: Sequence | None = None
) -> int:
    """Write a query's result to ``path`` atomically; returns the number of rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    con.execute(f"COPY ({query}) TO '{tmp}' (FORMAT parquet, COMPRESSION zstd)", params or [])
    # fetchall, not fetchone: a half-read result would keep the (shared) connection busy.
    rows = con.execute(f"SELECT count(*) FROM read_parquet('{tmp}')").fetchall()[0][0]
    os.replace(tmp, path)
    return int(rows)


def file_list(paths: Sequence[Path | str]) -> str:
    """A SQL list literal of file paths for ``read_parquet``."""
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"
