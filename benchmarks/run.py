"""Migration-scale benchmarks of the backfill; writes ``benchmarks/RESULTS.md``.

    python -m benchmarks.run                      # every row except 10M (its last result is kept)
    python -m benchmarks.run --with-10m           # also 10M messages (~13 GB of input, generated once)
    python -m benchmarks.run --only load,guide    # some rows
    python -m benchmarks.run --quick              # small sizes, a smoke test (writes work/RESULTS-quick.md)

Inputs come from ``pipelines.tools.synth`` and are generated once into ``benchmarks/work/`` (reused when
present). Every measurement runs in a fresh subprocess (``python -m benchmarks.run --worker ...``); its
wall time and peak RSS are those of that process, taken from ``os.wait4`` (so they include interpreter
start and imports), and the worker also reports the time of the measured call alone.

Properties of the benchmark machine, handled and said so in the results:
- the libraries' bytecode is compiled at install (``make install``), and the subprocesses may write the
  project's own even when ``PYTHONDONTWRITEBYTECODE`` is set: no measured run compiles its imports;
- the VM hands freed memory back to its host within seconds, and a process taking fresh memory pays
  0.2-4.7 s per GiB depending on the host's load: each row records a probe of the host taken just
  before it (first touch of 1 GiB, sha256 of 256 MiB);
- for minutes after a mass delete, ext4 creates files several times slower: folders of earlier runs
  are moved aside and deleted after the last row.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "work"
TRASH = WORK / "trash"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
_JSON_MARK = "<!-- results-json:"


# --------------------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------------------


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
    repeats=1,
    suffix="-quick",
)


# --------------------------------------------------------------------------------------------------
# Workers: one measured call per process
# --------------------------------------------------------------------------------------------------


def _worker(name: str, args: dict) -> dict:
    """Run one measured call in this (fresh) process; returns what the call itself measured."""
    if name == "probe":
        # How fast the host is just now: the VM's memory and CPU speed drift with other tenants' load.
        import hashlib

        import numpy as np

        started = time.perf_counter()
        block = np.ones(2**30, dtype=np.uint8)
        touch = time.perf_counter() - started
        started = time.perf_counter()
        hashlib.sha256(memoryview(block)[: 2**28]).hexdigest()
        return {"touch_s": touch, "sha_s": time.perf_counter() - started}
    if name == "backfill":
        from pipelines.runner import backfill
        from pipelines.tables import DataLayout

        layout = DataLayout.at(args["data"])
        sampler = _RssSampler()
        started = time.perf_counter()
        run = backfill(layout, Path(args["source"]), load=args["load"], store=layout.engramia)
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
    if name == "load":
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
    if name == "fsprobe":
        # The file system's own ceiling for what the embedded store does per pattern: write a small
        # file under a temporary name, then rename it into place (one writer, fresh folder).
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
    if name == "dedup":
        from benchmarks.bench_dedup import run

        started = time.perf_counter()
        out = run(args["tasks"], args["seed"])
        return {"seconds": time.perf_counter() - started, **out}
    if name == "guide":
        return _guide_import(Path(args["source"]), args["pairs"], Path(args["store"]))
    raise ValueError(f"unknown worker {name!r}")


class _RssSampler:
    """Samples this process's RSS (MB) every 0.2 s on a thread, to tell which stage set the peak."""

    def __init__(self) -> None:
        import threading

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


def _guide_import(source: Path, max_pairs: int, store: Path) -> dict:
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
    threads: dict[str, list[dict]] = defaultdict(list)
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


# --------------------------------------------------------------------------------------------------
# Running workers and rows
# --------------------------------------------------------------------------------------------------


@dataclass
class Measured:
    wall: float  # of the whole process
    rss_mb: float  # peak RSS of the process
    inner: dict  # what the worker measured itself


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = str(ROOT)
    return env


def measure(name: str, **args: object) -> Measured:
    """Run a worker in a fresh process and measure it."""
    cmd = [sys.executable, "-m", "benchmarks.run", "--worker", name, "--args", json.dumps(args)]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    # wait4 gives this child's own rusage (RUSAGE_CHILDREN would be the maximum over all children).
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"worker {name} failed ({proc.returncode}): {' '.join(cmd)}")
    inner = json.loads(out.strip().splitlines()[-1])
    return Measured(wall=wall, rss_mb=usage.ru_maxrss / 1024, inner=inner)


