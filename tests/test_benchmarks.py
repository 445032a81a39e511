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


def _settled_child() -> subprocess.Popen:
    """A Python process that has started and waits (for its standard input to close)."""
    code = "import sys; print('ready', flush=True); sys.stdin.read()"
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    return child


def test_a_process_in_its_parents_address_space_is_told_apart():
    import os

    from benchmarks.measure import shares_parent_memory

    # One address space: what a child made with vfork shares with its parent until its exec.
    assert shares_parent_memory(os.getpid(), os.getpid())
    child = _settled_child()
    try:
        # A child running its own program has its own memory, and counts.
        assert not shares_parent_memory(child.pid, os.getpid())
    finally:
        child.communicate(b"")


def test_the_tree_sum_leaves_out_a_child_that_shares_its_parents_memory(monkeypatch):
    import os

    import benchmarks.measure as measure

    child = _settled_child()
    try:
        with_child = measure.tree_memory(os.getpid())[0]
        monkeypatch.setattr(measure, "shares_parent_memory", lambda pid, parent: pid == child.pid)
        without_child = measure.tree_memory(os.getpid())[0]
        assert abs(with_child - without_child - measure.tree_memory(child.pid)[0]) < 4 * 2**20
        assert without_child < with_child
    finally:
        child.communicate(b"")


def test_an_input_whose_marker_outlived_it_is_made_again(tmp_path):
    from benchmarks.inputs import synth

    out = tmp_path / "m20.ndjson"
    synth(out, 20)
    first = out.read_bytes()
    assert first.count(b"\n") >= 20
    out.unlink()  # deleted to free the disk; its .done marker stays behind
    assert synth(out, 20) == out
    assert out.read_bytes() == first
