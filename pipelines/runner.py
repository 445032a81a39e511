"""The whole backfill as plain function calls, without Dagster: for benchmarks, tests and scripting.

The Dagster assets call the same stage functions one by one; this module only strings them together.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.embedded import load_embedded
from pipelines.incremental import PairingResult, pair_scope
from pipelines.ingest import DEFAULT_CHUNK_BYTES, DumpResult, ingest, read_scopes, scope_names
from pipelines.layout import DataLayout
from pipelines.load_plan import LoadResult
from pipelines.messages import MessageStats, stage_messages
from pipelines.pairing import PairingOptions
from pipelines.scopes import ScopeMapping
from pipelines.scoring import ScoringOptions, ScoringResult, read_feedback, score_scope


@dataclass
class ScopeRun:
    scope: str
    messages: list[MessageStats]
    pairing: PairingResult
    scoring: ScoringResult
    load: LoadResult | None
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class BackfillRun:
    dumps: list[DumpResult]
    scopes: dict[str, ScopeRun]
    seconds: dict[str, float] = field(default_factory=dict)


def backfill(
    layout: DataLayout,
    source: Path,
    mapping: ScopeMapping = ScopeMapping(),
    pairing: PairingOptions = PairingOptions(),
    scoring: ScoringOptions = ScoringOptions(),
    load: bool = True,
    store: Path | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> BackfillRun:
    """Ingest new dumps under ``source`` and carry every scope through to the embedded store."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    dumps = ingest(layout, source, mapping, chunk_bytes)
    timings["ingest"] = time.perf_counter() - t0
    feedback = read_feedback(scoring) if scoring.feedback else None
    scopes = {}
    for scope in read_scopes(layout)["scope"].to_list():
        t = {}
        s0 = time.perf_counter()
        staged = stage_messages(layout, scope)
        t["messages"] = time.perf_counter() - s0
        s0 = time.perf_counter()
        paired = pair_scope(layout, scope, pairing)
        t["pairing"] = time.perf_counter() - s0
        s0 = time.perf_counter()
        scored = score_scope(layout, scope, scoring, feedback)
        t["scoring"] = time.perf_counter() - s0
        loaded = None
        if load:
            s0 = time.perf_counter()
            tenant_id, project_id = scope_names(layout, scope)
            loaded = load_embedded(layout, scope, tenant_id, project_id, store)
            t["load"] = time.perf_counter() - s0
        scopes[scope] = ScopeRun(scope, staged, paired, scored, loaded, t)
    for key in ("messages", "pairing", "scoring", "load"):
        timings[key] = sum(s.seconds.get(key, 0.0) for s in scopes.values())
    timings["total"] = time.perf_counter() - t0
    return BackfillRun(dumps, scopes, timings)
