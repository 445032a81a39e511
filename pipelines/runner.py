"""The whole backfill as plain function calls, without Dagster: for benchmarks, tests and scripting.

The Dagster assets call the same stage functions one by one; this module only strings them together.
Scopes share nothing after ingest (each has its own files and its own Engramia folder), so they are
carried through their stages on a small thread pool: the stages spend their time in Polars, DuckDB,
Arrow and file I/O, which release the GIL, so two scopes keep two cores busy.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.imports import ENGRAMIA_LOAD, import_ahead
from pipelines.ingest.catalog import read_scopes, scope_names
from pipelines.ingest.dumps import DEFAULT_CHUNK_BYTES
from pipelines.ingest.messages import MessageStats, stage_messages
from pipelines.ingest.staging import DumpResult, ingest
from pipelines.load.plan import LoadResult
from pipelines.pairing.batches import PairingResult, pair_scope
from pipelines.pairing.pairs import PairingOptions
from pipelines.scopes import ScopeMapping
from pipelines.scoring.feedback import read_feedback
from pipelines.scoring.options import ScoringOptions
from pipelines.scoring.scores import ScoringResult, score_scope
from pipelines.tables import DataLayout


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


_DEFAULT_MAPPING = ScopeMapping()
_DEFAULT_PAIRING = PairingOptions()
_DEFAULT_SCORING = ScoringOptions()


def backfill(
    layout: DataLayout,
    source: Path,
    mapping: ScopeMapping = _DEFAULT_MAPPING,
    pairing: PairingOptions = _DEFAULT_PAIRING,
    scoring: ScoringOptions = _DEFAULT_SCORING,
    load: bool = True,
    store: Path | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    workers: int | None = None,
) -> BackfillRun:
    """Ingest new dumps under ``source`` and carry every scope through to the embedded store.

    ``workers`` scopes are processed at once (default: one per core, at most 2, which bounds memory).
    Per-stage ``seconds`` of the run add up the scopes' times, so with several workers they can exceed
    the wall time in ``seconds["total"]``.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    # Transform-only runs never need engramia: a load imports it beside ingest, not after.
    importer = import_ahead(ENGRAMIA_LOAD) if load else None
    dumps = ingest(layout, source, mapping, chunk_bytes)
    timings["ingest"] = time.perf_counter() - t0
    feedback = read_feedback(scoring) if scoring.feedback else None
    load_lock = threading.Lock()

    def run_scope(scope: str) -> ScopeRun:
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
            if importer is not None:
                importer.join()
            from pipelines.load.embedded import load_embedded

            # One scope writes at a time: the file system creates files faster for one writer than for
            # two (measured), and the other thread keeps transforming or planning its scope meanwhile.
            loaded = load_embedded(layout, scope, tenant_id, project_id, store, writes=load_lock)
            t["load"] = time.perf_counter() - s0
        return ScopeRun(scope, staged, paired, scored, loaded, t)

    names = read_scopes(layout)["scope"].to_list()
    workers = workers or min(2, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="scope") as pool:
        scopes = dict(zip(names, pool.map(run_scope, names), strict=True))
    for key in ("messages", "pairing", "scoring", "load"):
        timings[key] = sum(s.seconds.get(key, 0.0) for s in scopes.values())
    timings["total"] = time.perf_counter() - t0
    return BackfillRun(dumps, scopes, timings)
