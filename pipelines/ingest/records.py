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
REASON_ABANDONED = "abandoned branch"
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


def record_batches(records: Iterator[Record]) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """``(lines, metadata)`` frames of up to :data:`BATCH_RECORDS` records: ``lines`` has ``line_no``,
    ``line``, ``bad_utf8``, ``forced`` and ``raw`` (the classification's input), ``metadata`` the record
    table's rows."""
    seen: set[int] = set()
    lines: list[dict[str, object]] = []
    meta: list[dict[str, object]] = []
    for index, rec in enumerate(records, start=1):
        order = rec.get("order", index)
        forced = rec.get("quarantine")
        if not forced and rec.get("branch") == "abandoned":
            forced = REASON_ABANDONED
        if order in seen:
            forced = forced or f"order {order} repeats an earlier record's"
            order = index if index not in seen else -(10**15) - index
        seen.add(order)
        core = {
            "thread_id": rec.get("thread_id"),
            "assistant_id": rec.get("assistant_id"),
            "message_id": rec.get("message_id"),
            "role": rec.get("role"),
            "text": rec.get("text"),
            "created_at": rec.get("created_at"),
        }
        if core["created_at"] is None:
            # Only the order is known: a fixed time keeps the row valid and the order key decides.
            core["created_at"] = 0
        line = json.dumps(core, ensure_ascii=False)
        lines.append({"line_no": order, "line": line, "forced": forced, "raw": rec.get("raw")})
        parts = rec.get("parts") or {}
        meta.append(
            {
                "dump_id": "",
                "line_no": order,
                "position": rec["position"],
                "message_id": rec.get("message_id") if isinstance(rec.get("message_id"), str) else None,
                "run_id": rec.get("run_id") if isinstance(rec.get("run_id"), str) else None,
                "branch": rec.get("branch", "current"),
                "timed": rec.get("created_at") is not None,
                **{k: int(parts.get(k, 0)) for k in _PART_KEYS},
            }
        )
        if len(lines) >= BATCH_RECORDS:
            yield _frames(lines, meta)
            lines, meta = [], []
    if lines:
        yield _frames(lines, meta)


def _frames(
    lines: list[dict[str, object]], meta: list[dict[str, object]]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    frame = pl.DataFrame(
        lines,
        schema={"line_no": pl.Int64, "line": pl.String, "forced": pl.String, "raw": pl.String},
    ).with_columns(bad_utf8=pl.lit(False))
    return frame, pl.DataFrame(meta, schema=RECORDS_SCHEMA).drop("dump_id")
