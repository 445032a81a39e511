"""The benchmark harness's worker processes: each measured call runs in a fresh process that imports only
``benchmarks.workers``, so every worker a row asks for must be found from there."""

from __future__ import annotations

import subprocess
import sys

import pytest

from benchmarks.workers import REGISTERED_BY, WORKERS, worker_for


def test_every_worker_is_found_by_a_process_that_imports_only_the_workers_module():
    # Every worker any row asks for: the rows' modules register theirs when imported here.
    import benchmarks.rows  # noqa: F401

    names = sorted(WORKERS)
    assert set(REGISTERED_BY) <= set(names)
    code = (
        "import sys; from benchmarks.workers import worker_for\n"
        "for name in sys.argv[1:]: assert callable(worker_for(name)), name\n"
        "print('found', len(sys.argv) - 1)"
    )
    done = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["found", str(len(names))]
    assert {"launch", "checks", "judge", "scale"} <= set(names)


def test_an_unknown_worker_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown worker 'nope'"):
        worker_for("nope")
