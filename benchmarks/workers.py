"""The measured calls, one per worker process (``python -m benchmarks.run --worker NAME --args JSON``).

Each worker returns a JSON-able dict of what it measured itself: the time of the measured call alone, and
the counts the report quotes. Everything beyond the standard library is imported inside the worker that
needs it, so that each process pays only for its own imports (they are part of its measured wall time).
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

Result = dict[str, Any]


def probe(args: dict[str, Any]) -> Result:
    """How fast the host is just now: the VM's memory and CPU speed drift with other tenants' load."""
    import hashlib

    import numpy as np

    started = time.perf_counter()
    block = np.ones(2**30, dtype=np.uint8)
    touch = time.perf_counter() - started
    started = time.perf_counter()
    hashlib.sha256(memoryview(block)[: 2**28]).hexdigest()
    return {"touch_s": touch, "sha_s": time.perf_counter() - started}


def backfill(args: dict[str, Any]) -> Result:
    """One ``backfill()`` of ``source`` into ``data``, with the embedded load if ``load``; with the curation
    gates the CLI applies by default if ``gates`` (``backfill()``'s own default has none)."""
    from pipelines.runner import backfill as run_backfill
    from pipelines.scoring.gates import GateOptions
    from pipelines.scoring.options import ScoringOptions
    from pipelines.tables import DataLayout

    layout = DataLayout.at(args["data"])
    scoring = ScoringOptions()
    if args.get("gates"):
        from assets.cli.scoring_args import DEFAULT_MIN_SCORE

        scoring = ScoringOptions(gates=replace(GateOptions.defaults(), min_score=DEFAULT_MIN_SCORE))
    sampler = RssSampler()
    started = time.perf_counter()
    run = run_backfill(
        layout, Path(args["source"]), scoring=scoring, load=args["load"], store=layout.engramia
    )
    seconds = time.perf_counter() - started
    samples = sampler.stop()
    ingest_end = started + run.seconds["ingest"]
    scopes = run.scopes.values()
    return {
        "seconds": seconds,
        "rss_ingest_mb": max((r for t, r in samples if t <= ingest_end), default=0),
        "rss_scopes_mb": max((r for t, r in samples if t > ingest_end), default=0),
        "stages": {k: round(v, 2) for k, v in run.seconds.items()},
        "lines": sum(d.lines for d in run.dumps),
        "messages": sum(m.messages for s in scopes for m in s.messages),
        "patterns": sum(s.scoring.patterns for s in scopes),
        "kept": sum(s.scoring.kept for s in scopes),
        "stored": sum(s.load.stored for s in scopes if s.load),
    }


def load(args: dict[str, Any]) -> Result:
    """The embedded load alone, of every scope of an already transformed ``data`` folder."""
    from pipelines.ingest.catalog import read_scopes
    from pipelines.load.embedded import load_embedded
    from pipelines.tables import DataLayout

    layout = DataLayout.at(args["data"])
    started = time.perf_counter()
    stored = 0
    for scope, tenant_id, project_id in read_scopes(layout).iter_rows():
        result = load_embedded(layout, scope, tenant_id, project_id, layout.engramia)
        if not result.reconciles:
            raise RuntimeError(f"{scope}: pattern_count does not reconcile: {result}")
        stored += result.stored
    return {"seconds": time.perf_counter() - started, "stored": stored}


def fsprobe(args: dict[str, Any]) -> Result:
    """The file system's own ceiling for what the embedded store does per pattern: write a small file
    under a temporary name, then rename it into place (one writer, fresh folder)."""
    folder = Path(args["folder"])
    folder.mkdir(parents=True)
    text = "x" * 3000
    started = time.perf_counter()
    for i in range(args["files"]):
        with open(folder / f"f{i}.tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(folder / f"f{i}.tmp", folder / f"f{i}.json")
    seconds = time.perf_counter() - started
    return {"files_per_s": args["files"] / seconds}


def dedup(args: dict[str, Any]) -> Result:
    """Near-duplicate removal of ``tasks`` synthetic prompts in one scope (``benchmarks.bench_dedup``)."""
    from benchmarks.bench_dedup import run

    started = time.perf_counter()
    out = run(args["tasks"], args["seed"])
    return {"seconds": time.perf_counter() - started, **out}


def guide(args: dict[str, Any]) -> Result:
    """The migration guide's own import, for comparison (``guide_import``)."""
    return guide_import(Path(args["source"]), args["pairs"], Path(args["store"]))


WORKERS: dict[str, Callable[[dict[str, Any]], Result]] = {
    "probe": probe,
    "backfill": backfill,
    "load": load,
    "fsprobe": fsprobe,
    "dedup": dedup,
    "guide": guide,
}


# Workers defined beside their rows register themselves when their module is imported; a worker process
# imports only this module, so it imports theirs when it is asked for one of them.
REGISTERED_BY = {
    "launch": "benchmarks.bench_doors",
    "checks": "benchmarks.bench_doors",
    "judge": "benchmarks.bench_judge",
    "scale": "benchmarks.bench_scaleout",
}


def worker_for(name: str) -> Callable[[dict[str, Any]], Result]:
    if name not in WORKERS and name in REGISTERED_BY:
        importlib.import_module(REGISTERED_BY[name])
    worker = WORKERS.get(name)
    if worker is None:
        raise ValueError(f"unknown worker {name!r}")
    return worker


def run_worker(name: str, args: dict[str, Any]) -> Result:
    """Run one measured call in this (fresh) process; returns what the call itself measured."""
    return worker_for(name)(args)


class RssSampler:
    """Samples this process's RSS (MB) every 0.2 s on a thread, to tell which stage set the peak."""

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self._samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._samples.append((time.perf_counter(), self._process.memory_info().rss // 2**20))

    def stop(self) -> list[tuple[float, int]]:
        self._stop.set()
        self._thread.join()
        return self._samples


def guide_import(source: Path, max_pairs: int, store: Path) -> Result:
    """The migration guide's own logic: read the messages into Python, sort each thread by created_at,
    pair each user message with the next assistant message, one ``Memory.learn`` per pair.

    It reads only as many lines as it needs for ``max_pairs`` pairs: learn lists the whole scope twice
    per call, so the loop is quadratic and a whole export is out of reach.
    """
    import logging
    from collections import defaultdict

    import engramia
    from engramia.providers.json_storage import JSONStorage

    logging.disable(logging.WARNING)  # learn() warns on every call that there is no embedding provider
    started = time.perf_counter()
    threads: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with source.open(encoding="utf-8") as f:
        for n, line in enumerate(f):
            if n >= max_pairs * 4:
                break
            try:
                message = json.loads(line)
            except ValueError:
                continue
            # The guide assumes well-formed messages (its sort fails on a non-numeric created_at):
            # keep only those, so it can run at all on an export with broken lines.
            if (
                isinstance(message, dict)
                and isinstance(message.get("thread_id"), str)
                and isinstance(message.get("created_at"), int | float)
                and isinstance(message.get("text"), str)
            ):
                threads[message["thread_id"]].append(message)
    pairs = []
    for messages in threads.values():
        messages.sort(key=lambda m: m["created_at"])
        for question, answer in itertools.pairwise(messages):
            if question.get("role") == "user" and answer.get("role") == "assistant":
                pairs.append((question["text"], answer["text"]))
    pairs = pairs[:max_pairs]
    memory = engramia.Memory(embeddings=None, storage=JSONStorage(path=str(store)))
    for task, code in pairs:
        memory.learn(task=task, code=code, eval_score=5.0)
    return {"seconds": time.perf_counter() - started, "pairs": len(pairs)}
