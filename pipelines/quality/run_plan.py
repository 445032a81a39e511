"""What a run would do, per scope, without doing any of it: dumps to ingest, patterns to pair, keep and
load, and whether the destination can take them (its capacity, and for REST the time the client's
rate limit implies).

Invariants: nothing is written (no staged file, no ledger row, no store folder, no Dagster run; DuckDB
runs in memory) and a REST server only receives reads (``GET /v1/version``, ``/v1/metrics``,
``/v1/billing/status``). Figures of what is already staged are exact and are the ones the run computes
(:func:`pipelines.load.plan.plan_load` against the same ledger); figures that depend on dumps not
staged yet are estimates from a scan of their ``thread_id``/``assistant_id``/``role`` fields alone, and
every estimated figure is named in :attr:`ScopePlan.estimated`. Dumps that are not plain guide NDJSON are
estimated through their format's reader (figures in records, said so in a note); a dump whose format
cannot be detected is listed but not estimated, with a note naming it.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.duck import connect
from pipelines.ingest.catalog import pending_dumps, read_manifest, read_scopes
from pipelines.ingest.dumps import Dump, discover_dumps
from pipelines.load.embedded import TRANSFORM as EMBEDDED_TRANSFORM
from pipelines.load.embedded import destination_id as embedded_destination_id
from pipelines.load.ledger import Ledger
from pipelines.load.limits import SCOPE_PATTERN_CAP
from pipelines.load.plan import plan_load
from pipelines.load.rest.options import destination_id as rest_destination_id
from pipelines.load.rest.servers import ServerConfigError
from pipelines.quality.capacity import (
    Capacity,
    EmbeddedTarget,
    RestTarget,
    estimated_record_bytes,
    record_sizes,
    rest_capacity,
    store_keys,
)
from pipelines.quality.pending import (
    PendingDump,
    Shape,
    count_lines,
    dump_format,
    json_source,
    read_records,
    scan_shape,
    scanned_as_json,
    staged_shape,
)
from pipelines.quality.status import current_rows
from pipelines.scopes import ScopeBy, ScopeMapping, load_tenant_map, scope_key
from pipelines.scoring.judge.options import JudgeOptions
from pipelines.scoring.judge.plan import judge_plan
from pipelines.tables import DataLayout, parquet_files


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
    # With --llm-judge: patterns to ask, tokens and estimated cost (JudgePlan.as_dict()).
    judge: dict[str, Any] | None = None

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


def plan_run(
    data_dir: str | Path,
    source: Path,
    mapping: ScopeMapping,
    target: EmbeddedTarget | RestTarget,
    judge: JudgeOptions | None = None,
    fmt: str | None = None,
) -> RunPlan:
    """What ``run`` with these options would do; reads only (see the module's invariants). ``fmt``
    forces the input format, as ``--format`` does."""
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
    formats = {d.label: dump_format(d, fmt) for d in todo}
    undetected = [d for d in todo if formats[d.label][0] is None]
    plain = [d for d in todo if (f := formats[d.label][0]) is not None and scanned_as_json(d, f)]
    counts: dict[str, int] = {}
    sources = [json_source([d.path for d in plain])] if plain else []
    read = [d for d in todo if d not in plain and d not in undetected]
    if read:
        frames = []
        for index, d in enumerate(read, start=1):
            frame, counts[d.label] = read_records(d, str(formats[d.label][0]), index)
            frames.append(frame)
        con.register("pending_records", pl.concat(frames).to_arrow())
        # Plain files are numbered from 1 by row_number(); the reader's rows follow them.
        sources.append("(SELECT * FROM pending_records)")
    # One scan of all pending dumps: a question in one dump and its answer in the next pair up.
    union = " UNION ALL ".join(
        f"SELECT file, thread_id, assistant_id, role, created_at, n FROM {x}" for x in sources
    )
    shape = scan_shape(con, f"({union})", mapping) if sources else Shape({}, {})
    for (t, p), exchanges in shape.exchanges.items():
        key = scope_key(t, p)
        names.setdefault(key, (t, p))
        incoming.setdefault(key, [0, 0])[1] += exchanges
    for dump in todo:
        found = formats[dump.label][0]
        if found is None:
            pending.append(PendingDump(dump.label, dump.dump_id, dump.size, 0, {}, None, "not estimated"))
            continue
        lines = count_lines(dump.path) if dump in plain else counts[dump.label]
        per_scope: dict[str, int] = {}
        for (file, t, p), n in shape.rows.items():
            if file == dump.label or (dump in plain and Path(file) == dump.path):
                key = scope_key(t, p)
                names.setdefault(key, (t, p))
                per_scope[key] = n
                incoming.setdefault(key, [0, 0])[0] += n
        unscoped += lines - sum(per_scope.values())
        pending.append(
            PendingDump(
                dump.label,
                dump.dump_id,
                dump.size,
                lines,
                dict(sorted(per_scope.items())),
                found,
                "lines" if dump in plain else "records",
            )
        )
    if read:
        notes.append(
            f"{len(read)} pending dump(s) are not plain guide NDJSON "
            f"({', '.join(sorted({str(formats[d.label][0]) for d in read}))}, or compressed): estimated "
            "through their format's reader, so their lines figures count records (messages found), not lines"
        )
    for d in undetected:
        notes.append(
            f"not estimated: {formats[d.label][1]}; its lines, scopes and patterns are left out of this plan"
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
        rows_to_stage, staged_pairs = staged_shape(con, layout, scope, waiting)
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
            sizes = record_sizes(layout, scope, tenant_id, project_id, load)
            avg = sum(sizes) / len(sizes) if sizes else estimated_record_bytes(pending, scope)
            capacity = rest_capacity(
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
                judge=None if judge is None else judge_plan(layout, scope, judge, new_patterns).as_dict(),
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
