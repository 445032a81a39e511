"""Records of a reader are judged exactly as the same values written as guide lines: a record handed over
as typed columns gets the verdict, the typed fields and the scope its JSON text would get."""

from __future__ import annotations

import hashlib
import io
import json

import polars as pl

from pipelines.duck import connect
from pipelines.ingest.classify import classifier, classify_chunk, classify_sql
from pipelines.ingest.formats.base import Record
from pipelines.ingest.records import HashingReader, record_batches
from pipelines.scopes import ScopeMapping

_CORE = ("thread_id", "assistant_id", "message_id", "role", "text", "created_at")


def _record(i: int, **fields: object) -> Record:
    base: dict[str, object] = {
        "thread_id": "t1",
        "assistant_id": "asst_1",
        "message_id": f"m{i}",
        "role": "user",
        "text": f"question {i}",
        "created_at": 1_700_000_000 + i,
        "position": f"$[{i}]",
    }
    return base | fields  # type: ignore[return-value]


RECORDS: list[Record] = [
    _record(1),
    _record(2, role="assistant", text="an answer", created_at=1_700_000_002.25),
    _record(3, assistant_id=None),  # pending: its assistant comes later
    _record(4, role="developer"),
    _record(5, role="robot"),
    _record(6, message_id=None),
    _record(7, text=None),
    _record(8, thread_id=""),
    _record(9, created_at=-5),
    _record(10, role="assistant", assistant_id=None),
    # Values of other types than a reader builds from a well-formed source go over as JSON text.
    _record(11, thread_id=42),
    _record(12, created_at="2024-01-02T03:04:05Z"),
    _record(13, created_at="yesterday"),
    _record(14, text=["not", "text"]),
    _record(15, created_at=True),
    _record(16, created_at=None),
]

_COMPARED = [
    "message_id",
    "thread_id",
    "assistant_id",
    "role",
    "text",
    "created_at",
    "created_epoch",
    "text_chars",
    "is_blank",
    "tenant_id",
    "project_id",
    "line_no",
    "reason",
    "pending",
]


def _classify(lines: pl.DataFrame, records: bool) -> pl.DataFrame:
    mapping = ScopeMapping()
    con = connect(preserve_order=True)
    cursor = classifier(con, mapping)
    try:
        table = classify_chunk(cursor, lines, classify_sql(mapping, "d1", 1, records=records))
    finally:
        cursor.close()
        con.close()
    return pl.from_arrow(table)  # type: ignore[return-value]


def test_typed_records_get_the_verdicts_of_their_json_text():
    [(lines, meta)] = list(record_batches(iter(RECORDS)))
    assert lines["typed"].to_list() == [True] * 10 + [False] * 5 + [True]
    as_records = _classify(lines, records=True)

    guide_lines = [
        json.dumps({k: r.get(k) for k in _CORE} | ({"created_at": 0} if r.get("created_at") is None else {}))
        for r in RECORDS
    ]
    as_text = _classify(
        pl.DataFrame(
            {"line_no": list(range(1, len(RECORDS) + 1)), "line": guide_lines},
            schema={"line_no": pl.Int64, "line": pl.String},
        ).with_columns(bad_utf8=pl.lit(False)),
        records=False,
    )
    assert as_records.select(_COMPARED).to_dicts() == as_text.select(_COMPARED).to_dicts()
    reasons = as_records["reason"].to_list()
    assert reasons[:3] == [None, None, None]
    assert reasons[4] == "unknown role: robot"
    assert reasons[10] == "mistyped field: thread_id must be a string"
    assert reasons[12].startswith("mistyped field: created_at is not an ISO-8601 time")
    assert as_records["role"][3] == "system"
    # A row kept as text (quarantined, or waiting for its assistant) keeps the record's values.
    kept = as_records.filter(pl.col("raw_text").is_not_null())
    assert kept["line_no"].to_list() == [3, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15]
    assert json.loads(kept["raw_text"][0])["message_id"] == "m3"
    assert meta["timed"].to_list() == [True] * 15 + [False]


def test_records_keep_their_reader_reason_and_source_text():
    forced = _record(1) | {"quarantine": "hidden message: not shown", "raw": '{"id": "n1"}'}
    [(lines, _)] = list(record_batches(iter([forced, _record(2)])))
    out = _classify(lines, records=True)
    assert out["reason"].to_list() == ["hidden message: not shown", None]
    assert out["raw_text"].to_list() == ['{"id": "n1"}', None]


def test_hashing_reader_digests_every_byte_in_order_whatever_the_read_sizes():
    # Large blocks are hashed on a thread and small reads inline: the digest must not depend on which.
    data = bytes(range(256)) * 4096 + b"line one\nline two\n" * 1000
    with HashingReader(io.BytesIO(data)) as stream:
        read = [stream.read(300_000), stream.readline(), stream.read(70_000), stream.read(5)]
        read += list(stream)
        read.append(stream.read())
    assert b"".join(read) == data
    assert stream.hexdigest() == hashlib.sha256(data).hexdigest()
