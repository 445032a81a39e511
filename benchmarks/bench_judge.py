"""The ``judge`` row: LLM-judged patterns per second through the official ``openai`` client, with
concurrency, against the OpenAI-compatible test server (tests/support/openai_server.py) running in its
own process on 127.0.0.1; then the same patterns again, which the cache must answer with zero requests.

The worker registers itself in ``benchmarks.workers.WORKERS`` when this module is imported (the row
list imports it, and so does every worker process through ``benchmarks.run``).
"""

from __future__ import annotations

import multiprocessing
import shutil
import time
from typing import Any

from benchmarks.measure import measure, worker_command
from benchmarks.paths import WORK
from benchmarks.report import Row
from benchmarks.workers import WORKERS

TARGET = 200.0  # judged patterns per second


def _serve(conn: Any) -> None:
    from tests.support.openai_server import OpenAIServer

    server = OpenAIServer().start()
    conn.send(server.url)
    conn.recv()  # until told to stop
    server.stop()


def judge_worker(args: dict[str, Any]) -> dict[str, Any]:
    import os

    import polars as pl

    from pipelines.scoring.judge.cache import JudgeCache
    from pipelines.scoring.judge.judging import judge_patterns
    from pipelines.scoring.judge.options import JudgeOptions

    n, concurrency = int(args["patterns"]), int(args["concurrency"])
    folder = WORK / "judge-cache"
    shutil.rmtree(folder, ignore_errors=True)
    frame = pl.DataFrame(
        {
            "pattern_id": [f"oai_{i:024x}" for i in range(n)],
            "task": [
                f"How do I configure feature {i} of the billing service for tenant {i % 97}?"
                for i in range(n)
            ],
            "code": [
                f"Open Settings > Billing, choose feature {i}, then set the limit and save. " * 4
                for i in range(n)
            ],
        }
    )
    ours, theirs = multiprocessing.Pipe()
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(theirs,), daemon=True)
    server.start()
    url = ours.recv()
    os.environ["BENCH_JUDGE_KEY"] = "sk-bench-not-secret"
    options = JudgeOptions(
        "bench-judge", base_url=url, api_key_env="BENCH_JUDGE_KEY", concurrency=concurrency
    )
    try:
        started = time.perf_counter()
        judged, stats = judge_patterns(frame, options, JudgeCache(folder))
        seconds = time.perf_counter() - started
        started = time.perf_counter()
        _, again = judge_patterns(frame, options, JudgeCache(folder))
        cached_seconds = time.perf_counter() - started
    finally:
        ours.send("stop")
        server.join(10)
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "seconds": seconds,
        "patterns": n,
        "answered": stats.answered,
        "errors": stats.errors,
        "per_s": round(stats.answered / seconds, 1),
        "rerun_asked": again.asked,
        "rerun_cached": again.cached,
        "rerun_seconds": round(cached_seconds, 3),
        "judged_rows": judged.height,
    }


WORKERS["judge"] = judge_worker


def bench_judge(patterns: int, concurrency: int = 16) -> Row:

    args = {"patterns": patterns, "concurrency": concurrency}
    m = measure("judge", **args)
    inner = m.inner
    rate = float(inner["per_s"])
    return Row(
        name="judge",
        title=f"LLM judge: {patterns:,} patterns through the openai client, {concurrency} in flight, "
        "against the local OpenAI-compatible test server; then a cached re-run",
        input=f"{patterns:,} synthetic patterns (~350 characters each)",
        command=worker_command("judge", **args),
        wall_s=m.wall,
        rss_mb=m.rss_mb,
        throughput=f"{rate:,.0f} judged patterns/s",
        target=f">= {TARGET:.0f} judged patterns/s; cached re-run asks nothing",
        met=rate >= TARGET and inner["rerun_asked"] == 0 and inner["errors"] == 0,
        details=f"{inner['answered']:,} answered in {inner['seconds']:.2f} s ({inner['errors']} errors); "
        f"re-run: {inner['rerun_asked']} requests, {inner['rerun_cached']:,} from the cache in "
        f"{inner['rerun_seconds']} s; the server runs in its own process on the same 2 cores",
    )
