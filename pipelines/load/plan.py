"""What a load must do in one scope: send the kept patterns the destination lacks, retract the ones
it holds that are no longer kept, and report the same figures whatever the destination."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl

from pipelines.load.ledger import Ledger
from pipelines.load.records import kept_patterns
from pipelines.tables import DataLayout, parquet_files, write_parquet


@dataclass
class LoadPlan:
    to_send: pl.DataFrame  # kept patterns (with text) not in the destination per the ledger
    to_retract: pl.DataFrame  # pattern_id, key: in the destination but no longer kept
    kept: int
    already: int


def plan_load(layout: DataLayout, scope: str, ledger: Ledger) -> LoadPlan:
    kept = kept_patterns(layout, scope)
    in_store = ledger.in_store().select("pattern_id", "key")
    if kept is None:
        empty = pl.DataFrame(schema={"pattern_id": pl.String})
        return LoadPlan(empty, in_store, 0, 0)
    kept_df = kept.collect()
    to_send = kept_df.join(in_store, on="pattern_id", how="anti")
    to_retract = in_store.join(kept_df.select("pattern_id"), on="pattern_id", how="anti")
    return LoadPlan(to_send, to_retract, kept_df.height, kept_df.height - to_send.height)


@dataclass
class LoadResult:
    scope: str
    destination: str
    tenant_id: str
    project_id: str
    server_version: str | None = None
    kept: int = 0
    already_loaded: int = 0
    sent: int = 0
    stored: int = 0
    present: int = 0
    not_stored: int = 0
    rejected: int = 0
    retracted: int = 0
    failed: int = 0
    # REST destinations (pipelines/load/rest/): patterns not sent because the ledger already holds an
    # answer the server gave (server-side rejection, 0.7.x not_stored); 0.7.x learns that overwrote a
    # near-duplicate under its existing key (stored, but pattern_count did not grow); PII redactions
    # made before sending (total, and per kind as JSON); what the ledger says is in the store after
    # the load; requests made and 429 waits.
    skipped: int = 0
    replaced: int = 0
    redacted: int = 0
    redactions: str = "{}"
    ledger_in_store: int | None = None
    requests: int = 0
    rate_limited: int = 0
    notes: str = ""
    pattern_count_before: int | None = None
    pattern_count_after: int | None = None
    seconds: float = 0.0
    rejections: list[dict] = field(default_factory=list)
    error: str | None = None

    @property
    def reconciles(self) -> bool:
        """Engramia's own count moved by exactly what the ledger says was stored and retracted."""
        if self.pattern_count_before is None or self.pattern_count_after is None:
            return False
        return self.pattern_count_after == self.pattern_count_before + self.stored - self.retracted

    def as_dict(self) -> dict:
        out = asdict(self)
        out["reconciles"] = self.reconciles
        out["rejections"] = self.rejections[:20]
        return out


def save_load_result(layout: DataLayout, result: LoadResult, run_id: str) -> Path:
    """Keep every load's figures (``staged/loads/scope=<key>/``) for the checks and for run history."""
    row = {k: v for k, v in result.as_dict().items() if k != "rejections"}
    row["run_id"] = run_id
    row["rejections"] = json.dumps(result.rejections[:100])
    path = layout.loads(result.scope) / f"run={run_id}.parquet"
    write_parquet(pl.DataFrame([row]), path)
    return path


def latest_load_result(layout: DataLayout, scope: str) -> dict | None:
    files = parquet_files(layout.loads(scope))
    if not files:
        return None
    return pl.read_parquet(max(files, key=lambda p: p.stat().st_mtime_ns)).to_dicts()[0]
