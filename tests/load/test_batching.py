"""Import bodies packed by bytes: order kept, every body under the budget, sizes exact."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from pipelines.load.rest.batching import ENVELOPE_HEAD, ENVELOPE_TAIL, encode, import_body, pack_by_bytes

# -- byte batching ---------------------------------------------------------------------------------


@given(
    sizes=st.lists(st.integers(min_value=1, max_value=3_000), max_size=200),
    budget=st.integers(min_value=100, max_value=10_000),
    max_records=st.integers(min_value=1, max_value=50),
)
def test_pack_by_bytes_keeps_order_and_every_body_under_the_budget(sizes, budget, max_records):
    batches, oversize = pack_by_bytes(sizes, budget, max_records)
    overhead = len(ENVELOPE_HEAD) + len(ENVELOPE_TAIL)
    flat = [i for b in batches for i in b]
    assert sorted(flat + oversize) == list(range(len(sizes)))
    assert flat == sorted(flat)  # order kept
    for batch in batches:
        assert batch and len(batch) <= max_records
        assert overhead + sum(sizes[i] for i in batch) + len(batch) - 1 <= budget
    assert all(overhead + sizes[i] > budget for i in oversize)


def test_pack_by_bytes_body_size_is_exact_for_real_records():
    records = [
        {"version": 1, "key": f"patterns/oai_{i}", "data": {"task": "é" * i, "n": i}} for i in range(60)
    ]
    encoded = [encode(r) for r in records]
    batches, oversize = pack_by_bytes([len(e) for e in encoded], 1_000, 100)
    assert not oversize and len(batches) > 3
    for batch in batches:
        body = import_body([encoded[i] for i in batch])
        assert len(body) <= 1_000
        assert json.loads(body) == {"records": [records[i] for i in batch], "overwrite": False}
