"""Records of a reader -> batches of guide-shaped lines for the classification, plus their metadata.

Every shape but the guide's NDJSON is read by its reader (:mod:`pipelines.ingest.formats`) in Python.
Its records are written as guide-shaped JSON lines and judged by the same DuckDB query as the guide's
lines (:mod:`pipelines.ingest.classify`), so a record of any shape is validated, typed and scoped by one
set of rules. ``line_no`` of such a record is its order key (``order``, by default its index in the
file, negative in newest-first sources), which is what pairing orders ties by; where the record is in
its file (``position``), its ``run_id``, branch and part counts go to the dump's record table
(``staged/records/dump=<id>.parquet``, :data:`pipelines.tables.RECORDS_SCHEMA`), one row per record.

Invariant: each record becomes exactly one line of exactly one batch, and one row of the record table;
a record whose ``order`` repeats one seen before in the file is quarantined (``line_no`` identifies a
row of a dump), never dropped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import BinaryIO

import polars as pl

from pipelines.ingest.formats.base import Record
from pipelines.tables import RECORDS_SCHEMA

BATCH_RECORDS = 20_000
_PART_KEYS = ("images", "files", "attachments", "annotations", "other")


class HashingReader:
    """A binary stream that hashes what is read through it (the dump's sha256 in the manifest)."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.sha = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.sha.update(data)
        return data

    def readline(self, limit: int = -1) -> bytes:
        data = self.stream.readline(limit)
        self.sha.update(data)
        return data

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


# The fields a reader's record has in common with a guide line, in the classification's order.
CORE_FIELDS = ("thread_id", "assistant_id", "message_id", "role", "text")
_LINE_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "line_no": pl.Int64,
    "line": pl.String,
    "forced": pl.String,
    "raw": pl.String,
    "typed": pl.Boolean,
    "branch": pl.String,
    **{f"c_{name}": pl.String for name in CORE_FIELDS},
    "c_created_at": pl.Float64,
}


class _Batch:
    """Up to :data:`BATCH_RECORDS` records, column by column.

    A record whose fields have the guide's types (strings or null, a number for ``created_at``: every
    record a reader builds from a well-formed source) goes over as typed columns, which the
    classification reads as they are; any other record is encoded as a guide line and judged like one.
    Encoding every record as JSON only for DuckDB to parse it again cost most of a ChatGPT export's
    ingest time.
    """

    def __init__(self) -> None:
        self.columns: dict[str, list[object]] = {name: [] for name in _LINE_SCHEMA}
        self.meta: dict[str, list[object]] = {name: [] for name in RECORDS_SCHEMA if name != "dump_id"}

    def __len__(self) -> int:
        return len(self.columns["line_no"])

    def add(self, order: int, rec: Record, forced: str | None) -> None:
        cols = self.columns
        values = [rec.get(name) for name in CORE_FIELDS]
        created = rec.get("created_at")
        timed = created is not None
        if created is None:
            # Only the order is known: a fixed time keeps the row valid and the order key decides.
            created = 0
        typed = all(v is None or type(v) is str for v in values) and type(created) in (int, float)
        cols["line_no"].append(order)
        cols["forced"].append(forced)
        cols["raw"].append(rec.get("raw"))
        cols["typed"].append(typed)
        cols["branch"].append(rec.get("branch", "current"))
        if typed:
            cols["line"].append(None)
            for name, value in zip(CORE_FIELDS, values, strict=True):
                cols[f"c_{name}"].append(value)
            cols["c_created_at"].append(float(created))  # type: ignore[arg-type]
        else:
            core = dict(zip(CORE_FIELDS, values, strict=True)) | {"created_at": created}
            cols["line"].append(json.dumps(core, ensure_ascii=False))
            for name in CORE_FIELDS:
                cols[f"c_{name}"].append(None)
            cols["c_created_at"].append(None)
        meta = self.meta
        parts = rec.get("parts") or {}
        message_id, run_id = values[2], rec.get("run_id")
        meta["line_no"].append(order)
        meta["position"].append(rec["position"])
        meta["message_id"].append(message_id if isinstance(message_id, str) else None)
        meta["run_id"].append(run_id if isinstance(run_id, str) else None)
        meta["branch"].append(rec.get("branch", "current"))
        meta["timed"].append(timed)
        for key in _PART_KEYS:
            meta[key].append(int(parts.get(key, 0)))

    def frames(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        lines = pl.DataFrame(self.columns, schema=_LINE_SCHEMA).with_columns(bad_utf8=pl.lit(False))
        meta_schema = {k: v for k, v in RECORDS_SCHEMA.items() if k != "dump_id"}
        return lines, pl.DataFrame(self.meta, schema=meta_schema)


def record_batches(records: Iterator[Record]) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """``(lines, metadata)`` frames of up to :data:`BATCH_RECORDS` records: ``lines`` is the
    classification's input (``line_no``, ``forced``, ``raw``, ``bad_utf8``, and either the typed
    fields ``c_*`` or a guide-shaped ``line``), ``metadata`` the record table's rows."""
    seen: set[int] = set()
    batch = _Batch()
    for index, rec in enumerate(records, start=1):
        order = rec.get("order", index)
        forced = rec.get("quarantine")
        if order in seen:
            forced = forced or f"order {order} repeats an earlier record's"
            order = index if index not in seen else -(10**15) - index
        seen.add(order)
        batch.add(order, rec, forced)
        if len(batch) >= BATCH_RECORDS:
            yield batch.frames()
            batch = _Batch()
    if len(batch):
        yield batch.frames()
