"""The inputs of the rows: synthetic exports and prepared data folders, made once in ``benchmarks/work/``.

Exports (from ``pipelines.tools.synth``, or converted from one) are made in a child process and reused
while their ``.done`` marker exists; folders a row writes into are cleared by moving them aside
(``fresh``) and deleted after the last row (``empty_trash``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.measure import child_env, measure
from benchmarks.paths import ROOT, TRASH, WORK


def synth(
    out: Path, messages: int, dumps: int = 1, shares: str | None = None, assistants: int | None = None
) -> Path:
    """Generate a synthetic export once (kept in benchmarks/work/)."""
    cmd = ["pipelines.tools.synth", "--out", str(out), "--messages", str(messages)]
    if dumps > 1:
        cmd += ["--dumps", str(dumps)]
    if shares:
        cmd += ["--shares", shares]
    if assistants:
        cmd += ["--assistants", str(assistants)]
    return made_once(out, cmd, f"generating {out.name} ({messages:,} messages)")


def made_once(out: Path, module_args: list[str], what: str) -> Path:
    """``out``, made by ``python -m <module_args>`` unless it exists with its ``.done`` marker.

    Made in a child process: on Linux a process's peak RSS starts at its parent's peak when forked, so a
    harness that had grown by making an input would pass its size on to every worker it measures. A marker
    whose input was deleted (to make room on the disk) does not count: the input is made again.
    """
    done = out.with_name(out.name + ".done")
    if done.exists() and out.exists():
        return out
    print(f"{what} ...", flush=True)
    subprocess.run(
        [sys.executable, "-m", *module_args], cwd=ROOT, env=child_env(), check=True, stdout=subprocess.DEVNULL
    )
    done.touch()
    return out


def fresh(path: Path) -> Path:
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


def empty_trash() -> None:
    shutil.rmtree(TRASH, ignore_errors=True)


def prepared(messages: int) -> Path:
    """A transformed (not yet loaded) data folder for the load benchmarks, made once."""
    label = size_label(messages)
    source = synth(WORK / f"m{label}.ndjson", messages)
    data = WORK / f"data-load-{label}"
    if not (data / ".prepared").exists():
        fresh(data)
        measure("backfill", source=str(source), data=str(data), load=False)
        (data / ".prepared").touch()
    # Every run starts from an empty store and ledger.
    fresh(data / "engramia")
    fresh(data / "staged" / "ledger")
    return data


def size_label(messages: int) -> str:
    """How a row's size names its inputs and folders: ``1M``, ``100k``."""
    return f"{messages // 1_000_000}M" if messages >= 1_000_000 else f"{messages // 1000}k"


def incremental_dumps(base: int) -> tuple[Path, Path]:
    """The incremental rows' input: a dump of ``base`` messages, then a dump of 1% more."""
    dumps = synth(WORK / f"incremental-{size_label(base)}", base + base // 100, dumps=2, shares="100,1")
    first, second = sorted(dumps.glob("*.ndjson"))
    return first, second


def landing(folder: Path, *dumps: Path) -> Path:
    """``folder`` made again holding links to ``dumps``: the landing folder a scheduled run finds."""
    fresh(folder).mkdir(parents=True)
    for dump in dumps:
        (folder / dump.name).symlink_to(dump)
    return folder


def size(path: Path) -> str:
    """The size of an export (a file, or the NDJSON files of a folder of dumps), for the report."""
    total = sum(p.stat().st_size for p in ([path] if path.is_file() else path.rglob("*.ndjson")))
    return f"{total / 1e9:.2f} GB" if total >= 1e9 else f"{total / 1e6:.0f} MB"
