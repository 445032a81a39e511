"""What a run would do, per scope, without doing any of it: dumps to ingest, patterns to pair, keep and
load, and whether the destination can take them (its capacity, and for REST the time the client's
rate limit implies).

Invariants: nothing is written (no staged file, no ledger row, no store folder, no Dagster run; DuckDB
runs in memory) and a REST server only receives reads (``GET /v1/version``, ``/v1/metrics``,
``/v1/billing/status``). Figures of what is already staged are exact and are the ones the run computes
(:func:`pipelines.load.plan.plan_load` against the same ledger); figures that depend on dumps not
staged yet are estimates from a scan of their ``thread_id``/``assistant_id``/``role`` fields alone, and
every estimated figure is named in :attr:`ScopePlan.estimated`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.duck import connect, file_list
from pipelines.ingest.catalog import pending_dumps, read_manifest, read_scopes
from pipelines.ingest.dumps import Dump, discover_dumps
from pipelines.load.embedded import TRANSFORM as EMBEDDED_TRANSFORM
from pipelines.load.embedded import destination_id as embedded_destination_id
from pipelines.load.ledger import Ledger
from pipelines.load.limits import SCOPE_PATTERN_CAP
from pipelines.load.plan import LoadPlan, plan_load, texts_to_send
from pipelines.load.records import KEY_PREFIX, import_record
from pipelines.load.rest.batching import encode, pack_by_bytes
from pipelines.load.rest.client import Backoff, EngramiaClient
from pipelines.load.rest.errors import RestError
from pipelines.load.rest.options import RestMode, RestOptions
from pipelines.load.rest.options import destination_id as rest_destination_id
from pipelines.load.rest.servers import ServerConfigError, ServerMap
from pipelines.quality.status import current_rows, parquet_rows
from pipelines.scopes import ScopeBy, ScopeMapping, load_tenant_map, scope_key
from pipelines.tables import DataLayout, parquet_files

# The default plan of an Engramia server without billing: 10,000 patterns, of which a project may use
# ``quota_pct`` (ENGRAMIA_PROJECT_QUOTA_PCT, default 0.8).
DEFAULT_PLAN_PATTERNS = 10_000
# An import record's JSON beyond the task and code texts (key, provenance, ids, score), measured on the
# sample: used only to estimate the request count of patterns not paired yet.
RECORD_OVERHEAD_BYTES = 700


@dataclass
class PendingDump:
    file: str
    dump_id: str
    size: int
    lines: int  # counted
    lines_per_scope: dict[str, int]  # estimate: rows whose thread_id/assistant_id/role parse


@dataclass
class Capacity:
    """Whether the destination can take what a run would send to one scope."""

    destination: str
    pattern_count: int | None  # now, as the store or the server counts it
    projected: int | None  # after the run: pattern_count - retracted + sent
    scope_cap: int = SCOPE_PATTERN_CAP
    quota: int | None = None  # REST: patterns the project may hold
    quota_source: str | None = None
    server_version: str | None = None
    requests: int | None = None  # REST: requests to send the patterns (learn: one each; import: batches)
    requests_per_minute: float | None = None
    minutes: float | None = None  # at the client's rate limit; None when it sets none
    fits: bool | None = None
    error: str | None = None


@dataclass
class ScopePlan:
    scope: str
    tenant_id: str
    project_id: str
    new: bool  # no dump has produced this scope yet
    lines_to_ingest: int  # lines of pending dumps routed to this scope
    rows_to_stage: int  # staged rows the scope's messages have not taken in yet
    patterns: int  # current patterns, plus the estimate of new ones
    new_patterns: int
    kept: int
    to_load: int
    to_retract: int
    to_update: int  # loaded, but made from other options or scores: compared, rewritten if changed
    already_loaded: int
    capacity: Capacity
    estimated: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunPlan:
    data_dir: str
    input: str
    destination: str
    pending_dumps: list[PendingDump]
    ingested_dumps: int  # dumps of the input the manifest already lists (not read again)
    scopes: list[ScopePlan]
    unscoped_lines: int  # estimate: lines of pending dumps that reach no scope (quarantined at ingest)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "data_dir": self.data_dir,
            "input": self.input,
            "destination": self.destination,
            "pending_dumps": [asdict(d) for d in self.pending_dumps],
            "ingested_dumps": self.ingested_dumps,
            "unscoped_lines": self.unscoped_lines,
            "scopes": {s.scope: s.as_dict() for s in self.scopes},
            "totals": {
                name: sum(getattr(s, name) for s in self.scopes)
                for name in ("lines_to_ingest", "new_patterns", "kept", "to_load", "to_retract")
            },
            "notes": self.notes,
        }


@dataclass
class EmbeddedTarget:
    store: Path


@dataclass
class RestTarget:
    servers: ServerMap
    options: RestOptions


def count_lines(path: Path, chunk: int = 16 << 20) -> int:
    """Lines as the ingest numbers them (a last line without a newline counts)."""
    lines, last = 0, b"\n"
    with open(path, "rb") as f:
        while data := f.read(chunk):
            lines += data.count(b"\n")
            last = data[-1:]
    return lines + (0 if last == b"\n" else 1)


# Rows per (file, scope), and exchanges per scope: a user message followed by an assistant message in its
# thread's order (created_at, then ingest order ``n``), which is a pattern under either pairing (merge
# joins the runs of one role into a turn, strict pairs exactly these neighbours). System messages take no
# part; blank texts (not read here) and threads continued from staged messages make it an estimate.
_SHAPE_SQL = """
WITH rows AS (
  SELECT file, {tenant} AS tenant_id, {project} AS project_id, thread_id, role, created_at, n FROM {source}
),
turns AS (
  SELECT tenant_id, project_id, role,
         lag(role) OVER (PARTITION BY tenant_id, project_id, thread_id ORDER BY created_at, n) AS prev
  FROM rows WHERE role IN ('user', 'assistant')
)
SELECT file, tenant_id, project_id, count(*)::BIGINT, 0::BIGINT FROM rows GROUP BY ALL
UNION ALL
SELECT NULL, tenant_id, project_id, 0, count(*) FILTER (role = 'assistant' AND prev = 'user')
FROM turns GROUP BY ALL
"""


@dataclass
class Shape:
    rows: dict[tuple[str, str, str], int]  # (file, tenant, project) -> rows
    exchanges: dict[tuple[str, str], int]  # (tenant, project) -> user -> assistant exchanges


def _json_source(paths: list[Path]) -> str:
    """The dumps in ingest order; rows whose fields do not parse are skipped (the ingest quarantines
    them). row_number() follows the files' order because the connection preserves insertion order."""
    files = file_list(paths)
    return (
        f"(SELECT filename AS file, *, row_number() OVER () AS n FROM read_json({files}, "
        "format='newline_delimited', ignore_errors=true, filename=true, columns={'thread_id': 'VARCHAR', "
        "'assistant_id': 'VARCHAR', 'role': 'VARCHAR', 'created_at': 'BIGINT'}))"
    )


