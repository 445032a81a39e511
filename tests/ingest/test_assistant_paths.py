"""The assistant of a message that names none is found whatever the data folder is called."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from pipelines.ingest.staging import ingest
from pipelines.scopes import ScopeMapping
from pipelines.tables import DataLayout
from tests.conftest import T0, staged_raw


def _message(mid: str, role: str, at: int, assistant: str | None) -> dict:
    return {
        "id": mid,
        "object": "thread.message",
        "created_at": T0 + at,
        "thread_id": "thread_1",
        "role": role,
        "assistant_id": assistant,
        "run_id": None,
        "content": [{"type": "text", "text": {"value": f"text of {mid}", "annotations": []}}],
    }


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_quotes_in_the_data_folder(tmp_path: Path) -> None:
    # Both lookups read Parquet files under the data folder: the same dump's, and earlier dumps'.
    layout = DataLayout.at(tmp_path / "o'brien's \"data\"")
    landing = tmp_path / "in"
    _write(landing / "1.jsonl", [_message("m1", "user", 0, None), _message("m2", "assistant", 1, "asst_1")])
    ingest(layout, landing, ScopeMapping())
    # A later question whose thread's assistant is known only from the dump before.
    _write(landing / "2.jsonl", [_message("m3", "user", 2, None)])
    ingest(layout, landing, ScopeMapping())
    raw = staged_raw(layout)
    assert dict(raw.select("message_id", "assistant_id").iter_rows()) == {
        "m1": "asst_1",
        "m2": "asst_1",
        "m3": "asst_1",
    }
    quarantine = list(layout.quarantine().glob("*.parquet"))
    assert not quarantine or pl.read_parquet(quarantine).height == 0
