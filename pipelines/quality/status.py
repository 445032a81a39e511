"""Where a data directory stands, per scope: staged, paired, kept, loaded, pending, and when it last ran.

Invariants: nothing here writes (no file, no folder, no Dagster instance, no DuckDB database), so the
status of a data directory can be read while a run is writing it. Figures come from Parquet metadata
(row counts) and from narrow columns (ids, outcomes, flags), never from message or pattern texts, so the
cost follows the number of files and patterns, not the size of the texts. Every figure is the one the
run's own summary and checks compute from the same files:

- lines in = messages + quarantined + repeats + rows of dumps the scope's messages have not taken in yet
- messages = messages in current patterns + unpaired (once pairing is up to date)
- patterns = kept + duplicates + filtered (once the scored table is in step with the pairing)
- per destination: kept = loaded + pending, when nothing loaded is still to be retracted
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from pipelines.ingest.catalog import read_manifest, read_scopes
from pipelines.ingest.dumps import discover_dumps
from pipelines.load.ledger import IN_STORE, Outcome
from pipelines.pairing.batches import ScopeState, current
from pipelines.scoring.scored import filtered_file, scan_scored, scored_file, scored_in_step
from pipelines.tables import DataLayout, parquet_files


class NothingStaged(Exception):
    """The data directory holds no ingested dump (empty, missing, or not a data directory)."""


def parquet_rows(files: list[Path]) -> int:
    """Rows of Parquet files, from their footers alone (a footer read is ~0.3 ms, a Polars scan ~3 ms)."""
    return sum(pq.read_metadata(f).num_rows for f in files)


def _batch_of(path: Path) -> int:
    # ``batch=000007.parquet`` and ``batch=000007-g003.parquet`` both belong to batch 7.
    return int(path.stem.removeprefix("batch=").split("-", 1)[0])


def current_rows(layout: DataLayout, table: str, scope: str) -> int:
    """Rows of :func:`pipelines.pairing.batches.current` without reading a text.

    When every thread's latest batch is one and the same batch (any scope paired in one run), the
    current rows are that batch's files, counted from their footers; otherwise the thread ids and
    batch numbers of the files decide, as in ``current`` itself.
    """
    folder = layout.patterns(scope) if table == "patterns" else layout.unpaired(scope)
    thread_files = parquet_files(layout.threads(scope))
    if not thread_files:
        return 0
    batches = {_batch_of(p) for p in thread_files}
    if len(batches) == 1:
        return parquet_rows([p for p in parquet_files(folder) if _batch_of(p) in batches])
    rows = current(layout, table, scope)  # type: ignore[arg-type]
    return 0 if rows is None else int(rows.select(pl.len()).collect().item())


@dataclass
class DestinationStatus:
    """One destination's ledger for one scope (``destination`` as the ledger names it)."""

    destination: str
    loaded: int  # latest outcome stored or present
    pending: int  # kept, not loaded there yet
    to_retract: int  # loaded there but no longer kept
    rejected: int
    not_stored: int
    uncertain: int  # an intent row without its answer (resolved against the server by the next load)
    last_at: datetime | None


@dataclass
class LastLoad:
    """The newest load record of a scope (``staged/loads/``)."""

    at: datetime
    destination: str
    stored: int
    already_loaded: int
    retracted: int
    rejected: int
    pattern_count_after: int | None
    error: str | None


@dataclass
class ScopeStatus:
    scope: str
    tenant_id: str
    project_id: str
    lines_in: int
    messages: int
    quarantined: int
    repeats: int
    patterns: int
    unpaired: int
    kept: int
    duplicates: int
    filtered: int  # caught by a curation gate: patterns = kept + duplicates + filtered
    pending_dumps: list[str]  # complete dumps with rows for this scope that its messages have not taken in
    pending_rows: int  # their staged rows
    unpaired_dumps: list[str]  # message files the pairing has not taken in
    scored_in_step: bool  # the scored table was made from the current pairing
    destinations: list[DestinationStatus] = field(default_factory=list)
    last_load: LastLoad | None = None
    last_ingest_at: datetime | None = None

    @property
    def lines_reconcile(self) -> bool:
        return self.lines_in == self.messages + self.quarantined + self.repeats + self.pending_rows

    @property
    def up_to_date(self) -> bool:
        """Nothing staged waits for a stage of this scope, and every destination holds what is kept."""
        loaded = all(d.pending == 0 and d.to_retract == 0 for d in self.destinations)
        # A scope that keeps nothing (all its lines quarantined, say) has nothing to load anywhere.
        return (
            not self.pending_dumps
            and not self.unpaired_dumps
            and (self.scored_in_step or self.patterns == 0)
            and (bool(self.destinations) or self.kept == 0)
            and loaded
        )

    @property
    def pending_load(self) -> int:
        """Kept patterns not loaded yet: at the destination of the last load, or anywhere if none."""
        if not self.destinations:
            return self.kept
        last = self.last_destination()
        return last.pending if last else min(d.pending for d in self.destinations)

    def last_destination(self) -> DestinationStatus | None:
        dated = [d for d in self.destinations if d.last_at is not None]
        return max(dated, key=lambda d: d.last_at) if dated else None  # type: ignore[arg-type,return-value]

    @property
    def last_run_at(self) -> datetime | None:
        times = [t for t in (self.last_ingest_at, self.last_load.at if self.last_load else None) if t]
        times += [d.last_at for d in self.destinations if d.last_at]
        return max(times) if times else None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["lines_reconcile"] = self.lines_reconcile
        out["pending_load"] = self.pending_load
        out["up_to_date"] = self.up_to_date
        out["last_run_at"] = self.last_run_at
        return out


