"""The status of a data directory, on the staged demo sample: exact figures that add up, what is pending
at each stage, and a data directory left exactly as it was."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pipelines.ingest.catalog import read_scopes
from pipelines.ingest.messages import stage_messages
from pipelines.ingest.staging import ingest
from pipelines.load.embedded import load_embedded
from pipelines.load.plan import save_load_result
from pipelines.pairing.batches import current, pair_scope
from pipelines.pairing.pairs import PairingOptions
from pipelines.quality.status import NothingStaged, backfill_status, current_rows
from pipelines.scopes import ScopeBy, ScopeMapping
from pipelines.scoring.options import ScoringOptions
from pipelines.scoring.scores import score_scope
from pipelines.tables import DataLayout
from tests.conftest import msg, write_ndjson

# scope: (lines_in, messages, quarantined, repeats, patterns, unpaired, kept, duplicates), as the run reports
EXPECTED = {
    "default__asst_analyst": (8, 7, 0, 1, 3, 1, 3, 0),
    "default__asst_coder": (13, 13, 0, 0, 5, 1, 5, 0),
    "default__asst_support": (9, 9, 0, 0, 3, 3, 2, 1),
}


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder below ``root`` with its size and mtime."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            st = os.stat(os.path.join(folder, name))
            out[os.path.relpath(os.path.join(folder, name), root)] = (st.st_size, st.st_mtime_ns)
    return out


def figures(s) -> tuple[int, ...]:
    return (s.lines_in, s.messages, s.quarantined, s.repeats, s.patterns, s.unpaired, s.kept, s.duplicates)


def load(layout: DataLayout, scope: str, tenant_id: str, project_id: str) -> None:
    """An embedded load with its figures recorded, as the engramia_scopes asset does."""
    result = load_embedded(layout, scope, tenant_id, project_id)
    assert result.error is None
    save_load_result(layout, result, f"test-{time.monotonic_ns()}")


def load_all(layout: DataLayout) -> None:
    for scope, tenant_id, project_id in read_scopes(layout).iter_rows():
        load(layout, scope, tenant_id, project_id)


def test_staged_then_loaded(staged):
    layout = staged("assistant")
    status = backfill_status(layout.root)
    assert {s.scope: figures(s) for s in status.scopes} == EXPECTED
    assert status.dumps == 2 and status.lines == 31 and status.unscoped_quarantined == 1
    assert status.lines == status.unscoped_quarantined + sum(s.lines_in for s in status.scopes)
    for s in status.scopes:
        assert s.lines_reconcile and s.scored_in_step
        assert s.patterns == s.kept + s.duplicates
        assert not s.pending_dumps and not s.unpaired_dumps
        # Nothing loaded yet: everything kept is pending, nowhere loaded, not up to date.
        assert s.destinations == [] and s.pending_load == s.kept and not s.up_to_date
        assert s.last_load is None and s.last_ingest_at is not None

    load_all(layout)
    status = backfill_status(layout.root)
    store = f"embedded:{layout.engramia}"
    for s in status.scopes:
        (dest,) = s.destinations
        assert dest.destination == store
        assert (dest.loaded, dest.pending, dest.to_retract) == (s.kept, 0, 0)
        assert s.last_load is not None and s.last_load.stored == s.kept and s.last_load.error is None
        assert s.up_to_date and s.pending_load == 0
        assert s.last_run_at >= s.last_load.at
    assert status.last_run_at == max(s.last_run_at for s in status.scopes)


def test_writes_nothing(staged):
    layout = staged("assistant")
    load_all(layout)
    before = tree(layout.root)
    backfill_status(layout.root).as_dict()
    assert tree(layout.root) == before


def test_empty_or_missing_data_dir(tmp_path):
    with pytest.raises(NothingStaged, match="nothing staged"):
        backfill_status(tmp_path)
    missing = tmp_path / "not-there"
    with pytest.raises(NothingStaged):
        backfill_status(missing)
    assert not missing.exists()
    assert list(tmp_path.iterdir()) == []


def test_pending_at_each_stage(staged, tmp_path):
    """A new dump: pending for the messages stage once ingested, then for pairing, then for scoring and
    loading; the lines still add up at every step."""
    layout = staged("assistant")
    load_all(layout)
    rows = [
        msg("thread_abc", "m_new_1", "user", "Parse a TSV file too", 900, "asst_coder"),
        msg("thread_abc", "m_new_2", "assistant", "import csv  # delimiter='\\t'", 901, "asst_coder"),
    ]
    landing = write_ndjson(tmp_path / "more" / "later.ndjson", rows)
    ingest(layout, landing, ScopeMapping(scope_by=ScopeBy.ASSISTANT), 1 << 20, lambda _m: None)
    coder = "default__asst_coder"

    def scope_status():
        return next(s for s in backfill_status(layout.root).scopes if s.scope == coder)

    s = scope_status()
    assert len(s.pending_dumps) == 1 and s.pending_rows == 2
    assert s.lines_in == 15 and s.lines_reconcile and not s.up_to_date

    stage_messages(layout, coder)
    s = scope_status()
    assert s.pending_dumps == [] and s.pending_rows == 0 and s.messages == 15 and s.lines_reconcile
    assert len(s.unpaired_dumps) == 1

    pair_scope(layout, coder, PairingOptions())
    s = scope_status()
    # Thread abc was paired again in batch 2: the current rows come from two batches now.
    assert s.unpaired_dumps == [] and s.patterns == 6 and not s.scored_in_step

    score_scope(layout, coder, ScoringOptions())
    s = scope_status()
    assert s.scored_in_step and s.kept == 6 and s.pending_load == 1 and not s.up_to_date

    load(layout, coder, "default", "asst_coder")
    s = scope_status()
    assert s.up_to_date and s.destinations[0].loaded == 6 and s.pending_load == 0


def test_current_rows_match_current(staged, tmp_path):
    """The footer count equals pipelines.pairing.batches.current over one batch and over several."""
    layout = staged("assistant")
    for scope in read_scopes(layout)["scope"]:
        for table in ("patterns", "unpaired"):
            rows = current(layout, table, scope)
            assert current_rows(layout, table, scope) == rows.collect().height
    landing = write_ndjson(
        tmp_path / "more.ndjson",
        [msg("thread_abc", "m_x", "user", "and JSON?", 950, "asst_coder")],
    )
    ingest(layout, landing, ScopeMapping(scope_by=ScopeBy.ASSISTANT), 1 << 20, lambda _m: None)
    stage_messages(layout, "default__asst_coder")
    pair_scope(layout, "default__asst_coder", PairingOptions())
    for table in ("patterns", "unpaired"):
        rows = current(layout, table, "default__asst_coder")
        assert current_rows(layout, table, "default__asst_coder") == rows.collect().height


def test_landing_dumps_not_ingested(staged):
    layout = staged("single")
    landing = layout.landing
    write_ndjson(landing / "next.ndjson", [msg("t9", "m9", "user", "hi", 1)])
    status = backfill_status(layout.root)
    assert [Path(d.file).name for d in status.landing_pending] == ["next.ndjson"]
