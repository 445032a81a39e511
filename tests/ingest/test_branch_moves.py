"""A re-export that moves a message to another branch of its conversation (an answer regenerated, or the
user going back to an older version) moves it in the staged messages too: the later export's branch wins,
and pairing follows it, exactly as when both exports are given at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from pipelines.ingest.catalog import read_scopes
from pipelines.ingest.messages import scan_messages
from pipelines.pairing.batches import current
from pipelines.runner import backfill
from pipelines.tables import DataLayout
from tests.conftest import T0


def _node(
    mid: str, role: str, text: str, at: float | None, parent: str, children: list[str]
) -> dict[str, Any]:
    return {
        "id": mid,
        "parent": parent,
        "children": children,
        "message": {
            "id": mid,
            "author": {"role": role, "name": None, "metadata": {}},
            "create_time": at,
            "content": {"content_type": "text", "parts": [text]},
            "status": "finished_successfully",
            "end_turn": True,
            "weight": 1.0,
            "metadata": {"model_slug": "gpt-4o"} if role == "assistant" else {},
            "recipient": "all",
        },
    }


def _export(folder: Path, answers: list[str], current_node: str) -> Path:
    """One conversation: a question answered by each of ``answers`` (regenerations, 50 s apart)."""
    mapping = {
        "root": {"id": "root", "message": None, "parent": None, "children": ["q1"]},
        "q1": _node("q1", "user", "Build a CSV parser", T0 + 1, "root", answers),
    }
    for i, mid in enumerate(answers):
        mapping[mid] = _node(mid, "assistant", f"Answer {mid}", T0 + 2 + 50 * i, "q1", [])
    conversation = {
        "id": "conv-1",
        "title": "t",
        "create_time": T0,
        "update_time": T0 + 100,
        "mapping": mapping,
        "current_node": current_node,
        "default_model_slug": "gpt-4o",
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "conversations.json"
    path.write_text(json.dumps([conversation]))
    return path


def _state(layout: DataLayout) -> tuple[dict[str, str], set[tuple[str, str]], dict[str, str]]:
    """Each message's branch, the (task, code) pairs, and each unpaired message's reason."""
    [scope] = read_scopes(layout)["scope"].to_list()
    branches = dict(scan_messages(layout, scope).select("message_id", "branch").collect().iter_rows())
    patterns = current(layout, "patterns", scope)
    pairs = set(patterns.select("task", "code").collect().iter_rows()) if patterns is not None else set()
    unpaired = current(layout, "unpaired", scope)
    reasons = (
        dict(unpaired.select("message_id", "reason").collect().iter_rows()) if unpaired is not None else {}
    )
    return branches, pairs, reasons


# (answers of the first export, its current node), then the same for the second.
MOVES = {
    "regenerated": ((["a1"], "a1"), (["a1", "a2"], "a2")),
    "moved back": ((["a1", "a2"], "a2"), (["a1", "a2"], "a1")),
}


@pytest.mark.parametrize("move", MOVES)
def test_a_later_export_moves_a_message_between_branches(tmp_path: Path, move: str) -> None:
    (first, first_node), (second, second_node) = MOVES[move]
    landing = tmp_path / "landing"
    layout = DataLayout.at(tmp_path / "data")
    _export(landing / "a", first, first_node)
    backfill(layout, landing, load=False)
    _export(landing / "b", second, second_node)
    backfill(layout, landing, load=False)
    branches, pairs, reasons = _state(layout)

    assert branches == {
        "q1": "current",
        **{a: "current" if a == second_node else "abandoned" for a in second},
    }
    assert pairs == {("Build a CSV parser", f"Answer {second_node}")}
    assert {m: r for m, r in reasons.items() if m != second_node} == {
        a: "abandoned branch" for a in second if a != second_node
    }
    # Each earlier copy whose branch changed is quarantined, pointing at the copy that moved it.
    before = {a: "current" if a == first_node else "abandoned" for a in first}
    [scope] = read_scopes(layout)["scope"].to_list()
    gone = pl.read_parquet(layout.quarantine() / f"scope={scope}-dump=*-superseded.parquet")
    assert sorted(gone["message_id"]) == sorted(a for a in first if before[a] != branches[a])
    assert all(" moved to the " in r and " branch by a later copy (kept: dump " in r for r in gone["reason"])

    # Given both exports at once, the same messages, pairs and reasons.
    fresh = DataLayout.at(tmp_path / "fresh")
    backfill(fresh, landing, load=False)
    assert _state(fresh) == (branches, pairs, reasons)
