"""What a load must do in one scope: send the kept patterns the destination lacks, retract the ones
it holds that are no longer kept, and report the same figures whatever the destination.

Invariant: every destination plans with :func:`plan_load`, on pattern ids alone; texts are read
(:func:`texts_to_send`) only for the patterns that are sent, since reading every kept text of a large
scope to send a handful was most of an incremental load's time."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl

from pipelines.load.records import kept_ids, kept_patterns
from pipelines.tables import DataLayout, parquet_files, write_parquet


@dataclass
class LoadPlan:
    send_ids: pl.DataFrame  # pattern_id: kept but not in the destination
    to_retract: pl.DataFrame  # pattern_id, key: in the destination but no longer kept
    kept: int
    already: int


def plan_load(layout: DataLayout, scope: str, in_store: pl.DataFrame) -> LoadPlan:
    """The plan against ``in_store`` (pattern_id, key): what the destination holds, as far as the
    destination trusts its ledger."""
    in_store = in_store.select("pattern_id", "key")
    ids = kept_ids(layout, scope)
    send_ids = ids.join(in_store, on="pattern_id", how="anti")
    to_retract = in_store.join(ids, on="pattern_id", how="anti")
    return LoadPlan(send_ids, to_retract, ids.height, ids.height - send_ids.height)


def texts_to_send(layout: DataLayout, scope: str, plan: LoadPlan) -> pl.DataFrame | None:
    """The kept patterns (text, score, provenance, key) of ``plan.send_ids``, in pattern_id order;
    None when the scope has no kept patterns to send."""
    kept = kept_patterns(layout, scope)
    if kept is None or not plan.send_ids.height:
        return None
    # A filter, not a semi join: it reaches the Parquet scans, which then skip other rows' texts.
    return kept.filter(pl.col("pattern_id").is_in(plan.send_ids["pattern_id"].implode())).collect()


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
