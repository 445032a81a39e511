"""Shared fixtures: temporary data directories and small hand-written exports."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from pipelines.tables import DataLayout

# The real Engramia server and the staged data folders it loads, a real PostgreSQL server and a Dagster
# instance on it, an S3-compatible server, for every test module that asks.
pytest_plugins = [
    "tests.support.engramia_server",
    "tests.support.postgres_server",
    "tests.support.postgres_instance",
    "tests.support.s3_server",
]

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
T0 = 1_717_200_000


def msg(thread: str, mid: str, role: str, text: str, at: int, assistant: str = "asst_1") -> dict:
    return {
        "thread_id": thread,
        "assistant_id": assistant,
        "message_id": mid,
        "role": role,
        "text": text,
        "created_at": T0 + at,
    }


def write_ndjson(path: Path, rows: list[dict | str]) -> Path:
    """Rows are dicts (serialised) or raw strings (written as they are, for broken lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)) + "\n")
    return path


def staged_raw(layout: DataLayout) -> pl.DataFrame:
    """Every staged row of the data directory, with its hive columns, in line order."""
    return pl.read_parquet(layout.raw() / "**" / "*.parquet", hive_partitioning=True).sort("line_no")


def staged_quarantine(layout: DataLayout) -> pl.DataFrame:
    """Every quarantined row of the data directory, in line order."""
    return pl.read_parquet(layout.quarantine() / "*.parquet").sort("line_no")


@pytest.fixture
def layout(tmp_path: Path) -> DataLayout:
    return DataLayout.at(tmp_path / "data")


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    path = tmp_path / "landing"
    path.mkdir()
    return path


@pytest.fixture
def dump(landing: Path) -> Callable[[str, list], Path]:
    def _write(name: str, rows: list) -> Path:
        return write_ndjson(landing / name, rows)

    return _write


@pytest.fixture
def sample_dir() -> Path:
    return SAMPLE


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A Dagster instance of its own per test (runs, partitions, check results, sensor cursors)."""
    with dg.instance_for_test() as inst:
        yield inst
