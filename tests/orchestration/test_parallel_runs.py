"""Dumps and scopes run side by side, as on a cluster: the Dagster daemon (sensor, run queue) on the
Postgres instance launches every run in a process of its own, several at a time. The result must be that
of one process doing the same work in turn: every staged table and every pattern in the store equal."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import polars as pl

from assets.partitions import SCOPES
from assets.pools import SLOT_FREED, SLOT_TAKEN, destination_pool
from pipelines.ingest.catalog import pending_dumps, read_scopes
from pipelines.ingest.messages import pending_message_dumps
from pipelines.load.embedded import destination_id
from pipelines.tables import DataLayout
from pipelines.tools.synth import SynthSpec, generate
from tests.support import graph
from tests.support.postgres_instance import postgres_home

ROOT = Path(__file__).resolve().parents[2]
DUMPS = 4
# Columns that name when or by which run a row was written: they differ between any two runs.
VOLATILE = {"ingested_at", "loaded_at", "run_id", "ledger_run_id", "at", "seconds"}
# ... and which store a row went to: the two data directories' stores differ by their paths.
VOLATILE |= {"destination"}
DEADLINE_SECONDS = 600


def _landing(root: Path) -> Path:
    landing = root / "landing"
    generate(SynthSpec(messages=4_000, assistants=4, dumps=DUMPS, bad_line_rate=0.01), landing)
    past = time.time() - 3600
    for path in landing.iterdir():
        # Older than the settle time: the sensor takes them at once.
        os.utime(path, (past, past))
    return landing


def _serial(layout: DataLayout, landing: Path) -> None:
    """The reference: one process, one ingest of every dump, then each scope in turn. It reads the same
    landing folder (a dump's id derives from its path)."""
    with dg.instance_for_test() as instance:
        assert graph.ingest(layout, landing, instance).success
        for scope in read_scopes(layout)["scope"].to_list():
            assert graph.scope_run(layout, landing, instance, scope).success


def _tables(layout: DataLayout) -> dict[str, pl.DataFrame]:
    """Every staged table, per folder (table and scope), rows in a canonical order."""
    tables: dict[str, list[pl.DataFrame]] = {}
    for path in sorted(layout.staged.rglob("*.parquet")):
        rel = path.relative_to(layout.staged)
        # _claims holds lock files. (_dedup, the near-duplicate cache, is compared too: its vocabulary
        # ranks ties by the token, so it is the same in every run.)
        if rel.parts[0] == "_claims":
            continue
        # The destination's id names the store's path, which differs between the two data directories.
        folder = re.sub(r"dest=[^/]+", "dest=<store>", str(rel.parent))
        frame = pl.read_parquet(path)
        tables.setdefault(folder, []).append(frame.drop([c for c in frame.columns if c in VOLATILE]))
    out = {}
    for folder, frames in tables.items():
        frame = pl.concat(frames, how="diagonal_relaxed")
        sortable = [c for c, t in frame.schema.items() if not t.is_nested()]
        out[folder] = frame.sort(sortable)
    return out


def _store(layout: DataLayout) -> dict[str, object]:
    """Every file of the embedded store, parsed; the store's creation time left out."""
    files = {
        str(p.relative_to(layout.engramia)): json.loads(p.read_text())
        for p in layout.engramia.rglob("*.json")
    }
    files["metadata/embedding_config.json"].pop("created_at")
    return files


def _wait_until_done(instance: dg.DagsterInstance, layout: DataLayout, daemon: subprocess.Popen) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        assert daemon.poll() is None, "the daemon exited"
        busy = instance.get_runs(
            dg.RunsFilter(
                statuses=[
                    dg.DagsterRunStatus.QUEUED,
                    dg.DagsterRunStatus.STARTING,
                    dg.DagsterRunStatus.STARTED,
                ]
            )
        )
        scopes = read_scopes(layout)["scope"].to_list()
        if (
            not busy
            and scopes
            and not pending_dumps(layout, layout.landing)
            and not any(pending_message_dumps(layout, s) for s in scopes)
            and all(layout.loads(s).exists() for s in scopes)
        ):
            return
        time.sleep(2)
    raise AssertionError(
        f"runs not done in {DEADLINE_SECONDS}s: {[(r.job_name, r.status) for r in instance.get_runs()]}"
    )


def _overlap(spans: list[tuple[float, float]]) -> bool:
    spans = sorted(spans)
    return any(b[0] < a[1] for a, b in itertools.pairwise(spans))


def _slot_span(instance: dg.DagsterInstance, run_id: str, pool: str) -> tuple[float, float]:
    """When the run's load held its destination's write slot."""
    marks = {
        mark: e.timestamp
        for e in instance.all_logs(run_id)
        for mark in (SLOT_TAKEN, SLOT_FREED)
        if e.user_message.startswith(f"{mark} {pool}")
    }
    return marks[SLOT_TAKEN], marks[SLOT_FREED]


def test_concurrent_runs_equal_a_serial_run(tmp_path, postgres_server, monkeypatch):
    shared = DataLayout.at(tmp_path / "shared")
    landing = _landing(shared.root)
    serial = DataLayout.at(tmp_path / "serial")
    _serial(serial, landing)

    home = postgres_home(tmp_path / "dagster_home", postgres_server, monkeypatch)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("BACKFILL_DATA_DIR", str(shared.root))
    # The daemon runs the landing sensor and the run queue; the default run launcher starts each run in a
    # process of its own, as the Kubernetes run launcher starts a pod.
    daemon = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("dagster-daemon")),
            "run",
            "-w",
            "workspace.yaml",
            "--log-level",
            "info",
        ],
        cwd=ROOT,
        stdout=(log := (tmp_path / "daemon.log").open("wb")),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            _wait_until_done(instance, shared, daemon)
            records = instance.get_run_records()
            runs = {r.dagster_run.run_id: r for r in records}
            failed = [
                r.dagster_run.job_name for r in records if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS
            ]
            assert not failed, (tmp_path / "daemon.log").read_text()[-4000:]
            ingests = [r for r in records if r.dagster_run.job_name == "ingest_job"]
            scope_runs = [r for r in records if r.dagster_run.job_name == "scope_job"]
            assert len(ingests) == DUMPS  # one run per dump
            # One run per scope: the sensor holds scope runs back while dumps are being staged, so each
            # scope takes in every dump at once, as in the serial run (the ledger and load records, which
            # keep a row per run, can then be compared as they are).
            scoped = sorted(r.dagster_run.tags["dagster/partition"] for r in scope_runs)
            assert scoped == sorted(instance.get_dynamic_partitions(SCOPES.name))
            # Runs of different dumps and of different scopes did run at the same time ...
            assert _overlap([(r.start_time, r.end_time) for r in ingests])
            assert _overlap([(r.start_time, r.end_time) for r in scope_runs])
            # ... but never two writers of the embedded store: its pool has one slot, and the slot's
            # spans, as each run's log records them, never overlap.
            pool = destination_pool(destination_id(shared.engramia))
            writes = [_slot_span(instance, run_id, pool) for run_id in runs if runs[run_id] in scope_runs]
            assert not _overlap(writes)
            assert instance.event_log_storage.get_concurrency_info(pool).slot_count == 1
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(timeout=60)
        log.close()

    concurrent, reference = _tables(shared), _tables(serial)
    assert sorted(concurrent) == sorted(reference)
    for folder, frame in reference.items():
        assert concurrent[folder].equals(frame), folder
    store = _store(shared)
    assert store and store == _store(serial)
