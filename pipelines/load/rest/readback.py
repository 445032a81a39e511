"""Finding what a server holds: learned patterns by their task and code, and the server's own pattern
count.

``/v1/learn`` does not return the key it stores a pattern under (``patterns/<sha256(task)[:8]>_<ms>``),
so a learned pattern is found by what was sent: a pattern with the same task and the same code (or the
code after the server's own redaction), in ``/v1/export`` when the key may export (read-only, one call
for many patterns), else in ``/v1/recall`` (which bumps the returned patterns' reuse_count and score on
the server, so it is used only where nothing else answers).

Invariant: a key already claimed by another ledger row is never matched again, and of several equal
patterns the newest is taken (an identical pattern stored earlier by someone else stays theirs).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import polars as pl

from pipelines.load.redaction import redact_frame
from pipelines.load.rest.client import EngramiaClient
from pipelines.load.rest.errors import AuthError, Rejected
from pipelines.load.rest.options import RestOptions, make_client
from pipelines.load.rest.servers import ServerConfig
from pipelines.tables import DataLayout, parquet_files

DUPLICATE_SIMILARITY = 0.92
# Matches asked of a recall that looks a pattern up by its task: the same task ranks first, and a few more
# leave room for identical tasks stored by others. Every fetched pattern gets reuse_count + 1 and
# score + 0.1 on the server (0.7.x fetches about four times the limit), so no more than that.
FIND_LIMIT = 5

# task -> [(key, code, timestamp)] of every pattern in an export
ExportIndex = dict[str, list[tuple[str, str | None, float]]]


def task_hash8(task: str) -> str:
    return hashlib.sha256(task.encode()).hexdigest()[:8]


_SERVER_REDACTION: Any = None
SERVER_REDACTION_MODULE = "engramia.governance.redaction"


class ServerRedactionUnavailable(RuntimeError):
    """The installed engramia's redaction code could not be loaded or run: a learn look-up could not
    recognise a pattern the server stored redacted, and would send it a second time."""


def server_redacted_code(code: str) -> str:
    """The code as a 0.6.6 server would store it through /v1/learn (its own redaction pipeline).

    Required, not best effort: without it a look-up misses every pattern whose code the server
    redacted, so a failure ends the scope rather than letting it resend them."""
    global _SERVER_REDACTION
    try:
        if _SERVER_REDACTION is None:
            from engramia.governance.redaction import RedactionPipeline

            _SERVER_REDACTION = RedactionPipeline.default()
        clean, _ = _SERVER_REDACTION.process({"code": code})
    except Exception as exc:
        raise ServerRedactionUnavailable(
            f"Engramia's redaction code ({SERVER_REDACTION_MODULE}) failed: {type(exc).__name__}: {exc}; "
            "learned patterns cannot be looked up on the server, so nothing is sent again (check the "
            "installed engramia package)"
        ) from exc
    return str(clean.get("code", code))


def code_matches(stored: str | None, sent: str) -> bool:
    return stored is not None and (stored == sent or stored == server_redacted_code(sent))


@dataclass(frozen=True)
class Variant:
    """A (task, code) pair a pattern may have been sent as (redacted, and raw when redaction changed it)."""

    task: str
    code: str


def variants(row: dict[str, Any]) -> list[Variant]:
    out = [Variant(row["task"], row["code"])]
    raw = Variant(row.get("task_raw") or row["task"], row.get("code_raw") or row["code"])
    if raw != out[0]:
        out.append(raw)
    return out


def sent_texts(
    layout: DataLayout, scope: str, pattern_ids: list[str], redact: bool
) -> dict[str, dict[str, Any]]:
    """Task and code of patterns as a load sends them (redacted when ``redact``; raw kept as
    ``task_raw``/``code_raw``), from every staged batch so that superseded patterns are found too."""
    files = parquet_files(layout.patterns(scope))
    if not files or not pattern_ids:
        return {}
    df = (
        pl.scan_parquet(files)
        .filter(pl.col("pattern_id").is_in(pattern_ids))
        .select("pattern_id", "task", "code")
        .unique("pattern_id", keep="last")
        .collect()
        .with_columns(task_raw=pl.col("task"), code_raw=pl.col("code"))
    )
    if redact:
        df, _ = redact_frame(df, ["task", "code"])
    return {r["pattern_id"]: r for r in df.iter_rows(named=True)}


class LearnMatcher:
    """Finds learned patterns on the server by task and code: ``/v1/export`` when the key may export,
    else ``/v1/recall`` per pattern."""

    def __init__(self, client: EngramiaClient) -> None:
        self.client = client
        self.can_export: bool | None = None
        self._index: ExportIndex | None = None
        # the export the index was built from, by key
        self.records: dict[str, dict[str, Any]] = {}

    def export_index(self, refresh: bool = False) -> ExportIndex | None:
        if self.can_export is False:
            return None
        if self._index is not None and not refresh:
            return self._index
        try:
            records = self.client.export()
        except AuthError:
            self.can_export = False
            return None
        self.can_export = True
        index: ExportIndex = {}
        self.records = {rec["key"]: rec for rec in records}
        for rec in records:
            data = rec.get("data") or {}
            design = data.get("design") or {}
            index.setdefault(str(data.get("task")), []).append(
                (rec["key"], design.get("code"), float(data.get("timestamp") or 0))
            )
        self._index = index
        return index

    def find(self, row: dict[str, Any], claimed: set[str], refresh: bool = True) -> str | None:
        index = self.export_index(refresh=refresh)
        if index is not None:
            return self.find_in_index(index, row, claimed)
        return self.find_by_recall(row, claimed)

    @staticmethod
    def find_in_index(index: ExportIndex, row: dict[str, Any], claimed: set[str]) -> str | None:
        for v in variants(row):
            hits = [
                (ts, key)
                for key, code, ts in index.get(v.task, [])
                if key not in claimed and code_matches(code, v.code)
            ]
            if hits:
                # The newest one: an identical pattern stored earlier by someone else stays theirs.
                return max(hits)[1]
        return None

    def find_by_recall(self, row: dict[str, Any], claimed: set[str]) -> str | None:
        for v in variants(row):
            try:
                body = self.client.recall(v.task, limit=FIND_LIMIT)
            except Rejected:  # e.g. a task over the server's limit: it cannot have been stored either
                continue
            for m in body.get("matches") or []:
                pattern = m.get("pattern") or {}
                similar = (
                    m.get("reuse_tier") == "duplicate"
                    or float(m.get("similarity") or 0) >= DUPLICATE_SIMILARITY
                )
                key = m.get("pattern_key")
                if (
                    similar
                    and key not in claimed
                    and pattern.get("task") == v.task
                    and code_matches(pattern.get("code"), v.code)
                ):
                    return key
        return None


def task_words(task: str) -> frozenset[str]:
    """The words Engramia 0.7.x compares tasks by: ``set(task.lower().split())``, punctuation attached."""
    return frozenset(task.lower().split())


class NearDuplicates:
    """The patterns of an export by their tasks' words, to name the one a learn answered ``stored:
    false`` lost to (0.7.x stores nothing when a task of word Jaccard >= 0.92 has an equal or higher
    score, and does not say which)."""

    def __init__(self, records: dict[str, dict[str, Any]]) -> None:
        # Jaccard >= t needs the smaller set at least t times the larger: only those sizes are compared.
        self.by_size: dict[int, list[tuple[frozenset[str], str, float]]] = {}
        for key, rec in records.items():
            data = rec.get("data") or {}
            words = task_words(str(data.get("task") or ""))
            score = float(data.get("success_score") or 0)
            self.by_size.setdefault(len(words), []).append((words, key, score))

    def kept_for(self, task: str) -> tuple[str, float] | None:
        """The key and similarity of the most similar near-duplicate of ``task`` (the higher score on a
        tie), or None."""
        words = task_words(task)
        low = math.ceil(len(words) * DUPLICATE_SIMILARITY - 1e-9)
        high = math.floor(len(words) / DUPLICATE_SIMILARITY + 1e-9)
        best: tuple[float, float, str] | None = None
        for size in range(low, high + 1):
            for other, key, score in self.by_size.get(size, ()):
                union = len(words | other)
                similarity = len(words & other) / union if union else 0.0
                if similarity >= DUPLICATE_SIMILARITY and (best is None or (similarity, score) > best[:2]):
                    best = (similarity, score, key)
        return (best[2], best[0]) if best is not None else None


def pattern_count_rest(server: ServerConfig, options: RestOptions, label: str = "") -> int:
    with make_client(server, options, label or server.url) as client:
        return client.pattern_count()
