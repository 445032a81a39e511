"""Each scoring check fails when exactly what it guards is corrupted behind the pipeline's back, and
names the pattern: a blocking one keeps the load from running (so nothing loaded is retracted), the
warning does not."""

from __future__ import annotations

import dagster as dg
import polars as pl
import pytest

from assets.destination import EngramiaDestination
from checks.expectations import scored_quality
from pipelines.load.ledger import Ledger
from pipelines.load.plan import plan_load, texts_to_send
from pipelines.load.records import kept_patterns, without_text
from pipelines.quality.expectations import TEXT_MEASURES
from pipelines.scoring.scored import scored_file
from pipelines.tables import parquet_files
from tests.support.graph import check_metadata, checks, ingest, loaded, scope_run

SCOPE = "default__asst_coder"  # 5 patterns, all kept


@pytest.fixture
def loaded_scope(layout, sample_dir, instance):
    """The scope loaded once into the embedded store, every check passing."""
    ingest(layout, sample_dir, instance)
    first = scope_run(layout, sample_dir, instance, SCOPE)
    assert all(checks(first).values()) and store_count(layout) == 5
    return layout


def store_count(layout) -> int:
    return EngramiaDestination().pattern_count(layout, SCOPE, "default", "asst_coder")


def corrupt_scored(layout, change) -> pl.DataFrame:
    path = scored_file(layout, SCOPE)
    before = pl.read_parquet(path)
    change(before).write_parquet(path)
    return before


def rerun_blocked(layout, sample_dir, instance, check: str) -> dict:
    result = scope_run(layout, sample_dir, instance, SCOPE, raise_on_error=False)
    assert checks(result)[check] is False
    assert not loaded(result)
    assert store_count(layout) == 5  # nothing retracted
    return check_metadata(result, check)


def test_a_deleted_scored_row_fails_duplicates_accounted_naming_it(loaded_scope, sample_dir, instance):
    victim = corrupt_scored(loaded_scope, lambda s: s.slice(1))["pattern_id"][0]
    meta = rerun_blocked(loaded_scope, sample_dir, instance, "duplicates_accounted")
    assert meta["missing_from_scored"] == [victim] and meta["scored_rows"] == 4 and meta["patterns"] == 5


def test_a_duplicated_scored_id_fails_duplicates_accounted(loaded_scope, sample_dir, instance):
    twice = corrupt_scored(loaded_scope, lambda s: pl.concat([s, s.head(1)]))["pattern_id"][0]
    meta = rerun_blocked(loaded_scope, sample_dir, instance, "duplicates_accounted")
    assert meta["scored_more_than_once"] == [twice]


def test_a_scored_row_swapped_for_a_foreign_id_fails_though_the_counts_agree(
    loaded_scope, sample_dir, instance
):
    def swap(s: pl.DataFrame) -> pl.DataFrame:
        first = pl.int_range(pl.len()) == 0
        return s.with_columns(pattern_id=pl.when(first).then(pl.lit("oai_ghost")).otherwise("pattern_id"))

    victim = corrupt_scored(loaded_scope, swap)["pattern_id"][0]
    meta = rerun_blocked(loaded_scope, sample_dir, instance, "duplicates_accounted")
    assert meta["scored_rows"] == meta["patterns"] == 5
    assert meta["missing_from_scored"] == [victim] and meta["scored_but_not_current"] == ["oai_ghost"]


def test_a_duplicate_naming_no_kept_pattern_fails_duplicates_accounted(loaded_scope, sample_dir, instance):
    def orphan(s: pl.DataFrame) -> pl.DataFrame:
        first = pl.int_range(pl.len()) == 0
        return s.with_columns(
            kept=pl.when(first).then(False).otherwise("kept"),
            duplicate_of=pl.when(first).then(pl.lit("oai_ghost")).otherwise("duplicate_of"),
        )

    victim = corrupt_scored(loaded_scope, orphan)["pattern_id"][0]
    meta = rerun_blocked(loaded_scope, sample_dir, instance, "duplicates_accounted")
    assert meta["dropped_without_kept_winner"] == [victim]


def test_a_mis_scored_pattern_fails_scored_quality(loaded_scope, sample_dir, instance):
    def mis_score(s: pl.DataFrame) -> pl.DataFrame:
        return s.with_columns(
            eval_score=pl.when(pl.int_range(pl.len()) == 2).then(11.0).otherwise("eval_score")
        )

    corrupt_scored(loaded_scope, mis_score)
    meta = rerun_blocked(loaded_scope, sample_dir, instance, "scored_quality")
    [failed] = meta["failed_expectations"]
    assert failed["column"] == "eval_score" and failed["unexpected_count"] == 1