@dataclass
class LandingDump:
    file: str
    size: int


@dataclass
class BackfillStatus:
    data_dir: str
    dumps: int  # complete dumps in the manifest
    lines: int  # their lines
    unscoped_quarantined: int  # lines quarantined before a scope was known (e.g. malformed JSON)
    scopes: list[ScopeStatus]
    landing_pending: list[LandingDump]  # files in <data-dir>/landing not ingested yet
    last_ingest_at: datetime | None

    @property
    def last_run_at(self) -> datetime | None:
        times = [t for t in [self.last_ingest_at, *(s.last_run_at for s in self.scopes)] if t]
        return max(times) if times else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "data_dir": self.data_dir,
            "dumps": self.dumps,
            "lines": self.lines,
            "unscoped_quarantined": self.unscoped_quarantined,
            "last_ingest_at": self.last_ingest_at,
            "last_run_at": self.last_run_at,
            "landing_pending": [asdict(d) for d in self.landing_pending],
            "scopes": {s.scope: s.as_dict() for s in self.scopes},
        }


def _quarantine_by_scope(layout: DataLayout) -> pl.DataFrame:
    """Quarantined rows per (scope, stage); scope is null for lines that never reached one."""
    files = parquet_files(layout.quarantine())
    if not files:
        return pl.DataFrame(schema={"scope": pl.String, "stage": pl.String, "len": pl.UInt32})
    return pl.scan_parquet(files).select("scope", "stage").group_by("scope", "stage").len().collect()


def _repeats(layout: DataLayout, scope: str) -> int:
    files = parquet_files(layout.message_stats(scope))
    return int(pl.scan_parquet(files).select(pl.col("repeats").sum()).collect().item()) if files else 0


def _kept_ids(layout: DataLayout, scope: str) -> pl.DataFrame:
    scored = scan_scored(layout, scope)
    if scored is None:
        return pl.DataFrame(schema={"pattern_id": pl.String})
    return scored.filter(pl.col("kept")).select("pattern_id").collect()


def _destinations(layout: DataLayout, scope: str, kept: pl.DataFrame) -> list[DestinationStatus]:
    files = sorted(layout.ledger(scope).glob("dest=*/*.parquet"))
    if not files:
        return []
    # The latest row per (destination, pattern) is the pattern's state there (see pipelines.load.ledger).
    state = pl.scan_parquet(files).select("destination", "pattern_id", "outcome", "at").collect()
    # Most ledgers hold one row per pattern (embedded loads, compacted REST loads): then the rows are the
    # state, and the sort that finds each pattern's latest row (most of the time at 1M messages) is skipped.
    if state.select(pl.struct("destination", "pattern_id").n_unique()).item() != state.height:
        state = state.sort("at").unique(["destination", "pattern_id"], keep="last")
    kept_ids = kept["pattern_id"]
    out = []
    for (destination,), rows in state.group_by("destination", maintain_order=False):
        in_store = rows.filter(pl.col("outcome").is_in([o.value for o in IN_STORE]))
        loaded_kept = int(in_store["pattern_id"].is_in(kept_ids.implode()).sum())
        counts = dict(rows.group_by("outcome").len().iter_rows())
        out.append(
            DestinationStatus(
                destination=str(destination),
                loaded=in_store.height,
                pending=kept.height - loaded_kept,
                to_retract=in_store.height - loaded_kept,
                rejected=int(counts.get(Outcome.REJECTED.value, 0)),
                not_stored=int(counts.get(Outcome.NOT_STORED.value, 0)),
                uncertain=int(counts.get(Outcome.SENDING.value, 0)),
                last_at=rows["at"].max(),  # type: ignore[arg-type]
            )
        )
    return sorted(out, key=lambda d: d.destination)


