"""ShareGPT: a thread per conversation (its id, else a derived one), ``from`` mapped to roles (human/gpt,
user/assistant, chatgpt, bard, bing), list order without times; pairs like the guide's NDJSON."""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.ingest.formats import detect_head
from pipelines.ingest.formats.base import ReaderOptions, using_reader_options
from pipelines.ingest.formats.sharegpt import DEFAULT_ASSISTANT
from tests.ingest.chat_support import (
    assert_reconciles,
    cli_run,
    guide_pairs,
    pairs_per_thread,
    quarantine_reasons,
    records,
    run_shape,
)

TURNS = [
    {"from": "system", "value": "Be kind."},
    {"from": "human", "value": "q1"},
    {"from": "bard", "value": "a1"},
    {"from": "USER", "value": "q2"},
    {"from": "bing", "value": "a2"},
    {"from": "narrator", "value": "?"},
]


def test_roles_ids_and_order() -> None:
    recs = records("sharegpt", [{"id": 7, "conversations": TURNS}, {"conversations": TURNS[:2]}])
    assert [r["role"] for r in recs[:6]] == ["system", "user", "assistant", "user", "assistant", "narrator"]
    assert [r["message_id"] for r in recs[:2]] == ["7:1", "7:2"]
    assert recs[0]["position"] == "$[0].conversations[0]"
    derived = recs[6]["thread_id"]
    assert derived.startswith("sg_") and recs[7]["message_id"] == f"{derived}:2"
    assert [r["order"] for r in recs] == list(range(1, 9))
    assert {r["assistant_id"] for r in recs} == {DEFAULT_ASSISTANT}
    with using_reader_options(ReaderOptions(assistant_name="vicuna")):
        assert {r["assistant_id"] for r in records("sharegpt", [{"id": "a", "conversations": TURNS}])} == {
            "vicuna"
        }


def test_lines_and_bad_values() -> None:
    data = (json.dumps({"id": "a", "conversations": TURNS[1:3]}) + "\n{}\n[1]\n").encode()
    recs = records("sharegpt", data, "s.jsonl")
    assert [r.get("quarantine") for r in recs] == [
        None,
        None,
        "not a ShareGPT conversation (no conversations list)",
        "not a JSON object",
    ]
    assert recs[0]["position"] == "line 1.conversations[0]"


def test_detection() -> None:
    assert detect_head(json.dumps([{"id": "1", "conversations": TURNS}]).encode(), "sg.json") == "sharegpt"
    lines = json.dumps({"id": "1", "conversations": TURNS}).encode()
    assert detect_head(lines, "sg.jsonl") == "sharegpt"


def test_same_pairs_as_the_guide_and_counts_reconcile(tmp_path: Path) -> None:
    layout = run_shape(tmp_path / "sg", "sharegpt")
    assert pairs_per_thread(layout) == guide_pairs(tmp_path / "guide")
    manifest = assert_reconciles(layout)
    assert manifest.select("format", "lines", "staged", "quarantined").rows() == [("sharegpt", 13, 13, 0)]
    assert quarantine_reasons(layout) == {}


def test_unknown_speakers_are_quarantined(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "sg.json").write_text(json.dumps([{"id": "a", "conversations": TURNS}]))
    from pipelines.runner import backfill
    from pipelines.tables import DataLayout

    layout = DataLayout.at(tmp_path / "data")
    backfill(layout, tmp_path / "in", load=False)
    assert quarantine_reasons(layout) == {"unknown role: narrator": 1}


def test_cli_run(tmp_path: Path) -> None:
    summary = cli_run(tmp_path, "sharegpt")
    assert summary["ok"] and summary["exit_code"] == 0, summary
    assert set(summary["scopes"]) == {f"default__{DEFAULT_ASSISTANT}"}
    assert summary["scopes"][f"default__{DEFAULT_ASSISTANT}"]["patterns"] == 4
