"""A frame's fingerprints are each row's own, however many slices the frame is read in."""

from __future__ import annotations

import polars as pl

from pipelines.load import content
from pipelines.load.content import fingerprint, with_fingerprints


def test_fingerprints_read_in_slices_are_each_rows_own(monkeypatch):
    frame = pl.DataFrame(
        {
            "pattern_id": [f"p{i}" for i in range(7)],
            "task": [f"task {i}" for i in range(7)],
            "code": [f"answer {i}" * i for i in range(7)],
            "eval_score": [float(i % 5) for i in range(7)],
        }
    )
    monkeypatch.setattr(content, "FINGERPRINT_ROWS", 3)
    out = with_fingerprints(frame)
    assert out.columns == [*frame.columns, "fingerprint"]
    expected = [fingerprint(t, c, s) for t, c, s in frame.select("task", "code", "eval_score").iter_rows()]
    assert out["fingerprint"].to_list() == expected
    assert out["fingerprint"].n_unique() == 7
