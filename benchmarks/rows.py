"""The rows of the report: what each benchmark runs, at which sizes, and how its result reads.

Each ``bench_*`` function prepares its inputs (``benchmarks.inputs``), runs its workers in fresh
processes (``benchmarks.measure``) and returns the report's ``Row`` (or rows) with the command that
reproduces it. ``FULL`` sizes are those of RESULTS.md, ``QUICK`` those of ``--quick``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.bench_chatgpt import bench_chatgpt, bench_cli_chatgpt
from benchmarks.bench_doors import (
    bench_checks,
    bench_cli,
    bench_cli_incremental,
    bench_cli_transform,
    bench_launched,
    cli_command,
    core_then_cli,
    shown,
)
from benchmarks.bench_judge import bench_judge
from benchmarks.bench_scaleout import bench_scaleout
from benchmarks.inputs import fresh, incremental_dumps, landing, prepared, size, size_label, synth
from benchmarks.measure import Measured, measure, worker_command
from benchmarks.paths import WORK
from benchmarks.repeats import median, spread
from benchmarks.report import Row


@dataclass(frozen=True)
class Sizes:
    transform: int = 1_000_000
    big: int = 10_000_000
    dedup_tasks: int = 1_000_000
    load_messages: int = 100_000
    incremental_base: int = 1_000_000
    incremental_load_base: int = 1_000_000
    # A small base, for reference: there the run is mostly what every scope costs whatever is new.
    incremental_small_base: int = 100_000
    guide_pairs: int = 1_000
    judge_patterns: int = 5_000
    # The doors users use: the CLI on the 1M export, and one scope of a 1M export's scope size (~83k).
    cli_messages: int = 1_000_000
    one_scope_messages: int = 85_000
    # Rows that take seconds run this many times and report the median run: the VM's CPU and memory
    # speed drift by a third between minutes (other tenants), so one run says little.
    repeats: int = 3
    suffix: str = ""


FULL = Sizes()
QUICK = Sizes(
    transform=20_000,
    big=50_000,
    dedup_tasks=20_000,
    load_messages=5_000,
    incremental_base=20_000,
    incremental_load_base=20_000,
    incremental_small_base=5_000,
    guide_pairs=150,
    judge_patterns=500,
    cli_messages=20_000,
    one_scope_messages=5_000,
    repeats=1,
    suffix="-quick",
)


def bench_transform(sizes: Sizes, big: bool) -> Row:
    n = sizes.big if big else sizes.transform
    label = size_label(n)
    source = synth(WORK / f"m{label}.ndjson", n)
    data = fresh(WORK / f"data-transform-{label}")
    args = {"source": str(source), "data": str(data), "load": False}
    runs = []
    for _ in range(sizes.repeats):
        runs.append(measure("backfill", **args))
        shutil.rmtree(data)  # tens of GB at 10M, in a few large files: only the measurement is kept
    m = median(runs, key=lambda r: r.wall)
    wall_target, rss_target = (180.0, 4096.0) if big else (15.0, 2048.0)
    inner = m.inner
    return Row(
        name="transform_10m" if big else "transform_1m",
        title=f"{label} messages: raw NDJSON -> staged -> paired -> scored (dedup)",
        input=f"{source.name} ({size(source)}, {n:,} messages)",
        command=worker_command("backfill", **args),
        wall_s=m.wall,
        rss_mb=m.rss_mb,
        throughput=f"{n / inner['seconds']:,.0f} messages/s",
        target=f"<= {wall_target:.0f} s, <= {rss_target / 1024:.0f} GB RSS",
        met=m.wall <= wall_target and m.rss_mb <= rss_target,
        details=f"{spread([r.wall for r in runs], 's wall', '.1f')}"
        f"backfill() {inner['seconds']:.1f} s; stage seconds {inner['stages']} (scope stages add up "
        f"two scopes at a time); {inner['patterns']:,} patterns, {inner['kept']:,} kept; RSS sampled every "
        f"0.2 s peaked at {inner['rss_ingest_mb']:,} MB during ingest, {inner['rss_scopes_mb']:,} MB after",
    )


def bench_dedup(sizes: Sizes) -> Row:
    args = {"tasks": sizes.dedup_tasks, "seed": 0}
    m = measure("dedup", **args)
    inner = m.inner
    return Row(
        name="dedup_1m",
        title=f"near-duplicate removal of {sizes.dedup_tasks:,} tasks in one scope (bench_dedup.run)",
        input=f"{sizes.dedup_tasks:,} synthetic prompts (benchmarks/bench_dedup.py, seed 0)",
        command=worker_command("dedup", **args),
        wall_s=m.wall,
        rss_mb=m.rss_mb,
        throughput=f"{inner['tasks_per_s']:,} tasks/s",
        target="<= 60 s for the near_duplicates call",
        met=inner["wall_s"] <= 60,
        details=f"near_duplicates {inner['wall_s']} s, generation {inner['generate_s']} s, "
        f"{inner['dropped']:,} dropped",
    )


def bench_load(sizes: Sizes) -> Row:
    runs: list[tuple[float, float, Measured]] = []
    for _ in range(sizes.repeats):
        data = prepared(sizes.load_messages)
        probe = measure("fsprobe", folder=str(fresh(WORK / "fsprobe")), files=3000).inner["files_per_s"]
        m = measure("load", data=str(data))
        runs.append((m.inner["stored"] / m.inner["seconds"], probe, m))
    rate, probe, m = median(runs, key=lambda r: r[0])
    return Row(
        name="load",
        title="embedded load through the project's FastJSONStorage (Engramia's JSONStorage files, byte for "
        "byte), all scopes, empty store",
        input=f"kept patterns of {sizes.load_messages:,} messages",
        command=worker_command("load", data=str(data)),
        wall_s=m.wall,
        rss_mb=m.rss_mb,
        throughput=f"{rate:,.0f} patterns/s",
        target=">= 3,000 patterns/s",
        met=rate >= 3000,
        details=f"{spread([r[0] for r in runs], 'patterns/s', ',.0f')}"
        f"{m.inner['stored']:,} patterns stored in {m.inner['seconds']:.1f} s (load calls only), "
        f"pattern_count reconciled in every scope; the file system's own ceiling just before "
        f"(write + rename of 3 KB files, one writer): {probe:,.0f} files/s",
    )


def bench_incremental(sizes: Sizes, base: int, load: bool, name: str, reference: bool = False) -> Row:
    label = size_label(base)
    first, second = incremental_dumps(base)
    landing_dir = WORK / f"landing-incremental-{label}-{'load' if load else 'transform'}"
    data = WORK / f"data-incremental-{label}-{'load' if load else 'transform'}"
    args = {"source": str(landing_dir), "data": str(data), "load": load}
    runs: list[tuple[float, Measured, Measured]] = []
    for _ in range(sizes.repeats):
        landing(landing_dir, first)
        fresh(data)
        full = measure("backfill", **args)
        landing(landing_dir, first, second)
        incr = measure("backfill", **args)
        # Whole processes, interpreter start and imports included: what a scheduled run costs.
        runs.append((incr.wall / full.wall, full, incr))
    ratio, full, incr = median(runs, key=lambda r: r[0])
    what = "transform" if not load else "transform + embedded load"
    return Row(
        name=name,
        title=f"incremental run after a 1% dump vs full run, as whole processes ({what}, {label} base)",
        input=f"{first.name} ({size(first)}) then {second.name} ({size(second)})",
        command=f"{worker_command('backfill', **args)}  # twice: with {first.name} only, then with both",
        wall_s=incr.wall,
        rss_mb=max(full.rss_mb, incr.rss_mb),
        throughput=f"{ratio:.1%} of full (whole processes)",
        target="(reference: a small base)" if reference else "<= 10% of a full run, as whole processes",
        met=None if reference else ratio <= 0.10,
        details=f"{spread([r[0] * 100 for r in runs], '%', '.1f')}"
        f"full run: process {full.wall:.2f} s, backfill() {full.inner['seconds']:.2f} s (stages "
        f"{full.inner['stages']}); incremental run: process {incr.wall:.2f} s, backfill() "
        f"{incr.inner['seconds']:.2f} s (stages {incr.inner['stages']}); backfill() calls alone "
        f"{incr.inner['seconds'] / full.inner['seconds']:.1%}",
    )


def bench_guide(sizes: Sizes) -> list[Row]:
    """The guide's import against ours on the same export through the door users use (the CLI with the
    embedded load), ours beside ``backfill()`` in the same repeat. Rates are per whole process."""
    source = synth(WORK / f"m{size_label(sizes.load_messages)}.ndjson", sizes.load_messages)
    store = WORK / "guide-store"
    guide_args = {"source": str(source), "pairs": sizes.guide_pairs, "store": str(store)}
    guides: list[Measured] = []
    for _ in range(sizes.repeats):
        fresh(store)
        guides.append(measure("guide", **guide_args))
    guide = median(guides, key=lambda m: m.wall)
    guide_rate = guide.inner["pairs"] / guide.wall
    cli_data, core_data = WORK / "data-guide-ours", WORK / "data-guide-core"
    core_args = {"source": str(source), "data": str(core_data), "load": True, "gates": True}
    cmd = cli_command(source, cli_data)
    out = WORK / "cli-guide-ours.json"
    runs = [core_then_cli(core_args, cmd, cli_data, out) for _ in range(sizes.repeats)]
    core, cli, report = median(runs, key=lambda r: r[1].wall)
    stored = sum(s["loaded"] for s in report["scopes"].values())
    our_rate = stored / cli.wall
    tree = cli.inner["tree_rss_mb"]
    return [
        Row(
            name="guide",
            title="the guide's import: pure-Python pairing + one Memory.learn per pair "
            f"({sizes.guide_pairs:,} pairs)",
            input=f"first lines of {source.name}",
            command=worker_command("guide", **guide_args),
            wall_s=guide.wall,
            rss_mb=guide.rss_mb,
            throughput=f"{guide_rate:,.1f} pairs/s",
            target="(baseline)",
            details=f"{spread([m.wall for m in guides], 's wall', '.1f')}{guide.inner['pairs']:,} pairs, "
            f"{guide.inner['seconds']:.1f} s in the import itself; learn() lists the scope twice per call, "
            "so the rate falls as the store grows",
        ),
        Row(
            name="guide_ours",
            title="ours on the same export, end to end through the CLI (assistants-backfill run --json, "
            "embedded load), vs backfill() in the same run",
            input=f"{source.name} ({size(source)}), all of it",
            command=shown(cmd),
            wall_s=cli.wall,
            rss_mb=tree,
            throughput=f"{our_rate:,.0f} patterns/s; {cli.wall / core.wall:.2f}x the core path",
            target="faster than the guide",
            met=our_rate > guide_rate,
            details=f"{spread([r[1].wall for r in runs], 's wall', '.1f')}{stored:,} patterns loaded by "
            f"the CLI in {cli.wall:.1f} s: {our_rate / guide_rate:,.0f}x the guide's throughput on "
            f"{stored / guide.inner['pairs']:,.0f}x as many pairs, peak RSS of its processes summed "
            f"{tree:,.0f} MB, {tree / guide.rss_mb:.1f}x the guide's (which holds only "
            f"{guide.inner['pairs']:,} pairs' messages); core backfill() process {core.wall:.1f} s, "
            f"{core.inner['stored']:,} patterns stored, stages {core.inner['stages']} (command: "
            f"{worker_command('backfill', **core_args)}, with the CLI's default curation gates)",
        ),
    ]


def benches(sizes: Sizes) -> dict[str, Callable[[], list[Row]]]:
    """Every row the command line can select, by name, in the order they run."""
    return {
        "transform_1m": lambda: [bench_transform(sizes, big=False)],
        "transform_10m": lambda: [bench_transform(sizes, big=True)],
        "dedup_1m": lambda: [bench_dedup(sizes)],
        "load": lambda: [bench_load(sizes)],
        "incremental": lambda: [bench_incremental(sizes, sizes.incremental_base, False, "incremental")],
        "incremental_load": lambda: [
            bench_incremental(sizes, sizes.incremental_load_base, True, "incremental_load")
        ],
        "incremental_small": lambda: [
            bench_incremental(sizes, sizes.incremental_small_base, True, "incremental_small", reference=True)
        ],
        "guide": lambda: bench_guide(sizes),
        "judge": lambda: [bench_judge(sizes.judge_patterns)],
        "chatgpt_export": lambda: [bench_chatgpt(sizes.transform, sizes.repeats)],
        "cli_chatgpt_1m": lambda: [bench_cli_chatgpt(sizes.transform, sizes.repeats)],
        "cli_1m": lambda: bench_cli(sizes.cli_messages, sizes.repeats),
        "cli_10m": lambda: [bench_cli_transform(sizes.big, sizes.repeats)],
        "cli_incremental_1m": lambda: [bench_cli_incremental(sizes.incremental_load_base, sizes.repeats)],
        "launched_scope": lambda: [bench_launched(sizes.one_scope_messages, sizes.repeats)],
        "checks": lambda: [bench_checks(WORK / f"data-cli-{size_label(sizes.cli_messages)}")],
        "scaleout_10m": lambda: [bench_scaleout(sizes.big, dumps=10)],
    }
