"""Which copy of a message is first is decided by ingest order (the manifest's ``seq``, the dumps' path
order), never by the order of dump ids, which end in a hash: monthly folders holding one file name."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from pipelines.ingest.catalog import read_manifest, read_scopes
from pipelines.ingest.messages import stage_messages
from pipelines.ingest.staging import ingest
from pipelines.scopes import ScopeMapping
from pipelines.tables import DataLayout, parquet_files
from tests.conftest import msg, write_ndjson

MONTHS = [f"2024-{m:02d}" for m in range(1, 9)]


@pytest.mark.parametrize(("policy", "winner"), [("first", MONTHS[0]), ("latest", MONTHS[-1])])
def test_copies_of_one_message_are_settled_in_ingest_order(
    layout: DataLayout, landing: Path, policy: str, winner: str
) -> None:
    # Eight dumps named alike: their hashed ids come in ingest order only once in 40,320 draws.
    for month in MONTHS:
        write_ndjson(landing / month / "export.ndjson", [msg("t1", "m1", "user", f"text of {month}", 0)])
    ingest(layout, landing, ScopeMapping())
    manifest = read_manifest(layout).sort("seq")
    assert [Path(f).parent.name for f in manifest["file"].to_list()] == MONTHS

    [scope] = read_scopes(layout)["scope"].to_list()
    stage_messages(layout, scope, policy)  # type: ignore[arg-type]
    staged = pl.read_parquet(parquet_files(layout.messages(scope)))
    assert staged["text"].to_list() == [f"text of {winner}"]
