"""Every input line ends as a staged row or a quarantined row with a reason naming what is wrong."""

from __future__ import annotations

import polars as pl
import pytest

from pipelines.ingest.catalog import read_manifest, read_scopes
from pipelines.ingest.dumps import discover_dumps
from pipelines.ingest.staging import ingest
from pipelines.scopes import ScopeBy, ScopeMapping, sanitize_key, scope_key
from pipelines.tables import DataLayout
from tests.conftest import msg, write_ndjson


def _quarantine(layout: DataLayout) -> pl.DataFrame:
    return pl.read_parquet(layout.quarantine() / "*.parquet").sort("line_no")


def _raw(layout: DataLayout) -> pl.DataFrame:
    return pl.read_parquet(layout.raw() / "**" / "*.parquet", hive_partitioning=True).sort("line_no")


def test_each_bad_line_is_quarantined_with_its_reason(layout, dump, landing):
    good = msg("t1", "m1", "user", "hello", 0)
    path = dump(
        "d.ndjson",
        [
            good,
            "this is not json",
            "",
            '["an", "array"]',
            {**msg("t1", "m2", "user", "x", 1), "role": "tool"},
            {k: v for k, v in msg("t1", "m3", "user", "x", 2).items() if k != "message_id"},
            {**msg("t1", "m4", "user", "x", 3), "created_at": "yesterday"},
            {**msg("t1", "m5", "user", "x", 4), "thread_id": 42},
            {**msg("t1", "m6", "user", "x", 5), "text": None},
            {**msg("t1", "m7", "user", "x", 6), "assistant_id": "  "},
            msg("t1", "m8", "assistant", "fine too", 7),
        ],
    )
    with path.open("ab") as f:
        f.write(b'{"thread_id": "t1", "text": "\xff\xfe broken bytes"}\n')
    results = ingest(layout, landing, ScopeMapping())
    assert len(results) == 1
    r = results[0]
    assert (r.lines, r.staged, r.quarantined) == (12, 2, 10)
    q = _quarantine(layout)
    assert q["reason"].to_list() == [
        "malformed JSON",
        "empty line",
        "not a JSON object",
        "unknown role: tool",
        "missing field: message_id",
        "mistyped field: created_at must be unix seconds (a number)",
        "mistyped field: thread_id must be a string",
        "missing field: text",
        "empty field: assistant_id",
        "invalid UTF-8",
    ]
    assert q["line_no"].to_list() == [2, 3, 4, 5, 6, 7, 8, 9, 10, 12]
    assert q["file"].unique().to_list() == [str(path.resolve())]
    assert q.filter(pl.col("line_no") == 2)["raw_text"].item() == "this is not json"
    raw = _raw(layout)
    assert raw["message_id"].to_list() == ["m1", "m8"]
    assert raw["line_no"].to_list() == [1, 11]
    assert raw["created_at"].dtype == pl.Datetime("us", "UTC")


def test_lines_reconcile_across_chunk_boundaries(layout, landing):
    rows = [
        msg(f"t{i // 4}", f"m{i}", "user" if i % 2 == 0 else "assistant", f"text {i} " * (i % 7), i)
        for i in range(500)
    ]
    rows[123] = "{broken"
    rows[400] = ""
    write_ndjson(landing / "d.ndjson", rows)
    # A tiny chunk size forces many chunks: line numbers must continue across them.
    [r] = ingest(layout, landing, ScopeMapping(), chunk_bytes=997)
    assert r.lines == 500 and r.staged + r.quarantined == 500
    q = _quarantine(layout)
    assert q["line_no"].to_list() == [124, 401]
    raw = _raw(layout)
    assert raw.height == 498
    assert raw.select(
        (pl.col("message_id").str.slice(1).cast(pl.Int64) + 1 == pl.col("line_no")).all()
    ).item()


def test_file_without_trailing_newline_and_crlf(layout, landing):
    path = landing / "d.jsonl"
    import json

    lines = [json.dumps(msg("t", "m1", "user", "q", 0)), json.dumps(msg("t", "m2", "assistant", "a", 1))]
    path.write_bytes(("\r\n".join(lines)).encode())
    [r] = ingest(layout, landing, ScopeMapping())
    assert (r.lines, r.staged, r.quarantined) == (2, 2, 0)
    assert _raw(layout)["text"].to_list() == ["q", "a"]


def test_rerun_ingests_nothing_and_new_dump_gets_next_sequence(layout, dump, landing):
    dump("a.ndjson", [msg("t", "m1", "user", "q", 0)])
    assert len(ingest(layout, landing, ScopeMapping())) == 1
    assert ingest(layout, landing, ScopeMapping()) == []
    dump("b.ndjson", [msg("t", "m2", "assistant", "a", 1)])
    [r] = ingest(layout, landing, ScopeMapping())
    assert r.file.endswith("b.ndjson")
    manifest = read_manifest(layout).sort("seq")
    assert manifest["seq"].to_list() == [1, 2]
    assert _raw(layout).sort("dump_seq")["dump_seq"].to_list() == [1, 2]