def test_a_kept_pattern_whose_paired_pattern_is_gone_is_named_never_dropped(loaded_scope):
    """Kept records against the scored table: a kept row with no current paired pattern stays in
    ``kept_patterns`` without text, fails the quality check by name, and the load refuses it (an inner
    join used to drop it, and the load then retracted it from Engramia)."""
    layout = loaded_scope
    corrupt_scored(
        layout, lambda s: s.with_columns(pattern_id=pl.col("pattern_id").str.replace("^oai_", "oai_x"))
    )
    kept = kept_patterns(layout, SCOPE)
    ids = kept.collect()["pattern_id"].to_list()
    assert len(ids) == 5 and without_text(kept) == ids
    # As the asset runs it too: the texts measured before the kept rows meet their scores.
    measured = kept_patterns(layout, SCOPE, ordered=False, reduced=TEXT_MEASURES)
    assert measured is not None and not {"task", "code"} & set(measured.collect_schema())
    for frame in (kept, measured):
        result = scored_quality(frame)
        assert result.passed is False
        named = result.metadata["failed_expectations"].value[0]
        assert named["unexpected_count"] == 5 and ids[0] in named["observed_value"]
    plan = plan_load(layout, SCOPE, Ledger(layout, SCOPE, "nowhere").in_store(), "as-is")
    with pytest.raises(ValueError, match=f"scope {SCOPE}: 5 kept patterns have no current paired pattern"):
        texts_to_send(layout, SCOPE, plan)


def test_too_many_near_duplicates_warns_but_does_not_block(loaded_scope, sample_dir, instance):
    def mark(s: pl.DataFrame) -> pl.DataFrame:
        winner = s["pattern_id"][0]
        later = pl.int_range(pl.len()) >= 2
        return s.with_columns(
            kept=pl.when(later).then(False).otherwise("kept"),
            duplicate_of=pl.when(later).then(pl.lit(winner)).otherwise("duplicate_of"),
        )

    corrupt_scored(loaded_scope, mark)
    result = scope_run(loaded_scope, sample_dir, instance, SCOPE)
    found = checks(result)
    assert found["duplicate_share"] is False and found["duplicates_accounted"] is True
    assert check_metadata(result, "duplicate_share")["duplicate_share"] == 0.6
    [warning] = [e for e in result.get_asset_check_evaluations() if e.check_name == "duplicate_share"]
    assert warning.severity == dg.AssetCheckSeverity.WARN
    assert loaded(result) and store_count(loaded_scope) == 2  # a warning: the load ran (and retracted 3)


def test_the_filtered_table_out_of_step_fails_duplicates_accounted(loaded_scope, sample_dir, instance):
    """A pattern filtered in the scored table but absent from the filtered table."""
    layout = loaded_scope

    def gate(s: pl.DataFrame) -> pl.DataFrame:
        first = pl.int_range(pl.len()) == 0
        return s.with_columns(
            kept=pl.when(first).then(False).otherwise("kept"),
            filtered=pl.when(first).then(pl.lit("min_chars")).otherwise("filtered"),
            filter_reason=pl.when(first).then(pl.lit("too short")).otherwise("filter_reason"),
        )

    corrupt_scored(layout, gate)
    assert (
        not parquet_files(layout.filtered(SCOPE))
        or pl.read_parquet(parquet_files(layout.filtered(SCOPE))).is_empty()
    )
    meta = rerun_blocked(layout, sample_dir, instance, "duplicates_accounted")
    assert meta["filtered_table_matches"] is False and meta["filtered"] == 1


def test_a_blank_task_or_code_fails_scored_quality():
    """Blank = nothing but white space (Unicode's, as ``str.strip`` takes it) or null."""
    kept = pl.LazyFrame(
        {
            "pattern_id": ["a", "b", "c", "d"],
            "eval_score": [5.0, 5.0, 5.0, 5.0],
            "task": ["parse a file", " \n\t\u00a0", "sum two numbers", "x"],
            "code": ["read it", "print(1)", "\u2003", None],
            "thread_id": ["t1", "t2", "t3", "t4"],
        }
    )
    measured = kept.with_columns(**TEXT_MEASURES).drop("task", "code")  # as kept_patterns(reduced=...)
    for frame in (kept, measured):
        result = scored_quality(frame)
        assert result.passed is False
        failed = {
            (f["expectation"], f["column"]): f["unexpected_count"]
            for f in result.metadata["failed_expectations"].value
        }
        assert failed[("expect_column_values_to_be_between", "task_nonblank")] == 1
        assert failed[("expect_column_values_to_be_between", "code_nonblank")] == 1
        assert failed[("expect_column_values_to_not_be_null", "code_nonblank")] == 1