@dataclass
class Row:
    name: str
    title: str
    input: str
    command: str
    wall_s: float | None = None
    rss_mb: float | None = None
    throughput: str = ""
    target: str = ""
    met: bool | None = None
    details: str = ""
    measured_at: str = ""
    commit: str = ""


def _synth(out: Path, messages: int, dumps: int = 1, shares: str | None = None) -> Path:
    """Generate a synthetic export once (kept in benchmarks/work/)."""
    done = out.with_name(out.name + ".done")
    if done.exists():
        return out
    cmd = [sys.executable, "-m", "pipelines.tools.synth", "--out", str(out), "--messages", str(messages)]
    if dumps > 1:
        cmd += ["--dumps", str(dumps)]
    if shares:
        cmd += ["--shares", shares]
    print(f"generating {out.name} ({messages:,} messages) ...", flush=True)
    subprocess.run(cmd, cwd=ROOT, env=_env(), check=True, stdout=subprocess.DEVNULL)
    done.touch()
    return out


def _fresh(path: Path) -> Path:
    """Clear ``path`` for a measurement by moving what is there into the trash, emptied after the last row.

    Not deleted on the spot: for some minutes after many files are deleted, ext4 creates each new file
    several times slower (inode allocation skips the recently freed inodes one by one; profiled:
    ``recently_deleted`` in ``find_inode_bit``). Deleting the previous run's 40k-file store just before
    the load row slowed the load itself ~3x, which says nothing about the loader.
    """
    if path.exists() or path.is_symlink():
        TRASH.mkdir(parents=True, exist_ok=True)
        os.replace(path, TRASH / f"{path.name}-{time.time_ns()}")
    return path


def _empty_trash() -> None:
    shutil.rmtree(TRASH, ignore_errors=True)


def _size(path: Path) -> str:
    total = sum(p.stat().st_size for p in ([path] if path.is_file() else path.rglob("*.ndjson")))
    return f"{total / 1e9:.2f} GB" if total >= 1e9 else f"{total / 1e6:.0f} MB"


def _cmd(worker: str, **args: object) -> str:
    # Paths relative to the repository root, where the command is run from.
    text = json.dumps(args).replace(f"{ROOT}/", "")
    return f".venv/bin/python -m benchmarks.run --worker {worker} --args '{text}'"


