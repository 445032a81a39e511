"""The analysts' DuckDB file: every view exists and answers ``SELECT *``, whatever the data folder holds."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl
import pytest

from pipelines.ingest.catalog import scope_names
from pipelines.load.ledger import LEDGER_SCHEMA
from pipelines.load.plan import LoadResult, save_load_result
from pipelines.runner import backfill
from pipelines.tables import DataLayout, write_parquet
from pipelines.warehouse import VIEWS, columns, refresh
from tests.conftest import SAMPLE, msg, write_ndjson

NOW = datetime(2026, 9, 1, tzinfo=UTC)
# The README's example queries (thread id of the sample).
README_QUERIES = [
    "SELECT reason, count(*) FROM quarantine GROUP BY ALL ORDER BY 2 DESC",
    "SELECT assistant_id, role, count(*) FROM messages GROUP BY ALL ORDER BY ALL",
    "SELECT created_at, role, text FROM messages WHERE thread_id = 'thread_abc' "
    "ORDER BY created_at, dump_seq, line_no",
    "SELECT scope, reason, count(*) FROM unpaired GROUP BY ALL",
    "SELECT task, kept_task, similarity FROM duplicates LIMIT 20",
    "SELECT scope, outcome, count(*) FROM ledger GROUP BY ALL",
]


def _run(layout: DataLayout, source: Path) -> None:
    """The backfill up to scoring, then one ledger and one load row per scope as the load writes them
    (the load itself is exercised in tests/load)."""
    result = backfill(layout, source, load=False, workers=1)
    for name in result.scopes:
        tenant_id, project_id = scope_names(layout, name)
        kept = pl.read_parquet(layout.scored(name) / "*.parquet").filter("kept")["pattern_id"]
        rows = [
            {"pattern_id": p, "key": f"patterns/{p}", "outcome": "stored", "run_id": "run-1", "at": NOW}
            for p in kept
        ]
        write_parquet(
            pl.DataFrame(rows, schema=LEDGER_SCHEMA), layout.ledger(name) / "dest=embedded" / "p.parquet"
        )
        load = LoadResult(name, "embedded", tenant_id, project_id, kept=len(rows), stored=len(rows))
        save_load_result(layout, load, "run-1")
    refresh(layout)


def _select_all(layout: DataLayout) -> dict[str, duckdb.DuckDBPyRelation]:
    con = duckdb.connect(str(layout.warehouse), read_only=True)
    found = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert found >= set(VIEWS)
    out = {}
    for name in VIEWS:
        rel = con.sql(f"SELECT * FROM {name}")
        rel.fetchall()  # reads every file: a type that does not fit fails here
        out[name] = (rel.columns, [str(t) for t in rel.types], len(rel))
    for query in README_QUERIES:
        con.sql(query).fetchall()
    con.close()
    return out


def _messy(landing: Path) -> Path:
    """Conflicting copies (within a dump and across dumps), malformed lines, unpaired messages and
    near-duplicate tasks in one data set."""
    task = "write a python function that parses a csv file into a list of dictionaries"
    write_ndjson(
        landing / "a.ndjson",
        [
            msg("t1", "m1", "user", task, 0),
            msg("t1", "m2", "assistant", "import csv", 5),
            msg("t2", "m3", "user", task + " ", 0),
            msg("t2", "m4", "assistant", "use csv.DictReader", 5),
            msg("t3", "m5", "user", "nobody answered this", 0),
            msg("t3", "m5", "user", "a conflicting copy in the same dump", 0),
            '{"thread_id": "t4", "role": "user", "text": "cut off',
            "not json at all",
            "",
            '["a list"]',
            msg("t5", "m6", "assistant", "an answer with no question", 0),
        ],
    )
    write_ndjson(
        landing / "b.ndjson",
        [
            msg("t1", "m2", "assistant", "import csv  # corrected", 5),
            msg("t1", "m1", "user", task, 0),
            '{"broken": ',
        ],
    )
    return landing


def test_every_view_exists_empty_with_its_columns(layout):
    refresh(layout)
    got = _select_all(layout)
    for name in VIEWS:
        assert got[name][2] == 0
    for name in ("quarantine", "messages", "loads", "ledger_history"):
        assert list(zip(got[name][0], got[name][1], strict=True)) == columns(name)
    assert "raw_text" in got["quarantine"][0] and "reason" in got["quarantine"][0]


def test_sample_views_and_empty_views_have_the_same_columns(tmp_path):
    layout = DataLayout.at(tmp_path / "data")
    _run(layout, SAMPLE)
    got = _select_all(layout)
    assert got["messages"][2] > 0 and got["patterns"][2] > 0 and got["loads"][2] > 0
    empty = DataLayout.at(tmp_path / "empty")
    refresh(empty)
    expected = _select_all(empty)
    for name in VIEWS:
        seen, declared = dict(zip(*got[name][:2], strict=True)), dict(zip(*expected[name][:2], strict=True))
        assert seen.keys() == declared.keys(), name
        # A column a writer left all-null has DuckDB's NULL type; any other must be the declared one.
        for column, kind in seen.items():
            assert kind in (declared[column], '"NULL"'), (name, column, kind, declared[column])


def test_quarantine_with_conflicts_and_malformed_lines(tmp_path, landing):
    layout = DataLayout.at(tmp_path / "data")
    _run(layout, _messy(landing))
    got = _select_all(layout)
    con = duckdb.connect(str(layout.warehouse), read_only=True)
    reasons = dict(con.execute("SELECT stage, count(*) FROM quarantine GROUP BY ALL").fetchall())
    # 4 bad lines in a.ndjson, 1 in b.ndjson; 1 conflict in a.ndjson, 1 in b.ndjson.
    assert reasons == {"ingest": 5, "messages": 2}
    assert con.execute("SELECT typeof(raw_text) FROM quarantine LIMIT 1").fetchone() == ("VARCHAR",)
    malformed = "SELECT count(*) FROM quarantine WHERE raw_text = 'not json at all'"
    assert con.execute(malformed).fetchone() == (1,)
    assert got["duplicates"][2] == 1
    assert got["unpaired"][2] == 2
    con.close()


def test_conflict_files_written_with_the_json_type_still_read(tmp_path, landing):
    """Data directories staged before raw_text became plain text keep working."""
    import polars as pl
    import pyarrow as pa
    import pyarrow.parquet as pq

    layout = DataLayout.at(tmp_path / "data")
    _run(layout, _messy(landing))
    for path in layout.quarantine().glob("*-conflicts.parquet"):
        table = pl.read_parquet(path).to_arrow()
        index = table.schema.get_field_index("raw_text")
        old = table.set_column(index, pa.field("raw_text", pa.json_()), table["raw_text"].cast(pa.json_()))
        pq.write_table(old, path, store_schema=False)
    refresh(layout)
    con = duckdb.connect(str(layout.warehouse), read_only=True)
    assert con.execute("SELECT count(*) FROM quarantine").fetchone() == (7,)
    con.close()


@pytest.mark.parametrize("name", ["quarantine", "patterns", "ledger"])
def test_refresh_swaps_an_empty_view_for_the_files(tmp_path, name):
    layout = DataLayout.at(tmp_path / "data")
    refresh(layout)
    _run(layout, SAMPLE)
    con = duckdb.connect(str(layout.warehouse), read_only=True)
    assert con.execute(f"SELECT count(*) FROM {name}").fetchone()[0] > 0
    con.close()


def test_refresh_makes_again_only_the_views_whose_sql_changed(tmp_path):
    layout = DataLayout.at(tmp_path / "data")
    _run(layout, SAMPLE)
    con = duckdb.connect(str(layout.warehouse))
    (digest,) = con.execute("SELECT comment FROM duckdb_views() WHERE view_name = 'messages'").fetchone()
    con.execute("CREATE OR REPLACE VIEW messages AS SELECT 1 AS x")
    # An analyst's view of the same name in another schema, carrying the digest, is not the project's view.
    con.execute("CREATE SCHEMA scratch")
    con.execute("CREATE VIEW scratch.messages AS SELECT 1 AS x")
    con.execute(f"COMMENT ON VIEW scratch.messages IS '{digest}'")
    con.close()
    # Making a view over files reads every file's footer: an unchanged view must not be made again.
    batch = next((layout.staged / "patterns").rglob("*.parquet"))
    batch.write_bytes(b"not parquet")
    refresh(layout)
    con = duckdb.connect(str(layout.warehouse), read_only=True)
    made = con.sql("SELECT * FROM messages")
    assert made.columns == [c for c, _ in columns("messages")] and len(made) > 0
    with pytest.raises(duckdb.Error):
        con.execute("SELECT count(*) FROM pattern_batches").fetchone()
    con.close()


def test_refresh_opens_the_file_only_when_its_views_or_the_file_changed(tmp_path, monkeypatch):
    layout = DataLayout.at(tmp_path / "data")
    _run(layout, SAMPLE)
    refresh(layout)
    opened: list[str] = []
    connect = duckdb.connect

    def counted(database: str = ":memory:", *args, **kwargs):
        opened.append(database)
        return connect(database, *args, **kwargs)

    monkeypatch.setattr(duckdb, "connect", counted)
    refresh(layout)
    assert opened == []
    # An analyst's change still in the write-ahead log (the connection open) is seen and undone.
    analyst = connect(str(layout.warehouse))
    analyst.execute("CREATE OR REPLACE VIEW messages AS SELECT 1 AS x")
    refresh(layout)
    assert opened == [str(layout.warehouse)]
    made = analyst.sql("SELECT * FROM messages")
    assert made.columns == [c for c, _ in columns("messages")] and len(made) > 0
    analyst.close()
    refresh(layout)
    opened.clear()
    refresh(layout)
    assert opened == []
    # A record that cannot be read is no record: the views are checked again.
    record = layout.root / ".warehouse.duckdb.views"
    record.write_text("{not json")
    refresh(layout)
    assert opened == [str(layout.warehouse)]
    opened.clear()
    # A table without files any more changes its view's SQL: the file is opened and the view made again.
    shutil.rmtree(layout.quarantine())
    refresh(layout)
    assert opened == [str(layout.warehouse)]
    with duckdb.connect(str(layout.warehouse), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM quarantine").fetchone() == (0,)


def test_the_empty_views_sql_is_made_on_one_connection_per_process(monkeypatch):
    import pipelines.warehouse as warehouse

    opened = []
    real_connect = duckdb.connect

    def counting_connect(*args, **kwargs):
        opened.append(args)
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(warehouse.duckdb, "connect", counting_connect)
    warehouse._empty_sqls.cache_clear()
    try:
        sqls = {name: warehouse._empty_sql(name) for name in warehouse._TABLES}
        assert len(opened) == 1
        for name, sql in sqls.items():
            assert sql.startswith("SELECT ") and sql.endswith(" WHERE false"), name
            assert len(real_connect().execute(sql).description) == len(columns(name)), name
    finally:
        warehouse._empty_sqls.cache_clear()
