"""Runs one worker, or a command users run, in a fresh process and measures it: wall time, peak RSS, and
what the worker reports.

Wall time and peak RSS are the whole process's (interpreter start and imports included); the worker prints
the time of its measured call alone as the last line of its output (``benchmarks.workers``). A command
that starts processes of its own (the CLI's scope workers) is measured with the RSS of its whole process
tree, sampled every 0.2 s and summed over the processes alive at each sample: the memory the command takes
from the machine, not only its first process's. That sum counts the pages the processes share (the
libraries' code, mapped by each) once per process; the same samples' PSS (each shared page split between
the processes that map it) is reported beside it, and the targets are judged on the RSS sum. A process that
shares its parent's address space is not counted (:func:`shares_parent_memory`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.paths import ROOT


@dataclass
class Measured:
    wall: float  # of the whole process
    rss_mb: float  # peak RSS of the process
    inner: dict[str, Any]  # what the worker measured itself


def child_env() -> dict[str, str]:
    """The environment of every child process: the repository first on the path, bytecode writable.

    The project's bytecode may be written even where ``PYTHONDONTWRITEBYTECODE`` is set, so that only the
    first process compiles the imports and no measured one does.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = str(ROOT)
    return env


def measure(name: str, **args: object) -> Measured:
    """Run a worker in a fresh process and measure it. ``rss_mb`` is the worker's own peak RSS;
    ``inner["tree_rss_mb"]`` the peak of the RSS summed with the processes it starts (a large ChatGPT
    export is parsed on worker processes), sampled every 0.2 s."""
    cmd = [sys.executable, "-m", "benchmarks.run", "--worker", name, "--args", json.dumps(args)]
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=out, text=True)
        status, usage, peak, _ = _watch(proc, pss=False)
        wall = time.perf_counter() - started
        out.seek(0)
        text = out.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {name} failed ({proc.returncode}): {' '.join(cmd)}")
    # The worker's report is its last JSON line (a code server it started may still log after it).
    inner = json.loads(next(line for line in reversed(text.splitlines()) if line.startswith("{")))
    own = usage.ru_maxrss / 1024
    inner["tree_rss_mb"] = max(own, peak / 2**20)
    return Measured(wall=wall, rss_mb=own, inner=inner)


def _watch(proc: subprocess.Popen, pss: bool) -> tuple[int, Any, int, int]:
    """Wait for ``proc`` (wait4: its own rusage; RUSAGE_CHILDREN would be the maximum over all
    children), sampling its process tree's summed RSS (and PSS) meanwhile: ``(status, rusage, peak RSS,
    peak PSS)`` in bytes."""
    peak = peak_pss = samples = 0
    while True:
        rss, proportional = tree_memory(proc.pid, pss=pss and samples % PSS_EVERY == 0)
        samples += 1
        peak, peak_pss = max(peak, rss), max(peak_pss, proportional)
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            return status, usage, peak, peak_pss
        time.sleep(0.2)


def tree_rss(root: int) -> int:
    """The summed RSS of ``root`` and all its descendants now, in bytes (0 once it is gone)."""
    return tree_memory(root)[0]


def tree_memory(root: int, pss: bool = False) -> tuple[int, int]:
    """The summed RSS and (with ``pss``) PSS of ``root`` and all its descendants now, in bytes."""
    import psutil

    try:
        parent = psutil.Process(root)
        processes = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    rss = proportional = 0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            if process.pid != root and shares_parent_memory(process.pid, process.ppid()):
                continue
            if pss:
                full = process.memory_full_info()
                rss, proportional = rss + full.rss, proportional + full.pss
            else:
                rss += process.memory_info().rss
    return rss, proportional


_KCMP_VM = 1  # kcmp(2): do the two processes share one address space?
_SYS_KCMP = {"x86_64": 312, "aarch64": 272}


def shares_parent_memory(pid: int, parent: int) -> bool:
    """Whether ``pid`` runs in its parent's address space: a child made with vfork, as Python's subprocess
    makes them (Dagster starts four per run to capture its output), between its start and its exec. Its RSS
    is then its parent's memory, which the sum already counts: a sample taken in that moment counted a
    600 MB scope worker twice. False where the kernel cannot say."""
    kcmp = _kcmp()
    return kcmp is not None and kcmp(pid, parent, _KCMP_VM, 0, 0) == 0


@functools.cache
def _kcmp() -> Callable[..., int] | None:
    """kcmp(2) through libc's ``syscall``, looked up once (the sampler asks for every process, five times a
    second); None on a machine whose system call number is not known here."""
    import ctypes
    import platform

    number = _SYS_KCMP.get(platform.machine())
    if number is None:
        return None
    syscall = ctypes.CDLL(None, use_errno=True).syscall
    return lambda *args: syscall(number, *args)


# PSS is read once in this many samples (every 2 s): reading it walks every page table of the process
# (~25 ms for 1.5 GB, under the lock of its memory map), which at every 0.2 s sample cost the measured
# CLI ~10% of its wall time at 10M messages. RSS, the figure targets are judged on, is read at every one.
PSS_EVERY = 10


def measure_command(cmd: list[str], stdout: Path | None = None) -> Measured:
    """Run a command users run (``.venv/bin/assistants-backfill ...``) from the repository root and
    measure it: wall time, and the peak of its process tree's summed RSS (``inner["tree_rss_mb"]``; its
    summed PSS ``inner["tree_pss_mb"]``, sampled every 2 s; the first process's own peak is ``rss_mb``).
    Its stdout goes to ``stdout`` (or is dropped); its stderr (progress) to a file beside it, or is
    dropped."""
    out = stdout.open("w") if stdout else subprocess.DEVNULL
    err = stdout.with_suffix(".err").open("w") if stdout else subprocess.DEVNULL
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=out, stderr=err)
    status, usage, peak, peak_pss = _watch(proc, pss=True)
    wall = time.perf_counter() - started
    for f in (out, err):
        if f is not subprocess.DEVNULL:
            f.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}")
    return Measured(
        wall=wall,
        rss_mb=usage.ru_maxrss / 1024,
        inner={"tree_rss_mb": peak / 2**20, "tree_pss_mb": peak_pss / 2**20, "exit": proc.returncode},
    )


def worker_command(worker: str, **args: object) -> str:
    """The command that reproduces one measured call, as a row publishes it."""
    # Paths relative to the repository root, where the command is run from.
    text = json.dumps(args).replace(f"{ROOT}/", "")
    return f".venv/bin/python -m benchmarks.run --worker {worker} --args '{text}'"
