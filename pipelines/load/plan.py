"""What a load must do in one scope: send the kept patterns the destination lacks, rewrite the ones it
holds whose score or text changed, retract the ones it holds that are no longer kept, and report the
same figures whatever the destination.

Invariant: every destination plans with :func:`plan_load`, on pattern ids, scores and the ledger's
``basis`` alone (:mod:`pipelines.load.content`); texts are read (:func:`texts_to_send`) only for the
patterns that are sent and for those whose basis changed, since reading every kept text of a large scope
to send a handful was most of an incremental load's time. Of the latter, :func:`settle_updates` keeps for
rewriting only those whose fingerprint changed: an update is never counted as stored, so Engramia's
``pattern_count`` still moves by exactly stored - retracted."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl

from pipelines.load.content import basis, basis_prefix
from pipelines.load.records import kept_patterns, kept_scores, without_text
from pipelines.tables import DataLayout, parquet_files, write_parquet

# Updated patterns a load names in its figures, for the check that reads them back from the store.
UPDATE_SAMPLE = 20

# Where each kept pattern of a load ends: ``kept`` is always their sum (``loaded`` counts the 0.7.x learns
# that replaced a near-duplicate under its old key, see :attr:`LoadResult.loaded`).
LOAD_TERMS = ("loaded", "already_loaded", "present", "not_stored", "rejected", "failed", "skipped")


@dataclass
class LoadPlan:
    send_ids: pl.DataFrame  # pattern_id, basis: kept but not in the destination
    to_retract: pl.DataFrame  # pattern_id, key: in the destination but no longer kept
    # pattern_id, key, fingerprint (as stored), basis (now): kept and in the destination, but made from
    # another basis, so their content may differ; :func:`settle_updates` narrows it to those that do.
    to_update: pl.DataFrame
    kept: int
    already: int


def plan_load(
    layout: DataLayout, scope: str, in_store: pl.DataFrame, transform: str | None = None
) -> LoadPlan:
    """The plan against ``in_store`` (pattern_id, key, fingerprint, basis): what the destination holds,
    as far as the destination trusts its ledger. ``transform`` names what the destination does to texts
    before sending (part of the basis); without it (figures only, nothing is loaded) no pattern is
    planned for update."""
    in_store = in_store.select("pattern_id", "key", "fingerprint", stored_basis="basis")
    prefix = basis_prefix(layout, scope, transform) if transform is not None else None
    ids = kept_scores(layout, scope).select(
        "pattern_id", basis=basis(prefix) if prefix is not None else pl.lit(None, pl.String)
    )
    send_ids = ids.join(in_store, on="pattern_id", how="anti")
    to_retract = in_store.join(ids, on="pattern_id", how="anti").select("pattern_id", "key")
    # A null stored basis is a ledger row written before bases were kept: its content is looked at once.
    to_update = (
        ids.join(in_store, on="pattern_id", how="inner")
        .filter(
            pl.lit(prefix is not None)
            & (pl.col("stored_basis").is_null() | (pl.col("stored_basis") != pl.col("basis")))
        )
        .select("pattern_id", "key", "fingerprint", "basis")
    )
    return LoadPlan(send_ids, to_retract, to_update, ids.height, ids.height - send_ids.height)


def texts_to_send(layout: DataLayout, scope: str, plan: LoadPlan) -> pl.DataFrame | None:
    """The kept patterns (text, score, provenance, key) of ``plan.send_ids`` and ``plan.to_update``, in
    pattern_id order, with their ``basis`` and whether each is an ``update``; None when there are none."""
    # Sorted once collected: sorting in the scan's plan held every text of the scope twice at its peak
    # (+240 MB against +175 MB for one scope of a 1M-message export).
    kept = kept_patterns(layout, scope, ordered=False)
    wanted = pl.concat(
        [
            plan.send_ids.select("pattern_id", "basis", update=pl.lit(False)),
            plan.to_update.select("pattern_id", "basis", update=pl.lit(True)),
        ]
    )
    if kept is None or not wanted.height:
        return None
    # A filter, not a semi join: it reaches the Parquet scans, which then skip other rows' texts.
    rows = kept.filter(pl.col("pattern_id").is_in(wanted["pattern_id"].implode())).collect()
    rows = rows.sort("pattern_id")
    if missing := without_text(rows):
        raise ValueError(
            f"scope {scope}: {len(missing)} kept patterns have no current paired pattern (the scored table "
            f"is out of step with the pairing; score the scope again), e.g. {', '.join(missing[:5])}"
        )
    return rows.join(wanted, on="pattern_id", how="left", maintain_order="left")


def settle_updates(plan: LoadPlan, frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split ``frame`` (rows of :func:`texts_to_send` with the ``fingerprint`` of what would be sent now)
    into what to send, and the updates whose content did not change (pattern_id, key, fingerprint, basis,
    adopted); ``plan.to_update`` keeps only the changed ones.

    A pattern whose ledger row has no fingerprint (written before fingerprints were kept) adopts the
    current one without being rewritten (``adopted``). Rewriting every such pattern once would be the
    only alternative, and it is not safe: over rest-learn it deletes and learns the whole scope again
    (new keys, hours at the server's rate limit, and a scope half gone if it fails midway), and in every
    mode it resets the reuse counts the store has gathered. What adoption can miss is a score or
    truncation change made while fingerprints were not kept, which that code never sent either; every
    change after it is detected. (Rolling the scope back and loading it again rewrites everything.)
    """
    if frame.is_empty() or "update" not in frame.columns:
        return frame, pl.DataFrame(
            schema={"pattern_id": pl.String, "key": pl.String, "fingerprint": pl.String, "basis": pl.String}
        ).with_columns(adopted=pl.lit(False))
    stored = plan.to_update.select("pattern_id", "key", stored_fingerprint="fingerprint")
    marked = frame.join(stored.select("pattern_id", "stored_fingerprint"), on="pattern_id", how="left")
    same = pl.col("update") & (
        pl.col("stored_fingerprint").is_null() | (pl.col("stored_fingerprint") == pl.col("fingerprint"))
    )
    unchanged = (
        marked.filter(same)
        .select("pattern_id", "fingerprint", "basis", adopted=pl.col("stored_fingerprint").is_null())
        .join(stored.select("pattern_id", "key"), on="pattern_id", how="left")
        .select("pattern_id", "key", "fingerprint", "basis", "adopted")
    )
    plan.to_update = plan.to_update.join(unchanged, on="pattern_id", how="anti")
    return marked.filter(~same).drop("stored_fingerprint"), unchanged


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
    # kept patterns already in the store rewritten because their score or text changed (never counted
    # as stored: the store's pattern_count does not move); a sample of them (pattern_id, key) is kept
    # for the check that reads them back.
    updated: int = 0
    updates: list[dict] = field(default_factory=list)
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
    # the run id of this load's ledger rows (what it stored is what the spot check reads back)
    ledger_run_id: str | None = None
    rejections: list[dict] = field(default_factory=list)
    error: str | None = None

    @property
    def loaded(self) -> int:
        """Stored by this load: under a new key, or (0.7.x learn) over a weaker near-duplicate's key."""
        return self.stored + self.replaced

    def terms(self) -> dict[str, int]:
        return {t: int(getattr(self, t)) for t in LOAD_TERMS}

    @property
    def unaccounted(self) -> int:
        """Kept patterns this load did not account for (0 whenever it worked as it should)."""
        return self.kept - sum(self.terms().values())

    def settle_unsent(self) -> None:
        """A load that stopped early did not send the rest: they count as failed (not stored), so the
        terms still add up to ``kept``; the next run sends them."""
        if self.error is not None and self.unaccounted > 0:
            self.notes += f"{self.unaccounted} patterns not sent (the load stopped); "
            self.failed += self.unaccounted

    @property
    def reconciles(self) -> bool:
        """Engramia's own count moved by exactly what the ledger says was stored and retracted."""
        if self.pattern_count_before is None or self.pattern_count_after is None:
            return False
        return self.pattern_count_after == self.pattern_count_before + self.stored - self.retracted

    def as_dict(self) -> dict:
        out = asdict(self)
        out["reconciles"] = self.reconciles
        out["loaded"] = self.loaded
        out["accounts_for_kept"] = self.unaccounted == 0
        out["rejections"] = self.rejections[:20]
        out["updates"] = self.updates[:UPDATE_SAMPLE]
        return out


def save_load_result(layout: DataLayout, result: LoadResult, run_id: str) -> Path:
    """Keep every load's figures (``staged/loads/scope=<key>/``) for the checks and for run history."""
    row = {k: v for k, v in result.as_dict().items() if k not in ("rejections", "updates")}
    row["run_id"] = run_id
    row["rejections"] = json.dumps(result.rejections[:100])
    row["updates"] = json.dumps(result.updates[:UPDATE_SAMPLE])
    path = layout.loads(result.scope) / f"run={run_id}.parquet"
    write_parquet(pl.DataFrame([row]), path)
    return path


def latest_load_result(layout: DataLayout, scope: str) -> dict | None:
    files = parquet_files(layout.loads(scope))
    if not files:
        return None
    return pl.read_parquet(max(files, key=lambda p: p.stat().st_mtime_ns)).to_dicts()[0]