def _median_run[T](runs: list[T], key: Callable[[T], float]) -> T:
    """The run whose ``key`` is the median (the upper one of an even count)."""
    return sorted(runs, key=key)[len(runs) // 2]


def _spread(values: list[float], fmt: str, unit: str) -> str:
    """How the row's run was chosen, to lead its details ("" for a single run)."""
    if len(values) == 1:
        return ""
    return f"median of {len(values)} runs ({', '.join(format(v, fmt) for v in values)} {unit}); in that run: "


def bench_transform(sizes: Sizes, big: bool) -> Row:
    n = sizes.big if big else sizes.transform
    label = f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k"
    source = _synth(WORK / f"m{label}.ndjson", n)
    data = _fresh(WORK / f"data-transform-{label}")
    args = {"source": str(source), "data": str(data), "load": False}
    runs = []
    # The 10M row takes minutes and many GB: one run.
    for _ in range(1 if big else sizes.repeats):
        runs.append(measure("backfill", **args))
        shutil.rmtree(data)  # tens of GB at 10M, in a few large files: only the measurement is kept
    m = _median_run(runs, key=lambda r: r.wall)
    wall_target, rss_target = (180.0, 4096.0) if big else (15.0, 2048.0)
    inner = m.inner
    return Row(
        name="transform_10m" if big else "transform_1m",
        title=f"{label} messages: raw NDJSON -> staged -> paired -> scored (dedup)",
        input=f"{source.name} ({_size(source)}, {n:,} messages)",
        command=_cmd("backfill", **args),
        wall_s=m.wall,
        rss_mb=m.rss_mb,
        throughput=f"{n / inner['seconds']:,.0f} messages/s",
        target=f"<= {wall_target:.0f} s, <= {rss_target / 1024:.0f} GB RSS",
        met=m.wall <= wall_target and m.rss_mb <= rss_target,
        details=f"{_spread([r.wall for r in runs], '.1f', 's wall')}"
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
        command=_cmd("dedup", **args),
        wall_s=m.wall,
        rss_mb=m.rss_mb,
        throughput=f"{inner['tasks_per_s']:,} tasks/s",
        target="<= 60 s for the near_duplicates call",
        met=inner["wall_s"] <= 60,
        details=f"near_duplicates {inner['wall_s']} s, generation {inner['generate_s']} s, "
        f"{inner['dropped']:,} dropped",
    )


def _prepared(messages: int) -> Path:
    """A transformed (not yet loaded) data folder for the load benchmarks, made once."""
    label = f"{messages // 1000}k"
    source = _synth(WORK / f"m{label}.ndjson", messages)
    data = WORK / f"data-load-{label}"
    if not (data / ".prepared").exists():
        _fresh(data)
        measure("backfill", source=str(source), data=str(data), load=False)
        (data / ".prepared").touch()
    # Every run starts from an empty store and ledger.
    _fresh(data / "engramia")
    _fresh(data / "staged" / "ledger")
    return data


def bench_load(sizes: Sizes) -> Row:
    runs = []
    for _ in range(sizes.repeats):
        data = _prepared(sizes.load_messages)
        probe = measure("fsprobe", folder=str(_fresh(WORK / "fsprobe")), files=3000).inner["files_per_s"]
        m = measure("load", data=str(data))
        runs.append((m.inner["stored"] / m.inner["seconds"], probe, m))
    rate, probe, m = _median_run(runs, key=lambda r: r[0])
    return Row(
        name="load",
        title="embedded load into Engramia's JSONStorage (all scopes, empty store)",
        input=f"kept patterns of {sizes.load_messages:,} messages",
        command=_cmd("load", data=str(data)),
        wall_s=m.wall,
        rss_mb=m.rss_mb,
        throughput=f"{rate:,.0f} patterns/s",
        target=">= 3,000 patterns/s",
        met=rate >= 3000,
        details=f"{_spread([r[0] for r in runs], ',.0f', 'patterns/s')}"
        f"{m.inner['stored']:,} patterns stored in {m.inner['seconds']:.1f} s (load calls only), "
        f"pattern_count reconciled in every scope; the file system's own ceiling just before "
        f"(write + rename of 3 KB files, one writer): {probe:,.0f} files/s",
    )


def _incremental(sizes: Sizes, base: int, load: bool, name: str, reference: bool = False) -> Row:
    total = base + base // 100
    label = f"{base // 1000}k" if base < 1_000_000 else f"{base // 1_000_000}M"
    dumps = _synth(WORK / f"incremental-{label}", total, dumps=2, shares="100,1")
    first, second = sorted(dumps.glob("*.ndjson"))
    landing_dir = WORK / f"landing-incremental-{label}-{'load' if load else 'transform'}"
    data = WORK / f"data-incremental-{label}-{'load' if load else 'transform'}"
    args = {"source": str(landing_dir), "data": str(data), "load": load}
    runs = []
    for _ in range(sizes.repeats):
        landing = _fresh(landing_dir)
        landing.mkdir(parents=True)
        (landing / first.name).symlink_to(first)
        _fresh(data)
        full = measure("backfill", **args)
        (landing / second.name).symlink_to(second)
        incr = measure("backfill", **args)
        runs.append((incr.inner["seconds"] / full.inner["seconds"], full, incr))
    ratio, full, incr = _median_run(runs, key=lambda r: r[0])
    what = "transform" if not load else "transform + embedded load"
    return Row(
        name=name,
        title=f"incremental run after a 1% dump vs full run ({what}, {label} base)",
        input=f"{first.name} ({_size(first)}) then {second.name} ({_size(second)})",
        command=f"{_cmd('backfill', **args)}  # twice: with {first.name} only, then with both",
        wall_s=incr.wall,
        rss_mb=max(full.rss_mb, incr.rss_mb),
        throughput=f"{ratio:.1%} of full",
        target="(reference: a small base)" if reference else "<= 10% of a full run",
        met=None if reference else ratio <= 0.10,
        details=f"{_spread([r[0] * 100 for r in runs], '.1f', '%')}"
        f"full backfill() {full.inner['seconds']:.2f} s (process {full.wall:.1f} s, stages "
        f"{full.inner['stages']}); incremental backfill() {incr.inner['seconds']:.2f} s "
        f"(process {incr.wall:.1f} s, stages {incr.inner['stages']}); "
        f"ratio of whole processes {incr.wall / full.wall:.1%}",
    )


def bench_guide(sizes: Sizes) -> list[Row]:
    source = _synth(WORK / f"m{sizes.load_messages // 1000}k.ndjson", sizes.load_messages)
    store = _fresh(WORK / "guide-store")
    guide = measure("guide", source=str(source), pairs=sizes.guide_pairs, store=str(store))
    guide_rate = guide.inner["pairs"] / guide.inner["seconds"]
    data = _fresh(WORK / "data-guide-ours")
    ours = measure("backfill", source=str(source), data=str(data), load=True)
    our_rate = ours.inner["stored"] / ours.inner["seconds"]
    rows = [
        Row(
            name="guide",
            title="the guide's import: pure-Python pairing + one Memory.learn per pair "
            f"({sizes.guide_pairs:,} pairs)",
            input=f"first lines of {source.name}",
            command=_cmd("guide", source=str(source), pairs=sizes.guide_pairs, store=str(store)),
            wall_s=guide.wall,
            rss_mb=guide.rss_mb,
            throughput=f"{guide_rate:,.1f} pairs/s",
            target="(baseline)",
            details=f"{guide.inner['pairs']:,} pairs in {guide.inner['seconds']:.1f} s; learn() lists the "
            "scope twice per call, so the rate falls as the store grows",
        ),
        Row(
            name="guide_ours",
            title="ours on the same export, end to end (backfill with embedded load)",
            input=f"{source.name} ({_size(source)}), all of it",
            command=_cmd("backfill", source=str(source), data=str(data), load=True),
            wall_s=ours.wall,
            rss_mb=ours.rss_mb,
            throughput=f"{our_rate:,.0f} patterns/s",
            target="faster than the guide",
            met=our_rate > guide_rate,
            details=f"{ours.inner['stored']:,} patterns in {ours.inner['seconds']:.1f} s: "
            f"{our_rate / guide_rate:,.0f}x the guide's throughput on "
            f"{ours.inner['stored'] / guide.inner['pairs']:,.0f}x as many pairs, "
            f"peak RSS {ours.rss_mb / guide.rss_mb:.1f}x the guide's "
            f"(which holds only {guide.inner['pairs']:,} pairs' messages)",
        ),
    ]
    return rows


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def _machine() -> dict[str, str]:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        ram = f"{psutil.virtual_memory().total / 2**30:.0f} GiB"
    except ImportError:
        ram = "?"
    return {"cpu": cpu, "cores": str(os.cpu_count()), "ram": ram, "python": platform.python_version()}


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def _dirty() -> str:
    """A note when the measured code differs from the commit (this report and its notes excepted)."""
    try:
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", ".", ":!benchmarks/RESULTS.md", ":!benchmarks/NOTES.md"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return ""
    return " (plus uncommitted changes)" if status.strip() else ""


def _load_previous(path: Path) -> dict[str, Row]:
    if not path.exists():
        return {}
    text = path.read_text()
    if _JSON_MARK not in text:
        return {}
    blob = text.split(_JSON_MARK, 1)[1].rsplit("-->", 1)[0]
    return {r["name"]: Row(**r) for r in json.loads(blob)}


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def write_report(path: Path, rows: dict[str, Row], machine: dict[str, str], load_avg: str) -> None:
    order = [
        "transform_1m",
        "transform_10m",
        "dedup_1m",
        "load",
        "incremental",
        "incremental_load",
        "incremental_small",
        "guide",
        "guide_ours",
    ]
    ordered = [rows[n] for n in order if n in rows]
    lines = [
        "# Benchmark results",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['ram']} RAM, "
        f"Python {machine['python']}.  ",
        f"Written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC at commit `{_commit()}`{_dirty()}; "
        f"load average at the start: {load_avg}.  ",
        "Reproduce everything with `make bench` (`python -m benchmarks.run`; `--with-10m` adds the 10M row, "
        "`--only NAME` runs some rows). Each row ran in a fresh process; wall time and peak RSS are the "
        "process's own (os.wait4), including interpreter start and imports.",
        "",
        "| Benchmark | Input | Wall (s) | Peak RSS (MB) | Throughput | Target | Met |",
        "|---|---|---:|---:|---|---|---|",
    ]
    for r in ordered:
        met = "-" if r.met is None else ("yes" if r.met else "**no**")
        cells = [r.title, r.input, _fmt(r.wall_s), _fmt(r.rss_mb, 0), r.throughput, r.target, met]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Details and commands", ""]
    for r in ordered:
        lines += [
            f"### {r.name}",
            "",
            f"- measured {r.measured_at} at `{r.commit}`",
            f"- {r.details}",
            f"- command (from the repository root, after `make install`): `{r.command}`",
            "",
        ]
    lines += [
        "## Notes",
        "",
        "- The benchmark VM is shared: other jobs ran at the same time (see the load average above), so "
        "wall times are upper bounds.",
        "- Bytecode is compiled at install, so no measured process compiles its imports. The VM hands "
        "memory back to its host seconds after a process frees it, and taking it again costs ~3 s per GiB "
        "when the host is busy (~0.2 s when not): every row pays this for its peak RSS and for the files it "
        "writes (page cache). Each row's details end with a probe of the host taken just before it "
        "(first touch of 1 GiB, sha256 of 256 MiB) to tell a slow host from slow code.",
        "- Where the time goes, and what each optimisation did: benchmarks/NOTES.md.",
        "- Folders left by earlier rows are moved aside and deleted after the last row: for minutes after "
        "tens of thousands of files are deleted, ext4 creates files several times slower (it skips recently "
        "freed inodes one by one), so a load measured right after deleting the last store measured that.",
        "",
        f"{_JSON_MARK} {json.dumps([asdict(r) for r in ordered])} -->",
        "",
    ]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        help="comma-separated rows: transform_1m, transform_10m, dedup_1m, load, "
        "incremental, incremental_load, incremental_small, guide",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--with-10m", action="store_true", help="include the 10M-message row")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--args", help=argparse.SUPPRESS)
    a = parser.parse_args(argv)
    if a.worker:
        print(json.dumps(_worker(a.worker, json.loads(a.args or "{}"))), flush=True)
        return
    sizes = QUICK if a.quick else FULL
    WORK.mkdir(parents=True, exist_ok=True)
    benches: dict[str, Callable[[], list[Row]]] = {
        "transform_1m": lambda: [bench_transform(sizes, big=False)],
        "transform_10m": lambda: [bench_transform(sizes, big=True)],
        "dedup_1m": lambda: [bench_dedup(sizes)],
        "load": lambda: [bench_load(sizes)],
        "incremental": lambda: [_incremental(sizes, sizes.incremental_base, False, "incremental")],
        "incremental_load": lambda: [
            _incremental(sizes, sizes.incremental_load_base, True, "incremental_load")
        ],
        "incremental_small": lambda: [
            _incremental(sizes, sizes.incremental_small_base, True, "incremental_small", reference=True)
        ],
        "guide": lambda: bench_guide(sizes),
    }
    if a.only:
        selected = [n.strip() for n in a.only.split(",") if n.strip()]
        unknown = set(selected) - set(benches)
        if unknown:
            parser.error(f"unknown rows {sorted(unknown)}; choose from {sorted(benches)}")
    else:
        selected = [n for n in benches if n != "transform_10m" or a.with_10m]
    report = WORK / "RESULTS-quick.md" if a.quick else RESULTS
    rows = _load_previous(report)
    machine = _machine()
    load_avg = " ".join(f"{x:.2f}" for x in os.getloadavg())
    commit = _commit()
    try:
        for name in selected:
            print(f"== {name}", flush=True)
            probe = measure("probe").inner
            host = (
                f"host just before: 1 GiB first touched in {probe['touch_s']:.2f} s, "
                f"sha256 of 256 MiB in {probe['sha_s']:.2f} s"
            )
            for row in benches[name]():
                row.measured_at = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
                row.commit = commit
                row.details = f"{row.details}; {host}"
                rows[row.name] = row
                print(
                    f"   {row.name}: wall {_fmt(row.wall_s)} s, rss {_fmt(row.rss_mb, 0)} MB, "
                    f"{row.throughput}, met={row.met}; {row.details}",
                    flush=True,
                )
                write_report(report, rows, machine, load_avg)
    finally:
        _empty_trash()
    print(f"wrote {report}")


if __name__ == "__main__":
    main()