def _shape(con: Any, source: str, mapping: ScopeMapping) -> Shape:
    """Rows and exchanges of rows with a thread and an assistant; rows the ingest would quarantine for a
    missing field or an unmapped thread reach no scope."""
    tenant, project = mapping.sql_columns()
    if mapping.scope_by is ScopeBy.TENANT:
        source = (
            f"(SELECT s.*, m.tenant_id AS map_tenant FROM {source} s JOIN tenant_map m USING (thread_id))"
        )
    where = f"(SELECT * FROM {source} WHERE thread_id IS NOT NULL AND assistant_id IS NOT NULL)"
    sql = _SHAPE_SQL.format(tenant=tenant, project=project, source=where)
    shape = Shape({}, {})
    for file, t, p, n, exchanges in con.execute(sql).fetchall():
        if not (t and p):
            continue
        if file is None:
            shape.exchanges[(t, p)] = int(exchanges)
        else:
            shape.rows[(file, t, p)] = int(n)
    return shape


def store_keys(store: Path, tenant_id: str, project_id: str) -> set[str]:
    """Pattern keys the embedded store holds for a scope, read from its folder without creating it
    (Engramia's JSONStorage keeps the default scope at the root, others under ``<tenant>/<project>/``)."""

    def segment(s: str) -> str:
        # engramia.providers.json_storage._sanitize_segment
        return "".join(c if c.isalnum() or c in "-_" else "_" for c in s) or "default"

    root = Path(store)
    if (tenant_id, project_id) != ("default", "default"):
        root = root / segment(tenant_id) / segment(project_id)
    folder = root / KEY_PREFIX.rstrip("/")
    try:
        with os.scandir(folder) as it:
            names = [e.name for e in it]
    except OSError:
        return set()
    return {KEY_PREFIX + n[:-5] for n in names if n.endswith(".json") and not n.startswith("_")}


