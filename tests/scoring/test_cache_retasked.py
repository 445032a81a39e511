"""A pattern's task can change under the same id when its thread is paired again: a corrected copy of a
message (``conflicts="latest"``) or an earlier exchange that arrives later and becomes a follow-up's
context. Near-duplicate outcomes after such a dump equal those of a fresh data folder given every dump
at once, on the path that brings the scored table up to date and on the one that scores it whole."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pipelines.ingest.catalog import read_scopes
from pipelines.ingest.messages import stage_messages
from pipelines.ingest.staging import ingest
from pipelines.pairing.batches import pair_scope
from pipelines.pairing.pairs import PairingOptions
from pipelines.scopes import ScopeMapping
from pipelines.scoring.options import ScoringOptions
from pipelines.scoring.scored import scored_file
from pipelines.scoring.scores import score_scope
from pipelines.tables import DataLayout
from tests.conftest import msg, write_ndjson

CSV = "please write a csv parser in python now"
FIRST = [
    msg("t1", "u1", "user", CSV, 0),
    msg("t1", "a1", "assistant", "import csv", 5),
    msg("t2", "u2", "user", "a different question about rust lifetimes", 10),
    msg("t2", "a2", "assistant", "fn main() {}", 15),
]


def _run(
    layout: DataLayout,
    landing: Path,
    conflicts: str = "first",
    pairing: PairingOptions | None = None,
    scoring: ScoringOptions | None = None,
) -> None:
    ingest(layout, landing, ScopeMapping())
    for scope in read_scopes(layout)["scope"].to_list():
        stage_messages(layout, scope, conflicts)
        pair_scope(layout, scope, pairing or PairingOptions())
        score_scope(layout, scope, scoring or ScoringOptions(), None)


def _outcomes(layout: DataLayout) -> pl.DataFrame:
    [scope] = read_scopes(layout)["scope"].to_list()
    columns = ["pattern_id", "kept", "duplicate_of", "similarity"]
    return pl.read_parquet(scored_file(layout, scope)).select(columns).sort("pattern_id")


def _incremental_and_fresh(
    tmp_path: Path, first: list[dict], second: list[dict], second_scoring: ScoringOptions, **options
) -> tuple[pl.DataFrame, pl.DataFrame]:
    step, at_once = DataLayout.at(tmp_path / "step"), DataLayout.at(tmp_path / "once")
    write_ndjson(tmp_path / "in-step" / "a.ndjson", first)
    _run(step, tmp_path / "in-step", **options)
    write_ndjson(tmp_path / "in-step" / "b.ndjson", second)
    _run(step, tmp_path / "in-step", scoring=second_scoring, **options)
    write_ndjson(tmp_path / "in-once" / "a.ndjson", first)
    write_ndjson(tmp_path / "in-once" / "b.ndjson", second)
    _run(at_once, tmp_path / "in-once", scoring=second_scoring, **options)
    return _outcomes(step), _outcomes(at_once)


def test_a_corrected_message_that_makes_two_tasks_equal(tmp_path: Path) -> None:
    corrected = [msg("t2", "u2", "user", CSV, 10)]
    step, at_once = _incremental_and_fresh(tmp_path, FIRST, corrected, ScoringOptions(), conflicts="latest")
    assert step["kept"].sum() == 1  # the corrected task now duplicates the other one
    assert step.equals(at_once)


def test_the_same_when_the_table_is_scored_whole(tmp_path: Path) -> None:
    # Other scoring options: the scored table is made whole, still with the cache in force.
    corrected = [msg("t2", "u2", "user", CSV, 10)]
    other = ScoringOptions(rating_min=0.0, rating_max=10.0)
    step, at_once = _incremental_and_fresh(tmp_path, FIRST, corrected, other, conflicts="latest")
    assert step["kept"].sum() == 1
    assert step.equals(at_once)


def test_an_earlier_exchange_that_arrives_later_as_a_follow_ups_context(tmp_path: Path) -> None:
    first = [
        msg("t1", "u1", "user", "how do I deploy kubernetes on bare metal with ansible", 0),
        msg("t1", "a1", "assistant", "use kubespray", 5),
        msg("t1", "u2", "user", "and make it faster", 100),
        msg("t1", "a2", "assistant", "tune it", 105),
        msg("t2", "v1", "user", "write a json parser", 0),
        msg("t2", "b1", "assistant", "import json", 5),
        msg("t2", "v2", "user", "and make it faster", 100),
        msg("t2", "b2", "assistant", "tune it", 105),
    ]
    late = [
        msg("t1", "u9", "user", "write a json parser", 50),
        msg("t1", "a9", "assistant", "import json", 55),
    ]
    pairing = PairingOptions(task_context="previous")
    step, at_once = _incremental_and_fresh(tmp_path, first, late, ScoringOptions(), pairing=pairing)
    # t1's follow-up now reads exactly like t2's, and t1's new exchange like t2's first one.
    assert step.height == 5 and step["kept"].sum() == 3
    assert step.equals(at_once)