def test_scope_by_assistant_tenant_and_single(tmp_path, dump, landing):
    dump(
        "d.ndjson",
        [
            msg("t1", "m1", "user", "q", 0, assistant="asst A"),
            msg("t2", "m2", "user", "q", 0, assistant="asst_b"),
            msg("t3", "m3", "user", "q", 0, assistant="asst_b"),
        ],
    )
    by_assistant = DataLayout.at(tmp_path / "a")
    ingest(by_assistant, landing, ScopeMapping(tenant="acme"))
    scopes = read_scopes(by_assistant).sort("scope")
    assert scopes["project_id"].to_list() == ["asst A", "asst_b"]
    assert scopes["tenant_id"].unique().to_list() == ["acme"]
    assert scope_key("acme", "asst A") == sanitize_key("acme__asst A") != "acme__asst A"

    tenant_map = tmp_path / "tenants.csv"
    tenant_map.write_text("thread_id,tenant_id\nt1,north\nt2,south\n")
    by_tenant = DataLayout.at(tmp_path / "t")
    [r] = ingest(by_tenant, landing, ScopeMapping(ScopeBy.TENANT, project="memory", tenant_map=tenant_map))
    assert sorted(read_scopes(by_tenant)["tenant_id"].to_list()) == ["north", "south"]
    assert r.quarantined == 1
    assert _quarantine(by_tenant)["reason"].to_list() == ["thread_id has no tenant in the tenant map"]

    single = DataLayout.at(tmp_path / "s")
    ingest(single, landing, ScopeMapping(ScopeBy.SINGLE, tenant="acme", project="all"))
    assert read_scopes(single).rows() == [("acme__all", "acme", "all")]


def test_tenant_map_with_conflicting_rows_is_rejected(tmp_path, dump, landing):
    dump("d.ndjson", [msg("t1", "m1", "user", "q", 0)])
    tenant_map = tmp_path / "tenants.csv"
    tenant_map.write_text("thread_id,tenant_id\nt1,north\nt1,south\n")
    with pytest.raises(ValueError, match="t1"):
        ingest(DataLayout.at(tmp_path / "x"), landing, ScopeMapping(ScopeBy.TENANT, tenant_map=tenant_map))


def test_changing_the_scope_mapping_needs_a_fresh_data_dir(layout, dump, landing):
    dump("a.ndjson", [msg("t", "m1", "user", "q", 0)])
    ingest(layout, landing, ScopeMapping())
    dump("b.ndjson", [msg("t", "m2", "user", "q", 0)])
    with pytest.raises(ValueError, match="fresh data directory"):
        ingest(layout, landing, ScopeMapping(ScopeBy.SINGLE))


def test_discover_dumps_takes_ndjson_and_jsonl_in_name_order(landing):
    for name in ("b.jsonl", "a.ndjson", "notes.txt", ".hidden.ndjson"):
        (landing / name).write_text("")
    assert [d.path.name for d in discover_dumps(landing)] == ["a.ndjson", "b.jsonl"]
    with pytest.raises(FileNotFoundError):
        discover_dumps(landing / "missing")


def test_long_names_never_share_a_key():
    a, b = "asst_" + "x" * 100 + "1", "asst_" + "x" * 100 + "2"
    assert sanitize_key(a) != sanitize_key(b)
    assert len(sanitize_key(a)) <= 100
    assert sanitize_key("asst_ok-1.2") == "asst_ok-1.2"


def test_same_name_size_and_time_in_two_folders_are_two_dumps(layout, landing):
    import os

    a = write_ndjson(landing / "day1" / "export.ndjson", [msg("t1", "m1", "user", "q", 0)])
    b = write_ndjson(landing / "day2" / "export.ndjson", [msg("t2", "m2", "user", "q", 0)])
    os.utime(b, ns=(a.stat().st_atime_ns, a.stat().st_mtime_ns))
    results = ingest(layout, landing, ScopeMapping())
    assert len(results) == 2 and len({r.dump_id for r in results}) == 2
    assert _raw(layout)["message_id"].sort().to_list() == ["m1", "m2"]


def test_files_still_being_written_wait_for_the_settle_time(layout, dump, landing):
    import os
    import time

    old = dump("old.ndjson", [msg("t", "m1", "user", "q", 0)])
    os.utime(old, (time.time() - 60, time.time() - 60))
    dump("new.ndjson", [msg("t", "m2", "user", "q", 1)])
    [r] = ingest(layout, landing, ScopeMapping(), settle_seconds=30)
    assert r.file.endswith("old.ndjson")
    [r] = ingest(layout, landing, ScopeMapping())
    assert r.file.endswith("new.ndjson")


def test_rows_of_a_dump_whose_ingest_crashed_are_not_staged(layout, dump, landing):
    from pipelines.ingest.catalog import scope_dump_rows

    dump("a.ndjson", [msg("t", "m1", "user", "q", 0)])
    ingest(layout, landing, ScopeMapping())
    [scope] = read_scopes(layout)["scope"].to_list()
    assert len(scope_dump_rows(layout, scope)) == 1
    # Staged files of a dump that never reached the manifest (the process died mid-dump).
    orphan = layout.raw("crashed-000000000000") / f"scope={scope}"
    orphan.mkdir(parents=True)
    pl.DataFrame({"message_id": ["x"]}).write_parquet(orphan / "part.parquet")
    assert len(scope_dump_rows(layout, scope)) == 1
    assert "crashed-000000000000" not in scope_dump_rows(layout, scope)
