"""The load's checks fail when exactly what they guard is corrupted in the store behind the pipeline's
back: a wiped store (the pattern count against the ledger) and a pattern whose task was changed (read back
by key against the content the ledger says was sent)."""

from __future__ import annotations

import shutil

import pytest

from assets.destination import EngramiaDestination
from assets.engramia import count_reconciliation
from pipelines.load.records import kept_patterns
from pipelines.load.store import engramia_scope, open_memory
from tests.support.graph import check_metadata, checks, ingest, loaded, scope_run

SCOPE = "default__asst_coder"


@pytest.fixture
def loaded_scope(layout, sample_dir, instance):
    ingest(layout, sample_dir, instance)
    first = scope_run(layout, sample_dir, instance, SCOPE)
    assert all(checks(first).values()) and loaded(first)
    return layout


def test_a_wiped_store_fails_the_count_check_and_the_next_run_refills_it(loaded_scope, sample_dir, instance):
    shutil.rmtree(loaded_scope.engramia)
    wiped = count_reconciliation(loaded_scope, SCOPE, EngramiaDestination())
    assert wiped.passed is False
    assert wiped.metadata["in_store_per_ledger"].value == 5 and wiped.metadata["pattern_count_now"].value == 0
    # The embedded load trusts the ledger only for keys the store holds: it sends the five again.
    result = scope_run(loaded_scope, sample_dir, instance, SCOPE)
    assert checks(result)["pattern_count_reconciles"] is True
    meta = check_metadata(result, "pattern_count_reconciles")
    assert meta["pattern_count_before"] == 0 and meta["stored"] == 5 and meta["pattern_count_now"] == 5


def test_a_changed_pattern_in_the_store_fails_the_spot_check(loaded_scope, sample_dir, instance):
    sampled = kept_patterns(loaded_scope, SCOPE).select("key").head(1).collect()["key"][0]
    memory = open_memory(loaded_scope.engramia)
    with engramia_scope("default", "asst_coder"):
        [record] = [r for r in memory.export() if r["key"] == sampled]
        record["data"]["task"] = "unrelated words about gardening and tomatoes"
        assert memory.import_data([record], overwrite=True) == 1
    result = scope_run(loaded_scope, sample_dir, instance, SCOPE)
    found = checks(result)
    assert found["recall_spot_check"] is False and found["pattern_count_reconciles"] is True
    meta = check_metadata(result, "recall_spot_check")
    assert meta["found"] == meta["checked"] - 1
    assert [r["key"] for r in meta["results"] if not r["found"]] == [sampled]
