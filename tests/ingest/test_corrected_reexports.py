"""``conflicts="latest"``: a corrected re-export replaces the message it corrects, the replaced copy is
quarantined as superseded, the thread is paired again, and every count still reconciles."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from pipelines.ingest.catalog import read_scopes
from pipelines.ingest.messages import MessageStats, scan_messages, stage_messages, superseded_file
from pipelines.ingest.staging import ingest
from pipelines.pairing.batches import current, pair_scope
from pipelines.pairing.pairs import PairingOptions
from pipelines.quality.reconcile import scope_counts
from pipelines.scopes import ScopeMapping
from pipelines.tables import DataLayout
from tests.conftest import msg, staged_quarantine

Q = msg("t", "m1", "user", "Build a CSV parser", 0)
A = msg("t", "m2", "assistant", "import csv", 5)
FIXED = {**A, "text": "import csv\nreader = csv.DictReader(f)"}


def _stage(layout: DataLayout, landing: Path, conflicts: str = "latest") -> tuple[str, list[MessageStats]]:
    ingest(layout, landing, ScopeMapping())
    [scope] = read_scopes(layout)["scope"].to_list()
    return scope, stage_messages(layout, scope, conflicts)  # type: ignore[arg-type]


def _texts(layout: DataLayout, scope: str) -> dict[str, str]:
    return dict(scan_messages(layout, scope).select("message_id", "text").collect().iter_rows())


def _reconciles(layout: DataLayout, scope: str) -> None:
    counts = scope_counts(layout, scope)
    assert counts.lines_reconcile, counts
    assert counts.messages_reconcile, counts


def test_a_later_dump_corrects_a_message(layout, dump, landing):
    dump("a.ndjson", [Q, A])
    scope, _ = _stage(layout, landing)
    pair_scope(layout, scope, PairingOptions())
    dump("b.ndjson", [FIXED])
    _, [stats] = _stage(layout, landing)
    assert (stats.messages, stats.repeats, stats.conflicts, stats.superseded) == (1, 0, 0, 1)
    assert _texts(layout, scope) == {"m1": Q["text"], "m2": FIXED["text"]}
    [gone] = staged_quarantine(layout).filter(pl.col("stage") == "messages").to_dicts()
    # The copy quarantined is the earlier one, with its own dump, line and file.
    assert (gone["message_id"], gone["line_no"], Path(gone["file"]).name) == ("m2", 2, "a.ndjson")
    assert "superseded by a later copy" in gone["reason"] and "line 1)" in gone["reason"]
    assert '"import csv"' in gone["raw_text"]
    # The thread is paired again with the corrected answer.
    result = pair_scope(layout, scope, PairingOptions())
    assert result.threads == 1
    assert current(layout, "patterns", scope).collect()["code"].to_list() == [FIXED["text"]]
    _reconciles(layout, scope)


def test_first_stays_the_default(layout, dump, landing):
    dump("a.ndjson", [Q, A])
    dump("b.ndjson", [FIXED])
    ingest(layout, landing, ScopeMapping())
    [scope] = read_scopes(layout)["scope"].to_list()
    stats = stage_messages(layout, scope)
    assert [(s.conflicts, s.superseded) for s in stats] == [(0, 0), (1, 0)]
    assert _texts(layout, scope)["m2"] == A["text"]
    [kept_out] = staged_quarantine(layout).filter(pl.col("stage") == "messages").to_dicts()
    assert Path(kept_out["file"]).name == "b.ndjson" and "already staged" in kept_out["reason"]
    pair_scope(layout, scope, PairingOptions())
    _reconciles(layout, scope)


def test_the_latest_copy_wins_within_a_dump_and_repeats_still_collapse(layout, dump, landing):
    dump("a.ndjson", [Q, A])
    dump("b.ndjson", [{**A, "text": "draft"}, FIXED, FIXED, Q])
    scope, stats = _stage(layout, landing)
    assert [(s.messages, s.repeats, s.conflicts, s.superseded) for s in stats] == [(2, 0, 0, 0), (1, 2, 1, 1)]
    assert _texts(layout, scope)["m2"] == FIXED["text"]
    reasons = staged_quarantine(layout).filter(pl.col("stage") == "messages")["reason"].to_list()
    assert len(reasons) == 2 and all("superseded" in r for r in reasons)
    pair_scope(layout, scope, PairingOptions())
    _reconciles(layout, scope)


def test_a_repeat_of_the_message_changes_nothing(layout, dump, landing):
    dump("a.ndjson", [Q, A])
    dump("b.ndjson", [A, {**A, "text": "draft"}, A])
    scope, stats = _stage(layout, landing)
    # The winning content is the original's: the earlier message stays where it is.
    assert [(s.messages, s.repeats, s.conflicts, s.superseded) for s in stats] == [(2, 0, 0, 0), (0, 2, 1, 0)]
    assert _texts(layout, scope)["m2"] == A["text"]
    assert not superseded_file(layout, scope, stats[1].dump_id).exists()


def test_a_copy_moved_to_another_thread_repairs_both_threads(layout, dump, landing):
    dump("a.ndjson", [Q, A])
    scope, _ = _stage(layout, landing)
    pair_scope(layout, scope, PairingOptions())
    dump("b.ndjson", [{**FIXED, "thread_id": "t2"}])
    _stage(layout, landing)
    result = pair_scope(layout, scope, PairingOptions())
    assert result.threads == 2
    assert current(layout, "patterns", scope).collect().height == 0
    unpaired = current(layout, "unpaired", scope).collect()
    assert sorted(unpaired["message_id"].to_list()) == ["m1", "m2"]
    _reconciles(layout, scope)


def test_a_run_stopped_before_the_earlier_file_was_rewritten_is_finished_next_time(layout, dump, landing):
    dump("a.ndjson", [Q, A])
    scope, [first] = _stage(layout, landing)
    earlier = layout.messages(scope) / f"dump={first.dump_id}.parquet"
    before = earlier.with_name("before.bak")
    shutil.copyfile(earlier, before)
    dump("b.ndjson", [FIXED])
    _stage(layout, landing)
    # As if the process died after the dump's stats, before the superseded copy left its file.
    shutil.move(before, earlier)
    assert sorted(scan_messages(layout, scope).collect()["message_id"].to_list()) == ["m1", "m2", "m2"]
    assert stage_messages(layout, scope, "latest") == []
    assert _texts(layout, scope) == {"m1": Q["text"], "m2": FIXED["text"]}
    pair_scope(layout, scope, PairingOptions())
    _reconciles(layout, scope)


def test_an_unknown_policy_is_refused(layout, dump, landing):
    dump("a.ndjson", [Q])
    ingest(layout, landing, ScopeMapping())
    [scope] = read_scopes(layout)["scope"].to_list()
    with pytest.raises(ValueError, match="first, latest"):
        stage_messages(layout, scope, "last")  # type: ignore[arg-type]
