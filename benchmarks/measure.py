"""Runs one worker in a fresh process and measures it: wall time, peak RSS, and what the worker reports.

Wall time and peak RSS are the whole process's (interpreter start and imports included); the worker prints
the time of its measured call alone as the last line of its output (``benchmarks.workers``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
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
    """Run a worker in a fresh process and measure it."""
    cmd = [sys.executable, "-m", "benchmarks.run", "--worker", name, "--args", json.dumps(args)]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    # wait4 gives this child's own rusage (RUSAGE_CHILDREN would be the maximum over all children).
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"worker {name} failed ({proc.returncode}): {' '.join(cmd)}")
    inner = json.loads(out.strip().splitlines()[-1])
    return Measured(wall=wall, rss_mb=usage.ru_maxrss / 1024, inner=inner)


def worker_command(worker: str, **args: object) -> str:
    """The command that reproduces one measured call, as a row publishes it."""
    # Paths relative to the repository root, where the command is run from.
    text = json.dumps(args).replace(f"{ROOT}/", "")
    return f".venv/bin/python -m benchmarks.run --worker {worker} --args '{text}'"
