"""plan's estimate of pending dumps in every shape: plain guide NDJSON is scanned as lines; compressed,
zipped and Assistants API dumps are read through their reader and counted in records, which match what
the ingest then stages; a dump whose format cannot be detected is listed, not estimated, with a note."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.quality.capacity import EmbeddedTarget
from pipelines.quality.run_plan import plan_run
from pipelines.quality.status import backfill_status
from pipelines.runner import backfill
from pipelines.scopes import ScopeMapping
from pipelines.tables import DataLayout
from pipelines.tools import shapes

MESSAGES = sum(len(c.messages) for c in shapes.conversations())


def _plan(tmp_path: Path, fmt: str | None = None):
    data = tmp_path / "data"
    return plan_run(data, tmp_path / "in", ScopeMapping(), EmbeddedTarget(data / "engramia"), fmt=fmt)


@pytest.mark.parametrize(
    "shape",
    ["guide-ndjson", "guide-tolerant", "assistants-jsonl", "assistants-array-desc", "assistants-pages-desc"],
)
def test_estimates_match_the_ingest(tmp_path: Path, shape: str) -> None:
    shapes.write_shape(shape, tmp_path / "in")
    plan = _plan(tmp_path)
    assert not (tmp_path / "data").exists()
    plain = shape.startswith("guide")
    for d in plan.pending_dumps:
        assert d.format == ("guide-ndjson" if plain else "assistants-api")
        assert d.unit == ("lines" if plain else "records")
    assert sum(d.lines for d in plan.pending_dumps) == MESSAGES
    assert plan.unscoped_lines == 0
    assert any("through their format's reader" in n for n in plan.notes) is not plain

    layout = DataLayout.at(tmp_path / "data")
    backfill(layout, tmp_path / "in", load=False)
    truth = {s.scope: s for s in backfill_status(layout.root).scopes}
    assert {s.scope: s.lines_to_ingest for s in plan.scopes} == {k: s.lines_in for k, s in truth.items()}
    # Every user -> assistant exchange of the conversations is a pattern once staged.
    assert {s.scope: s.new_patterns for s in plan.scopes} == {k: s.patterns for k, s in truth.items()}


def test_compressed_and_zipped_dumps_are_read_through_their_reader(tmp_path: Path) -> None:
    shapes.write_shape("compressed", tmp_path / "in")
    plan = _plan(tmp_path)
    by_name = {Path(d.file).name: d for d in plan.pending_dumps}
    assert by_name["guide.ndjson.gz"].format == "guide-ndjson"
    assert by_name["messages.jsonl.zst"].format == "assistants-api"
    members = [d for d in plan.pending_dumps if "pages.zip!pages/" in d.file]
    assert len(members) == len(plan.pending_dumps) - 2 and members
    assert {d.unit for d in plan.pending_dumps} == {"records"}
    # The same conversations three times: every record of every dump reaches a scope.
    assert sum(d.lines for d in plan.pending_dumps) == 3 * MESSAGES
    assert sum(s.lines_to_ingest for s in plan.scopes) == 3 * MESSAGES


def test_an_undetected_format_is_not_estimated(tmp_path: Path) -> None:
    shapes.write_shape("guide-ndjson", tmp_path / "in")
    odd = tmp_path / "in" / "odd.json"
    odd.write_text('{"hello": 1}\n')
    plan = _plan(tmp_path)
    [d] = [d for d in plan.pending_dumps if d.file == str(odd.resolve())]
    assert (d.format, d.unit, d.lines, d.lines_per_scope) == (None, "not estimated", 0, {})
    assert any(n.startswith("not estimated: ") and str(odd.resolve()) in n for n in plan.notes)
    assert sum(s.lines_to_ingest for s in plan.scopes) == MESSAGES
    # Forced, the file is read as that shape (its one value is no message: it reaches no scope).
    forced = _plan(tmp_path, fmt="assistants-api")
    assert {d.format for d in forced.pending_dumps} == {"assistants-api"}
