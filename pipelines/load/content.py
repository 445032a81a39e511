"""What a loaded pattern holds, in two forms a load can compare: its ``fingerprint`` and its ``basis``.

* ``fingerprint``: sha256 over the task, code and score exactly as sent (after redaction for REST). It
  says what the store should hold, and is compared with what a store really holds (:mod:`.verify`).
* ``basis``: what that content was made from, without reading it: the pairing options in force (a
  pattern's texts are fixed by its id and those options, as the near-duplicate cache also relies on),
  its eval_score, and how the destination transforms texts (redaction on or off). Equal bases give equal
  fingerprints, so a load reads texts only for patterns whose basis changed, and then rewrites only
  those whose fingerprint changed too.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import polars as pl

from pipelines.pairing.batches import ScopeState
from pipelines.tables import DataLayout


def fingerprint(task: str, code: str, score: float) -> str:
    digest = hashlib.sha256()
    for part in (task, code, repr(round(float(score), 6))):
        data = part.encode("utf-8", "surrogatepass")
        # Length-prefixed, so that no two different (task, code) splits hash alike.
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()[:32]


FINGERPRINT_ROWS = 5_000


def with_fingerprints(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` (task, code, eval_score) with a ``fingerprint`` column of its rows as they are."""
    if frame.is_empty():
        return frame.with_columns(fingerprint=pl.lit(None, pl.String))
    prints: list[str] = []
    # A slice at a time: the texts of a whole scope as Python strings at once took ~90 MB more per 30k.
    for part in frame.select("task", "code", "eval_score").iter_slices(FINGERPRINT_ROWS):
        prints.extend(fingerprint(t, c, s) for t, c, s in part.iter_rows())
    return frame.with_columns(fingerprint=pl.Series(prints, dtype=pl.String))


def stored_fingerprint(data: dict[str, Any]) -> str | None:
    """The fingerprint of a pattern as Engramia stores it (``task``, ``design.code``, ``success_score``)."""
    design = data.get("design") or {}
    task, code, score = data.get("task"), design.get("code"), data.get("success_score")
    if not isinstance(task, str) or not isinstance(code, str) or not isinstance(score, int | float):
        return None
    return fingerprint(task, code, score) if math.isfinite(score) else None


def basis_prefix(layout: DataLayout, scope: str, transform: str) -> str:
    """The part of every kept pattern's basis shared by the whole scope (see the module docstring)."""
    return f"{ScopeState.load(layout, scope).pairing}|{transform}|score="


def basis(prefix: str) -> pl.Expr:
    """A pattern's basis from its ``eval_score`` column and the scope's ``prefix``."""
    return pl.lit(prefix) + pl.col("eval_score").round(6).cast(pl.String)