def _import_requests(sizes: list[int], estimated: int, avg_bytes: float, options: RestOptions) -> int:
    batches, oversize = pack_by_bytes(sizes, options.body_budget, options.max_batch_records)
    requests = len(batches) + len(oversize)  # an oversize record is tried once, then rejected
    if estimated:
        per_request = max(1, min(options.max_batch_records, int(options.body_budget // max(avg_bytes, 1))))
        requests += math.ceil(estimated / per_request)
    return requests


def _rest_capacity(
    target: RestTarget,
    scope: str,
    tenant_id: str,
    project_id: str,
    sizes: list[int],
    estimated: int,
    avg_bytes: float,
    to_retract: int,
) -> Capacity:
    options = target.options
    try:
        server = target.servers.for_scope(scope, tenant_id, project_id)
    except ServerConfigError as exc:
        return Capacity(destination="rest", pattern_count=None, projected=None, error=str(exc))
    cap = Capacity(destination=rest_destination_id(server), pattern_count=None, projected=None)
    n_send = len(sizes) + estimated
    cap.requests_per_minute = options.requests_per_minute or None
    cap.requests = (
        n_send if options.mode is RestMode.LEARN else _import_requests(sizes, estimated, avg_bytes, options)
    )
    if cap.requests_per_minute:
        cap.minutes = cap.requests / cap.requests_per_minute
    # Three reads: no client pacing (the load's own pacing is for the writes), one retry at most.
    client = EngramiaClient(
        server.url,
        server.api_key_env,
        label=f"{scope} -> {server.url}",
        timeout=options.timeout,
        requests_per_minute=None,
        backoff=Backoff(max_retries=1),
        max_retry_after=5.0,
        rate_limit_budget=5.0,
    )
    try:
        info = client.version()
        cap.server_version = f"engramia {info.get('app_version') or '?'}"
        cap.pattern_count = client.pattern_count()
        billing = client.billing_status()
    except (RestError, KeyError, TypeError, ValueError) as exc:
        cap.error = f"{type(exc).__name__}: {exc}"
        return cap
    finally:
        client.close()
    if billing and billing.get("patterns_limit") is not None:
        limit = int(billing["patterns_limit"])
        cap.quota_source = f"billing status: patterns_limit {limit:,} x quota_pct {options.quota_pct:g}"
    else:
        limit = DEFAULT_PLAN_PATTERNS
        cap.quota_source = (
            f"the default plan (no billing status): {limit:,} x quota_pct {options.quota_pct:g}"
        )
    cap.quota = int(limit * options.quota_pct)
    cap.projected = cap.pattern_count - to_retract + n_send
    # The server refuses an import when current + batch >= quota, a learn when current >= quota.
    within_quota = (
        cap.projected < cap.quota if options.mode is RestMode.IMPORT else cap.projected <= cap.quota
    )
    cap.fits = n_send == 0 or (within_quota and cap.projected <= SCOPE_PATTERN_CAP)
    return cap


def _staged_shape(con: Any, layout: DataLayout, scope: str, dumps: list[str]) -> tuple[int, int]:
    """(rows, exchanges) of staged rows the scope's messages have not taken in yet."""
    files = [f for d in dumps for f in parquet_files(layout.raw(d) / f"scope={scope}")]
    if not files:
        return 0, 0
    source = (
        "(SELECT NULL AS file, thread_id, assistant_id, role, created_epoch AS created_at, "
        f"dump_seq * 10_000_000_000 + line_no AS n FROM read_parquet({file_list(files)}))"
    )
    # Staged rows already belong to this scope: any one-scope mapping counts them alike.
    shape = _shape(con, source, ScopeMapping(scope_by=ScopeBy.SINGLE))
    return parquet_rows(files), sum(shape.exchanges.values())


def plan_run(
    data_dir: str | Path,
    source: Path,
    mapping: ScopeMapping,
    target: EmbeddedTarget | RestTarget,
) -> RunPlan:
    """What ``run`` with these options would do; reads only (see the module's invariants)."""
    layout = DataLayout.at(data_dir)
    manifest = read_manifest(layout)
    every = discover_dumps(source)
    todo: list[Dump] = pending_dumps(layout, source)
    con = connect(preserve_order=True)
    if mapping.scope_by is ScopeBy.TENANT and mapping.tenant_map is not None:
        load_tenant_map(con, Path(mapping.tenant_map))
    notes: list[str] = []
    recorded = set(manifest["mapping"].unique().to_list()) if manifest.height else set()
    if recorded and mapping.describe() not in recorded:
        notes.append(
            f"the data folder was built with {', '.join(sorted(recorded))}; a run with "
            f"{mapping.describe()} would refuse (a new mapping needs a fresh --data-dir)"
        )
    names: dict[str, tuple[str, str]] = {s: (t, p) for s, t, p in read_scopes(layout).iter_rows()}
    known = set(names)
    incoming: dict[str, list[int]] = {}  # scope -> [rows, pairs] of pending dumps
    pending: list[PendingDump] = []
    unscoped = 0
    # One scan of all pending dumps: a question in one dump and its answer in the next pair up.
    shape = _shape(con, _json_source([d.path for d in todo]), mapping) if todo else Shape({}, {})
    for (t, p), exchanges in shape.exchanges.items():
        key = scope_key(t, p)
        names.setdefault(key, (t, p))
        incoming.setdefault(key, [0, 0])[1] += exchanges
    for dump in todo:
        lines = count_lines(dump.path)
        per_scope: dict[str, int] = {}
        for (file, t, p), n in shape.rows.items():
            if Path(file) == dump.path:
                key = scope_key(t, p)
                names.setdefault(key, (t, p))
                per_scope[key] = n
                incoming.setdefault(key, [0, 0])[0] += n
        unscoped += lines - sum(per_scope.values())
        pending.append(
            PendingDump(str(dump.path), dump.dump_id, dump.size, lines, dict(sorted(per_scope.items())))
        )
    complete = manifest["dump_id"].to_list()
    scopes = []
    for scope in sorted(names):
        tenant_id, project_id = names[scope]
        estimated: list[str] = []
        taken_in = {p.stem.removeprefix("dump=") for p in parquet_files(layout.message_stats(scope))}
        waiting = [
            d for d in complete if d not in taken_in and parquet_files(layout.raw(d) / f"scope={scope}")
        ]
        rows_to_stage, staged_pairs = _staged_shape(con, layout, scope, waiting)
        lines_in, new_pairs = incoming.get(scope, [0, 0])
        new_patterns = new_pairs + staged_pairs
        if scope in incoming:
            estimated += ["lines_to_ingest"]
        if new_patterns:
            estimated += ["patterns", "new_patterns", "kept", "to_load"]
        if isinstance(target, EmbeddedTarget):
            destination = embedded_destination_id(target.store)
            held = store_keys(target.store, tenant_id, project_id)
            transform = EMBEDDED_TRANSFORM
        else:
            server = None
            with suppress(ServerConfigError):  # reported by the capacity check below
                server = target.servers.for_scope(scope, tenant_id, project_id)
            destination = rest_destination_id(server) if server else "rest"
            held = None
            # As the REST load names it: redaction on or off changes what is sent.
            transform = "redacted" if target.options.redact else "as-is"
        in_store = Ledger(layout, scope, destination).in_store()
        if held is not None:
            # As the embedded load does: the ledger counts only for keys the store really holds.
            in_store = in_store.filter(pl.col("key").is_in(list(held)))
        # The run's own plan for what is staged (a scope no dump produced yet has nothing staged).
        load = plan_load(layout, scope, in_store, transform)
        n_send, n_retract = load.send_ids.height, load.to_retract.height
        if isinstance(target, EmbeddedTarget):
            count = len(held or ())
            projected = count - n_retract + n_send + new_patterns
            capacity = Capacity(
                destination=destination,
                pattern_count=count,
                projected=projected,
                fits=projected <= SCOPE_PATTERN_CAP,
            )
        else:
            sizes = _record_sizes(layout, scope, tenant_id, project_id, load)
            avg = sum(sizes) / len(sizes) if sizes else _estimated_record_bytes(pending, scope)
            capacity = _rest_capacity(
                target, scope, tenant_id, project_id, sizes, new_patterns, avg, n_retract
            )
            if new_patterns:
                estimated += ["capacity.requests", "capacity.minutes"]
        if new_patterns:
            estimated.append("capacity.projected")
        scopes.append(
            ScopePlan(
                scope=scope,
                tenant_id=tenant_id,
                project_id=project_id,
                new=scope not in known,
                lines_to_ingest=lines_in,
                rows_to_stage=rows_to_stage,
                patterns=current_rows(layout, "patterns", scope) + new_patterns,
                new_patterns=new_patterns,
                kept=load.kept + new_patterns,
                to_load=n_send + new_patterns,
                to_retract=n_retract,
                to_update=load.to_update.height,
                already_loaded=load.already,
                capacity=capacity,
                estimated=estimated,
            )
        )
    if any(s.estimated for s in scopes):
        notes.append(
            "estimates: lines per scope from a scan of thread_id/assistant_id/role/created_at; new patterns "
            "as the user -> assistant exchanges of each thread; near-duplicates among them are not known "
            "before scoring, so kept and to_load count them as kept"
        )
    return RunPlan(
        data_dir=str(layout.root),
        input=str(source),
        destination="embedded" if isinstance(target, EmbeddedTarget) else target.options.mode.value,
        pending_dumps=pending,
        ingested_dumps=len(every) - len(todo),
        scopes=scopes,
        unscoped_lines=unscoped,
        notes=notes,
    )


def _record_sizes(
    layout: DataLayout, scope: str, tenant_id: str, project_id: str, load: LoadPlan
) -> list[int]:
    """Encoded import record sizes of the patterns the load would send (before redaction)."""
    frame = texts_to_send(layout, scope, load)
    if frame is None:
        return []
    return [len(encode(import_record(row, tenant_id, project_id))) for row in frame.iter_rows(named=True)]


def _estimated_record_bytes(pending: Iterable[PendingDump], scope: str) -> float:
    """A record of a pattern not paired yet: about two lines of its dumps (question and answer)."""
    sizes = [(d.size / d.lines, n) for d in pending if d.lines and (n := d.lines_per_scope.get(scope))]
    if not sizes:
        return 2 * RECORD_OVERHEAD_BYTES
    per_line = sum(s * n for s, n in sizes) / sum(n for _, n in sizes)
    return 2 * per_line + RECORD_OVERHEAD_BYTES
