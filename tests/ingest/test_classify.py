"""Every input line ends as a staged row in its scope or a quarantined row with a reason naming what is
wrong."""

from __future__ import annotations

import polars as pl
import pytest

from pipelines.ingest.catalog import read_scopes
from pipelines.ingest.staging import ingest
from pipelines.scopes import ScopeBy, ScopeMapping, sanitize_key, scope_key
from pipelines.tables import DataLayout
from tests.conftest import msg, staged_quarantine, staged_raw


def test_each_bad_line_is_quarantined_with_its_reason(layout, dump, landing):
    good = msg("t1", "m1", "user", "hello", 0)
    path = dump(
        "d.ndjson",
        [
            good,
            "this is not json",
            "",
            '["an", "array"]',
            {**msg("t1", "m2", "user", "x", 1), "role": "robot"},
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
    q = staged_quarantine(layout)
    assert q["reason"].to_list() == [
        "malformed JSON",
        "empty line",
        "not a JSON object",
        "unknown role: robot",
        "missing field: message_id",
        "mistyped field: created_at is not an ISO-8601 time: yesterday",
        "mistyped field: thread_id must be a string",
        "missing field: text",
        "empty field: assistant_id",
        "invalid UTF-8",
    ]
    assert q["line_no"].to_list() == [2, 3, 4, 5, 6, 7, 8, 9, 10, 12]
    assert q["file"].unique().to_list() == [str(path.resolve())]
    assert q.filter(pl.col("line_no") == 2)["raw_text"].item() == "this is not json"
    raw = staged_raw(layout)
    assert raw["message_id"].to_list() == ["m1", "m8"]
    assert raw["line_no"].to_list() == [1, 11]
    assert raw["created_at"].dtype == pl.Datetime("us", "UTC")


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
    assert staged_quarantine(by_tenant)["reason"].to_list() == ["thread_id has no tenant in the tenant map"]

    single = DataLayout.at(tmp_path / "s")
    ingest(single, landing, ScopeMapping(ScopeBy.SINGLE, tenant="acme", project="all"))
    assert read_scopes(single).rows() == [("acme__all", "acme", "all")]


def test_tenant_map_with_conflicting_rows_is_rejected(tmp_path, dump, landing):
    dump("d.ndjson", [msg("t1", "m1", "user", "q", 0)])
    tenant_map = tmp_path / "tenants.csv"
    tenant_map.write_text("thread_id,tenant_id\nt1,north\nt1,south\n")
    with pytest.raises(ValueError, match="t1"):
        ingest(DataLayout.at(tmp_path / "x"), landing, ScopeMapping(ScopeBy.TENANT, tenant_map=tenant_map))
