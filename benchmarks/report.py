"""The report: one ``Row`` per measured benchmark, written as ``RESULTS.md`` (or ``work/RESULTS-quick.md``).

The rows are also kept as JSON in a comment at the end of the report, so that a run of some rows
(``--only``) rewrites the report with the other rows as they were last measured.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.paths import ROOT

JSON_MARK = "<!-- results-json:"
# The report's order of rows, whatever order they ran in.
ORDER = [
    "transform_1m",
    "transform_10m",
    "dedup_1m",
    "load",
    "incremental",
    "incremental_load",
    "incremental_small",
    "guide",
    "guide_ours",
    "judge",
    "chatgpt_export",
    "cli_chatgpt_1m",
    "cli_1m",
    "cli_rerun_1m",
    "cli_10m",
    "cli_incremental_1m",
    "launched_scope",
    "checks",
    "scaleout_10m",
]


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


def describe_machine() -> dict[str, str]:
    """CPU model, cores, RAM and Python version, for the head of the report."""
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


def load_average() -> str:
    """The load average when the run starts: other jobs on the shared VM slow every row."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def commit() -> str:
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


def load_previous(path: Path) -> dict[str, Row]:
    """The rows of the report at ``path`` as last written (none if there is no report yet)."""
    if not path.exists():
        return {}
    text = path.read_text()
    if JSON_MARK not in text:
        return {}
    blob = text.split(JSON_MARK, 1)[1].rsplit("-->", 1)[0]
    return {r["name"]: Row(**r) for r in json.loads(blob)}


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def write_report(path: Path, rows: dict[str, Row], machine: dict[str, str], load_avg: str) -> None:
    ordered = [rows[n] for n in ORDER if n in rows]
    lines = [
        "# Benchmark results",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['ram']} RAM, "
        f"Python {machine['python']}.  ",
        f"Written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC at commit `{commit()}`{_dirty()}; "
        f"load average at the start: {load_avg}.  ",
        "Reproduce everything with `make bench` (`python -m benchmarks.run`; `--with-10m` adds the 10M rows, "
        "`--only NAME` runs some rows). Each row ran in a fresh process; wall time and peak RSS are the "
        "process's own (os.wait4), including interpreter start and imports.",
        "",
        "| Benchmark | Input | Wall (s) | Peak RSS (MB) | Throughput | Target | Met |",
        "|---|---|---:|---:|---|---|---|",
    ]
    for r in ordered:
        met = "-" if r.met is None else ("yes" if r.met else "**no**")
        cells = [r.title, r.input, fmt(r.wall_s), fmt(r.rss_mb, 0), r.throughput, r.target, met]
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
        "- RSS (all its processes): the RSS of every process of the command's tree, summed at each 0.2 s "
        "sample, and the largest sum; a child still in its parent's address space (started with vfork, "
        "before its exec) is the parent's memory and is not counted again.",
        "- Folders left by earlier rows are moved aside and deleted after the last row: for minutes after "
        "tens of thousands of files are deleted, ext4 creates files several times slower (it skips recently "
        "freed inodes one by one), so a load measured right after deleting the last store measured that.",
        "",
        f"{JSON_MARK} {json.dumps([asdict(r) for r in ordered])} -->",
        "",
    ]
    path.write_text("\n".join(lines))
