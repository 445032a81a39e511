"""Staging as a whole: one scope mapping per data directory, and scope keys that never collide."""

from __future__ import annotations

import pytest

from pipelines.ingest.staging import ingest
from pipelines.scopes import ScopeBy, ScopeMapping, sanitize_key
from tests.conftest import msg


def test_changing_the_scope_mapping_needs_a_fresh_data_dir(layout, dump, landing):
    dump("a.ndjson", [msg("t", "m1", "user", "q", 0)])
    ingest(layout, landing, ScopeMapping())
    dump("b.ndjson", [msg("t", "m2", "user", "q", 0)])
    with pytest.raises(ValueError, match="fresh data directory"):
        ingest(layout, landing, ScopeMapping(ScopeBy.SINGLE))


def test_long_names_never_share_a_key():
    a, b = "asst_" + "x" * 100 + "1", "asst_" + "x" * 100 + "2"
    assert sanitize_key(a) != sanitize_key(b)
    assert len(sanitize_key(a)) <= 100
    assert sanitize_key("asst_ok-1.2") == "asst_ok-1.2"
