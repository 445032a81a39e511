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
import re
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

import polars as pl

from pipelines.ingest.formats.base import Record
from pipelines.tables import RECORDS_SCHEMA

BATCH_RECORDS = 20_000
_PART_KEYS = ("images", "files", "attachments", "annotations", "other")


class HashingReader:
    """A binary stream that hashes what is read through it (the dump's sha256 in the manifest).

    Blocks are hashed on a thread of their own, in order, while the reader parses the block before:
    hashlib lets go of the GIL, and hashing 1.5 GB on the reader's thread cost its Python a second.
    Use it as a context manager (or call :meth:`hexdigest`), which stops that thread.
    """

    # Smaller reads (lines) are hashed where they are read: a hand-over would cost more than the hash.
    _HAND_OVER_BYTES = 64 * 1024

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self._sha = hashlib.sha256()
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-sha256")
        self._pending: Future[None] | None = None

    def __enter__(self) -> HashingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _update(self, data: bytes) -> None:
        if self._pending is not None:
            self._pending.result()
            self._pending = None
        if len(data) >= self._HAND_OVER_BYTES:
            self._pending = self._hasher.submit(self._sha.update, data)
        else:
            self._sha.update(data)

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self._update(data)
        return data

    def readline(self, limit: int = -1) -> bytes:
        data = self.stream.readline(limit)
        self._update(data)
        return data

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line

    def hexdigest(self) -> str:
        """The sha256 of everything read so far."""
        if self._pending is not None:
            self._pending.result()
            self._pending = None
        return self._sha.hexdigest()

    def close(self) -> None:
        self._hasher.shutdown(wait=True)


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
    """Up to :data:`BATCH_RECORDS` records, one row tuple each, made columns when the batch is full.

    A record whose fields have the guide's types (strings or null, a number for ``created_at``: every
    record a reader builds from a well-formed source) goes over as typed columns, which the
    classification reads as they are; any other record is encoded as a guide line and judged like one.
    Encoding every record as JSON only for DuckDB to parse it again cost most of a ChatGPT export's
    ingest time; appending to twenty lists per record cost a third of what was left.
    """

    def __init__(self) -> None:
        self.lines: list[tuple[object, ...]] = []
        self.meta: list[tuple[object, ...]] = []

    def __len__(self) -> int:
        return len(self.lines)

    def add(self, order: int, rec: Record, forced: str | None) -> None:
        get = rec.get
        thread, assistant, message, role, text = values = (
            get("thread_id"),
            get("assistant_id"),
            get("message_id"),
            get("role"),
            get("text"),
        )
        created = get("created_at")
        timed = created is not None
        if created is None:
            # Only the order is known: a fixed time keeps the row valid and the order key decides.
            created = 0
        branch = get("branch", "current")
        # Spelled out: a generator here cost a tenth of a ChatGPT export's ingest.
        typed = (
            (thread is None or type(thread) is str)
            and (assistant is None or type(assistant) is str)
            and (message is None or type(message) is str)
            and (role is None or type(role) is str)
            and (text is None or type(text) is str)
            and type(created) in (int, float)
        )
        # In the order of _LINE_SCHEMA.
        if typed:
            fields = (thread, assistant, message, role, text, float(created))  # type: ignore[arg-type]
            self.lines.append((order, None, forced, get("raw"), True, branch, *fields))
        else:
            line = json.dumps(
                dict(zip(CORE_FIELDS, values, strict=True)) | {"created_at": created}, ensure_ascii=False
            )
            self.lines.append((order, line, forced, get("raw"), False, branch, *_UNTYPED))
        parts = get("parts")
        counts = tuple(int(parts.get(key, 0)) for key in _PART_KEYS) if parts else _NO_PARTS
        run_id = get("run_id")
        self.meta.append(
            (
                order,
                rec["position"],
                message if isinstance(message, str) else None,
                run_id if isinstance(run_id, str) else None,
                branch,
                timed,
                *counts,
            )
        )

    def frames(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        try:
            return self._frames()
        except UnicodeEncodeError:
            # Found where Polars refuses the text rather than by a scan of every value: a batch
            # without a lone surrogate (nearly all) costs nothing more.
            self._quarantine_surrogates()
            return self._frames()

    def _frames(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        # Every value already has its column's type (checked in add): Polars' own check per value is
        # skipped.
        lines = pl.DataFrame(_columns(_LINE_SCHEMA, self.lines), schema=_LINE_SCHEMA, strict=False)
        return lines.with_columns(bad_utf8=pl.lit(False)), pl.DataFrame(
            _columns(_META_SCHEMA, self.meta), schema=_META_SCHEMA, strict=False
        )

    def _quarantine_surrogates(self) -> None:
        """Quarantines each record holding a lone surrogate, its text escaped so that it can be kept.

        Such a character cannot be written as UTF-8: it is half of an emoji cut in two in the JSON
        (``"\\ud83d"``, which Python's json accepts) or a byte that is not UTF-8 (the readers decode
        those as U+DC80-U+DCFF, see :mod:`pipelines.ingest.formats.stream`). One such record must not
        stop the dump, nor be staged with its text changed.
        """
        for i, (row, meta) in enumerate(zip(self.lines, self.meta, strict=True)):
            order, line, _forced, raw, typed, branch, *fields = row
            found = [v for v in (*row, *meta) if type(v) is str and _SURROGATE.search(v)]
            if not found:
                continue
            bad_bytes = any(_BAD_BYTE.search(v) for v in found)
            reason = REASON_BAD_BYTES if bad_bytes else REASON_LONE_SURROGATE
            if raw is None:
                # The record as JSON, which classification would make of it, while it can still be made.
                raw = line
                if line is None:
                    record = dict(zip((*CORE_FIELDS, "created_at"), fields, strict=True))
                    raw = json.dumps(record, ensure_ascii=False)
            if line is not None:
                # A backslash before the escape keeps the line valid JSON (it is judged as JSON).
                line = _SURROGATE.sub(lambda m: "\\" + _escape(m), line)
            escaped = (_escaped(raw), typed, _escaped(branch), *map(_escaped, fields))
            self.lines[i] = (order, line, reason, *escaped)
            self.meta[i] = tuple(map(_escaped, meta))


# A lone surrogate: half of a UTF-16 pair, or a byte that is not UTF-8 (U+DC80-U+DCFF, as Python's
# surrogateescape decodes one). A JSON escape in that range reads as a byte too: quarantined all the same.
_SURROGATE = re.compile("[\ud800-\udfff]")
_BAD_BYTE = re.compile("[\udc80-\udcff]")
# The guide's reason for a line that is not UTF-8 (pipelines.ingest.classify), and one of its kind.
REASON_BAD_BYTES = "invalid UTF-8"
REASON_LONE_SURROGATE = "invalid UTF-8: lone surrogate"


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    # A byte as backslashreplace writes it; half a pair as the JSON escape it was.
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def _escaped[T](value: T) -> T:
    """A string with its lone surrogates escaped (see :func:`_escape`); any other value as it is."""
    if type(value) is str:
        return _SURROGATE.sub(_escape, value)  # type: ignore[return-value]
    return value


_UNTYPED = (None,) * (len(CORE_FIELDS) + 1)
_NO_PARTS = (0,) * len(_PART_KEYS)
_META_SCHEMA = {k: v for k, v in RECORDS_SCHEMA.items() if k != "dump_id"}


def _columns(schema: Mapping[str, object], rows: list[tuple[object, ...]]) -> dict[str, Sequence[object]]:
    """Row tuples as columns, in the schema's order (transposed in C, not appended per value)."""
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(schema)
    return dict(zip(schema, columns, strict=True))


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
