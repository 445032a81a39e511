"""Each staging check fails when exactly what it guards is corrupted behind the pipeline's back, names
what is missing, and (blocking) keeps the scope's patterns out of Engramia."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from assets.cli import summary
from checks.staging import counts_of
from pipelines.pairing.batches import current
from pipelines.quality.reconcile import scope_counts
from pipelines.tables import parquet_files
from tests.support.graph import check_metadata, checks, ingest, loaded, scope_run

DUMP_0820 = "assistants-export-2026-08-20.ndjson"


def rewrite(path: Path, change) -> None:
    """Rewrite one Parquet file through ``change`` (a frame -> frame function), keeping its schema."""
    frame = pl.read_parquet(path)
    change(frame).write_parquet(path)


def test_a_quarantined_line_dropped_fails_the_dump_check_and_blocks_the_scopes_of_that_dump(
    layout, sample_dir, instance
):
    assert ingest(layout, sample_dir, instance).success
    [quarantine] = [p for p in parquet_files(layout.quarantine()) if "2026-08-20" in p.name]
    # The malformed line has no scope: only the dump's own sum can miss it.
    rewrite(quarantine, lambda q: q.filter(pl.col("reason") != "malformed JSON"))

    again = ingest(layout, sample_dir, instance)
    assert checks(again) == {"dump_lines_reconcile": False}
    [bad] = check_metadata(again, "dump_lines_reconcile")["mismatched_dumps"]
    assert bad["file"].endswith(DUMP_0820) and bad["lines"] == bad["staged"] + bad["quarantined"] + 1

    # asst_support is staged from that dump alone, asst_analyst from both: neither is loaded.
    for scope in ("default__asst_support", "default__asst_analyst"):
        result = scope_run(layout, sample_dir, instance, scope, raise_on_error=False)
        assert checks(result)["lines_reconcile"] is False, scope
        assert check_metadata(result, "lines_reconcile")["dumps_mismatched"] == [bad["file"]]
        assert not loaded(result)


@pytest.mark.parametrize(
    ("corruption", "expectation"),
    [
        ("duplicated id", "expect_column_values_to_be_unique"),
        ("unknown role", "expect_column_values_to_be_in_set"),
    ],
)
def test_a_corrupted_message_fails_messages_quality_and_blocks_the_load(
    layout, sample_dir, instance, corruption, expectation
):
    scope = "default__asst_coder"
    ingest(layout, sample_dir, instance)
    assert loaded(scope_run(layout, sample_dir, instance, scope))
    path = parquet_files(layout.messages(scope))[0]
    if corruption == "duplicated id":
        rewrite(path, lambda m: pl.concat([m, m.head(1)]))
    else:
        rewrite(
            path,
            lambda m: m.with_columns(
                role=pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("robot")).otherwise(pl.col("role"))
            ),
        )
    result = scope_run(layout, sample_dir, instance, scope, raise_on_error=False)
    assert checks(result)["messages_quality"] is False
    failed = check_metadata(result, "messages_quality")["failed_expectations"]
    assert [f["expectation"] for f in failed] == [expectation] and failed[0]["unexpected_count"] >= 1
    assert not loaded(result)


def test_a_lost_unpaired_message_fails_messages_accounted_naming_it(layout, sample_dir, instance):
    scope = "default__asst_support"
    ingest(layout, sample_dir, instance)
    assert loaded(scope_run(layout, sample_dir, instance, scope))
    lost = current(layout, "unpaired", scope).collect()["message_id"][0]
    for path in parquet_files(layout.unpaired(scope)):
        rewrite(path, lambda u: u.filter(pl.col("message_id") != lost))

    result = scope_run(layout, sample_dir, instance, scope, raise_on_error=False)
    assert checks(result)["messages_accounted"] is False
    meta = check_metadata(result, "messages_accounted")
    assert (
        meta["unaccounted_message_ids"] == [lost]
        and meta["messages"] == meta["in_patterns"] + meta["unpaired"] + 1
    )
    assert not loaded(result)


def test_a_message_paired_and_unpaired_at_once_fails_messages_accounted(
    layout, sample_dir, instance, monkeypatch
):
    """Counts alone would balance: one message lost from the unpaired table, one paired message added."""
    scope = "default__asst_support"
    ingest(layout, sample_dir, instance)
    scope_run(layout, sample_dir, instance, scope)
    paired = current(layout, "patterns", scope).collect()["user_message_ids"][0][0]
    unpaired = current(layout, "unpaired", scope).collect()
    lost = unpaired["message_id"][0]
    for path in parquet_files(layout.unpaired(scope)):
        rewrite(
            path,
            lambda u: u.with_columns(
                message_id=pl.when(pl.col("message_id") == lost).then(pl.lit(paired)).otherwise("message_id")
            ),
        )
    result = scope_run(layout, sample_dir, instance, scope, raise_on_error=False)
    meta = check_metadata(result, "messages_accounted")
    assert checks(result)["messages_accounted"] is False
    assert meta["messages"] == meta["in_patterns"] + meta["unpaired"]  # the sum alone cannot tell
    assert meta["unaccounted_message_ids"] == [lost] and meta["in_both_message_ids"] == [paired]
    assert not loaded(result)
    # What a run's summary takes from these checks is what the files hold, named ids included.
    reported = counts_of(result.get_asset_check_evaluations(), scope)
    assert reported == scope_counts(layout, scope) and not reported.messages_reconcile
    # Given them, the summary counts nothing itself.
    monkeypatch.setattr(summary, "scope_counts", lambda *_: pytest.fail("the files were counted again"))
    figures = summary.scope_summary(layout, scope, None, "embedded", counts=reported)
    assert (figures["unpaired"], figures["messages_reconcile"]) == (reported.pairing.unpaired, False)
