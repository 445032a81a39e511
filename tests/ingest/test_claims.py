"""Ingest runs in several processes at once on one data directory: each dump is staged by one of them, and
every staged row, quarantined line, manifest row and catalog entry is what a single run produces."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import polars as pl

from pipelines.ingest.catalog import read_manifest, read_scopes
from pipelines.ingest.claims import catalog_lock, claim
from pipelines.ingest.staging import ingest
from pipelines.scopes import ScopeMapping
from pipelines.tables import DataLayout
from pipelines.tools.synth import SynthSpec, generate
from tests.conftest import staged_quarantine, staged_raw

WORKERS = 3


def _ingest_in_process(root: str, landing: str, only: list[str] | None) -> list[str]:
    results = ingest(DataLayout.at(root), Path(landing), ScopeMapping(), chunk_bytes=64 * 1024, only=only)
    return [r.dump_id for r in results]


def _manifest(layout: DataLayout) -> pl.DataFrame:
    return read_manifest(layout).drop("ingested_at").sort("seq")


def test_concurrent_ingest_runs_stage_what_one_run_stages(tmp_path):
    landing = tmp_path / "landing"
    generate(SynthSpec(messages=6_000, dumps=6, bad_line_rate=0.01), landing)
    serial = DataLayout.at(tmp_path / "serial")
    assert len(ingest(serial, landing, ScopeMapping(), chunk_bytes=64 * 1024)) == 6

    shared = DataLayout.at(tmp_path / "shared")
    # Separate interpreters, as separate run processes or pods are; two take every dump they can claim,
    # one asks for one dump only (as a run the sensor starts for that dump).
    one = sorted(d for d in _manifest(serial)["dump_id"].to_list())[3]
    jobs = [None] * (WORKERS - 1) + [[one]]
    with multiprocessing.get_context("spawn").Pool(WORKERS) as pool:
        taken = pool.starmap(_ingest_in_process, [(str(shared.root), str(landing), only) for only in jobs])

    staged_by = [d for run in taken for d in run]
    assert sorted(staged_by) == sorted(_manifest(serial)["dump_id"].to_list())  # each dump by one run
    assert _manifest(shared).equals(_manifest(serial))
    assert read_scopes(shared).equals(read_scopes(serial))
    assert staged_raw(shared).equals(staged_raw(serial))
    assert (
        staged_quarantine(shared)
        .sort("dump_id", "line_no")
        .equals(staged_quarantine(serial).sort("dump_id", "line_no"))
    )
    assert ingest(shared, landing, ScopeMapping()) == []


def test_a_claimed_dump_is_left_to_its_holder_and_free_again_once_released(tmp_path):
    layout = DataLayout.at(tmp_path / "data")
    landing = tmp_path / "landing"
    [path] = generate(SynthSpec(messages=200), landing / "only.ndjson")
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        with claim(layout, _dump_id(layout, landing)) as mine:
            assert mine
            # Another process finds the claim held and stages nothing.
            assert pool.apply(_ingest_in_process, (str(layout.root), str(landing), None)) == []
        # Released (as when its holder exits, even by a crash): the next run takes the dump.
        assert len(pool.apply(_ingest_in_process, (str(layout.root), str(landing), None))) == 1
    assert read_manifest(layout)["lines"].to_list() == [sum(1 for _ in path.open())]


def _dump_id(layout: DataLayout, landing: Path) -> str:
    from pipelines.ingest.catalog import pending_dumps

    [dump] = pending_dumps(layout, landing)
    return dump.dump_id


def test_the_catalog_lock_excludes_other_processes(tmp_path):
    layout = DataLayout.at(tmp_path / "data")
    with catalog_lock(layout), multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.apply(_try_catalog_lock, (str(layout.root),)) is False
    assert _try_catalog_lock(str(layout.root)) is True


def _try_catalog_lock(root: str) -> bool:
    import fcntl

    fd = os.open(DataLayout.at(root).staged / "_claims" / "catalog.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True