def _last_load(layout: DataLayout, scope: str) -> LastLoad | None:
    files = parquet_files(layout.loads(scope))
    if not files:
        return None
    newest = max(files, key=lambda p: p.stat().st_mtime_ns)
    row = pl.read_parquet(newest).to_dicts()[0]
    return LastLoad(
        at=datetime.fromtimestamp(newest.stat().st_mtime, UTC),
        destination=str(row.get("destination")),
        stored=int(row.get("stored") or 0),
        already_loaded=int(row.get("already_loaded") or 0),
        retracted=int(row.get("retracted") or 0),
        rejected=int(row.get("rejected") or 0),
        pattern_count_after=row.get("pattern_count_after"),
        error=row.get("error"),
    )


def scope_status(
    layout: DataLayout,
    scope: str,
    tenant_id: str,
    project_id: str,
    manifest: pl.DataFrame,
    quarantine: pl.DataFrame,
) -> ScopeStatus:
    complete = manifest["dump_id"].to_list()
    # Staged rows of complete dumps only: files a crashed ingest left behind are never read by a run.
    raw = {d: parquet_files(layout.raw(d) / f"scope={scope}") for d in complete}
    taken_in = {p.stem.removeprefix("dump=") for p in parquet_files(layout.message_stats(scope))}
    pending_dumps = [d for d in complete if raw[d] and d not in taken_in]
    mine = quarantine.filter(pl.col("scope") == scope)
    by_stage = {stage: int(n) for _, stage, n in mine.iter_rows()}
    message_files = parquet_files(layout.messages(scope))
    paired = set(ScopeState.load(layout, scope).paired_dumps)
    n_patterns = current_rows(layout, "patterns", scope)
    kept = _kept_ids(layout, scope)
    in_step = scored_in_step(layout, scope)
    scored_rows = parquet_rows([scored_file(layout, scope)]) if scored_file(layout, scope).exists() else 0
    filtered = parquet_rows([filtered_file(layout, scope)]) if filtered_file(layout, scope).exists() else 0
    ingested = manifest.filter(pl.col("scopes").list.contains(scope))["ingested_at"]
    return ScopeStatus(
        scope=scope,
        tenant_id=tenant_id,
        project_id=project_id,
        lines_in=sum(parquet_rows(f) for f in raw.values()) + by_stage.get("ingest", 0),
        messages=parquet_rows(message_files),
        quarantined=sum(by_stage.values()),
        repeats=_repeats(layout, scope),
        patterns=n_patterns,
        unpaired=current_rows(layout, "unpaired", scope),
        kept=kept.height,
        duplicates=scored_rows - kept.height - filtered,
        filtered=filtered,
        pending_dumps=pending_dumps,
        pending_rows=sum(parquet_rows(raw[d]) for d in pending_dumps),
        unpaired_dumps=[d for d in (p.stem.removeprefix("dump=") for p in message_files) if d not in paired],
        scored_in_step=in_step,
        destinations=_destinations(layout, scope, kept),
        last_load=_last_load(layout, scope),
        last_ingest_at=ingested.max() if ingested.len() else None,  # type: ignore[arg-type]
    )


def _landing_pending(layout: DataLayout, manifest: pl.DataFrame) -> list[LandingDump]:
    if not layout.landing.is_dir():
        return []
    done = set(manifest["dump_id"].to_list())
    return [LandingDump(str(d.path), d.size) for d in discover_dumps(layout.landing) if d.dump_id not in done]


def backfill_status(data_dir: str | Path) -> BackfillStatus:
    """The status of every scope of ``data_dir``; raises :class:`NothingStaged` when it holds no dump."""
    layout = DataLayout.at(data_dir)
    if not layout.manifest.is_file():
        raise NothingStaged(f"nothing staged in {layout.root}: no dump has been ingested there yet")
    manifest = read_manifest(layout)
    if manifest.is_empty():
        raise NothingStaged(f"nothing staged in {layout.root}: the manifest lists no dump")
    quarantine = _quarantine_by_scope(layout)
    scopes = [
        scope_status(layout, scope, tenant_id, project_id, manifest, quarantine)
        for scope, tenant_id, project_id in read_scopes(layout).sort("scope").iter_rows()
    ]
    unscoped = quarantine.filter(pl.col("scope").is_null())["len"].sum()
    return BackfillStatus(
        data_dir=str(layout.root),
        dumps=manifest.height,
        lines=int(manifest["lines"].sum()),
        unscoped_quarantined=int(unscoped or 0),
        scopes=scopes,
        landing_pending=_landing_pending(layout, manifest),
        last_ingest_at=manifest["ingested_at"].max(),  # type: ignore[arg-type]
    )
