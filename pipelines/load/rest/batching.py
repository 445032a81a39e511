"""Request bodies for ``/v1/import``: records encoded once, packed by bytes under the body limit.

Invariant: a body built by :func:`import_body` from the indices :func:`pack_by_bytes` returns is never
larger than the budget nor holds more records than the server accepts, and records keep their order.
"""

from __future__ import annotations

import json
from typing import Any

from pipelines.load.limits import IMPORT_MAX_RECORDS

ENVELOPE_HEAD = b'{"records":['
ENVELOPE_TAIL = b'],"overwrite":false}'
# Bodies rewriting changed patterns; never longer than ENVELOPE_TAIL, so packing by it still holds.
ENVELOPE_TAIL_OVERWRITE = b'],"overwrite":true}'


def encode(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def import_body(encoded_records: list[bytes], overwrite: bool = False) -> bytes:
    return (
        ENVELOPE_HEAD + b",".join(encoded_records) + (ENVELOPE_TAIL_OVERWRITE if overwrite else ENVELOPE_TAIL)
    )


def pack_by_bytes(sizes: list[int], budget: int, max_records: int) -> tuple[list[list[int]], list[int]]:
    """Greedy, order-keeping packing of records (by encoded size) into import bodies of at most
    ``budget`` bytes (envelope and commas included) and ``max_records`` records.

    Returns (batches of indices, indices of records that fit no body on their own)."""
    overhead = len(ENVELOPE_HEAD) + len(ENVELOPE_TAIL)
    max_records = max(1, min(max_records, IMPORT_MAX_RECORDS))
    batches: list[list[int]] = []
    oversize: list[int] = []
    current: list[int] = []
    used = overhead
    for i, size in enumerate(sizes):
        if overhead + size > budget:
            oversize.append(i)
            continue
        extra = size + (1 if current else 0)
        if current and (used + extra > budget or len(current) >= max_records):
            batches.append(current)
            current, used, extra = [], overhead, size
        current.append(i)
        used += extra
    if current:
        batches.append(current)
    return batches, oversize
