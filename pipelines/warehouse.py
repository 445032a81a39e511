"""The analysts' DuckDB file: one view per staged table, straight over the Parquet files.

Views read the files at query time, so new dumps show up without rebuilding anything; the file is
refreshed after every run only so that tables that did not exist before get their views. A table whose
files do not exist yet has no view until the run that creates them.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from pipelines.tables import DataLayout

# view name -> (glob under staged/, extra SQL over the read as ``t``)
_TABLES: dict[str, str] = {
    "manifest": "_manifest/dumps.parquet",
    "scopes": "_manifest/scopes.parquet",
    "raw_rows": "raw/dump=*/scope=*/*.parquet",
    "quarantine": "quarantine/*.parquet",
    "messages": "messages/scope=*/*.parquet",
    "message_stats": "message_stats/scope=*/*.parquet",
    "pattern_batches": "patterns/scope=*/*.parquet",
    "unpaired_batches": "unpaired/scope=*/*.parquet",
    "thread_batches": "threads/scope=*/*.parquet",
    "scored": "scored/scope=*/*.parquet",
    "ledger_history": "ledger/scope=*/dest=*/*.parquet",
    "loads": "loads/scope=*/*.parquet",
}

_DERIVED = {
    "current_batches": "SELECT scope, thread_id, max(batch) AS batch FROM thread_batches GROUP BY ALL",
    "patterns": "SELECT p.* FROM pattern_batches p "
    "SEMI JOIN current_batches c USING (scope, thread_id, batch)",
    "unpaired": "SELECT u.* FROM unpaired_batches u "
    "SEMI JOIN current_batches c USING (scope, thread_id, batch)",
    "kept_patterns": "SELECT p.*, s.eval_score, s.score_source FROM patterns p "
    "JOIN scored s USING (scope, pattern_id) WHERE s.kept",
    "duplicates": "SELECT s.scope, s.pattern_id, s.duplicate_of, s.similarity, p.task, k.task AS kept_task "
    "FROM scored s JOIN patterns p USING (scope, pattern_id) "
    "LEFT JOIN patterns k ON k.scope = s.scope AND k.pattern_id = s.duplicate_of WHERE NOT s.kept",
    "ledger": "SELECT * FROM ledger_history QUALIFY row_number() OVER "
    '(PARTITION BY scope, dest, pattern_id ORDER BY "at" DESC) = 1',
}
_NEEDS = {
    "current_batches": ["thread_batches"],
    "patterns": ["pattern_batches", "thread_batches"],
    "unpaired": ["unpaired_batches", "thread_batches"],
    "kept_patterns": ["pattern_batches", "thread_batches", "scored"],
    "duplicates": ["pattern_batches", "thread_batches", "scored"],
    "ledger": ["ledger_history"],
}


def refresh(layout: DataLayout) -> list[str]:
    """(Re)create the views; returns their names."""
    made = []
    layout.root.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(layout.warehouse))
    try:
        for name, pattern in _TABLES.items():
            if not any(layout.staged.glob(pattern)):
                con.execute(f"DROP VIEW IF EXISTS {name}")
                continue
            path = str(Path(layout.staged) / pattern).replace("'", "''")
            con.execute(
                f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM "
                f"read_parquet('{path}', hive_partitioning = true, union_by_name = true)"
            )
            made.append(name)
        for name, sql in _DERIVED.items():
            if all(n in made for n in _NEEDS[name]):
                con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")
                made.append(name)
            else:
                con.execute(f"DROP VIEW IF EXISTS {name}")
    finally:
        con.close()
    return made
