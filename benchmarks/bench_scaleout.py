"""The scale-out row: 10M messages as 10 dumps through the Dagster daemon's run queue, one run at a time
against two at once, each run in a process of its own as the run launcher starts them.

The runs are those the landing sensor asks for (one ingest run per dump, then one scope run per scope once
every dump is staged), submitted to the queued run coordinator of a fresh instance whose
``max_concurrent_runs`` is the number of workers; a real ``dagster-daemon`` dequeues and launches them.
They are submitted by this worker instead of the sensor so that the sensor's 30-second tick does not sit
between the phases of either run. Transform only (``--destination none``): the embedded load writes one
store one file at a time whatever the number of runs, so it would measure the file system, not the runs.

The scale worker registers itself in ``benchmarks.workers.WORKERS`` when this module is imported.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.inputs import fresh, size, size_label, synth
from benchmarks.measure import child_env, measure, tree_rss, worker_command
from benchmarks.paths import ROOT, WORK
from benchmarks.report import Row
from benchmarks.workers import WORKERS

LAUNCH = """
mutation($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  }
}"""


def _home(data: Path, workers: int) -> Path:
    """A fresh instance: the project's dagster.yaml with the queued coordinator allowing ``workers`` runs."""
    from assets.cli.instance import INSTANCE_TEMPLATE

    home = data / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load(INSTANCE_TEMPLATE.read_text())
    config["concurrency"]["runs"]["max_concurrent_runs"] = workers
    config["run_coordinator"] = {
        "module": "dagster.core.run_coordinator",
        "class": "QueuedRunCoordinator",
        "config": {"dequeue_use_threads": True, "dequeue_num_workers": 2, "dequeue_interval_seconds": 1},
    }
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


def _wait(instance: Any, run_ids: list[str], daemon: subprocess.Popen, peak: list[int]) -> None:
    while True:
        if daemon.poll() is not None:
            raise RuntimeError("the daemon exited")
        peak[0] = max(peak[0], tree_rss(daemon.pid))
        runs = [instance.get_run_by_id(r) for r in run_ids]
        if all(r.is_finished for r in runs):
            failed = [r.run_id for r in runs if r.status.value != "SUCCESS"]
            if failed:
                raise RuntimeError(f"runs failed: {failed}")
            return
        time.sleep(0.5)


def scale_worker(args: dict[str, Any]) -> dict[str, Any]:
    """Every run of a landing folder through the daemon's queue with ``workers`` runs at once."""
    import dagster as dg
    from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

    from assets.cli.instance import run_config
    from assets.destination import EngramiaDestination
    from assets.jobs import dump_run_tags, ingest_job, scope_job, scope_run_tags
    from assets.resources import BackfillSettings
    from pipelines.ingest.catalog import pending_dumps, read_scopes
    from pipelines.tables import DataLayout

    data, landing, workers = Path(args["data"]), Path(args["landing"]), int(args["workers"])
    layout = DataLayout.at(data)
    home = _home(data, workers)
    idle = data / "sensor-idle"  # the sensor watches an empty folder: this worker submits the runs
    idle.mkdir(parents=True, exist_ok=True)
    env = {**child_env(), "DAGSTER_HOME": str(home), "BACKFILL_DATA_DIR": str(idle)}
    daemon = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        stdout=(log := (data / "daemon.log").open("wb")),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    settings = BackfillSettings(data_dir=str(data), landing=str(landing), settle_seconds=0)
    config = run_config(settings, EngramiaDestination(mode="none"))
    selector = {"repositoryLocationName": "assistants_backfill", "repositoryName": "__repository__"}
    peak = [0]
    try:
        with (
            dg.DagsterInstance.from_config(str(home)) as instance,
            define_out_of_process_context(str(ROOT / "workspace.yaml"), None, instance) as context,
        ):

            def submit(job: str, tags: dict[str, str]) -> str:
                params = {
                    "selector": {**selector, "jobName": job},
                    "runConfigData": config,
                    "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
                }
                result = execute_dagster_graphql(context, LAUNCH, {"params": params})
                launched = result.data["launchPipelineExecution"]
                if launched["__typename"] != "LaunchRunSuccess":
                    raise RuntimeError(str(launched))
                return launched["run"]["runId"]

            started = time.perf_counter()
            dumps = pending_dumps(layout, landing, 0)
            ingests = [submit(ingest_job.name, dump_run_tags(d.dump_id)) for d in dumps]
            _wait(instance, ingests, daemon, peak)
            ingest_wall = time.perf_counter() - started
            scopes = read_scopes(layout)["scope"].to_list()
            scoped = [submit(scope_job.name, {"dagster/partition": s, **scope_run_tags(s)}) for s in scopes]
            _wait(instance, scoped, daemon, peak)
            wall = time.perf_counter() - started

            def busy(run_ids: list[str]) -> float:
                stats = [instance.get_run_stats(r) for r in run_ids]
                return sum((s.end_time or 0) - (s.start_time or 0) for s in stats)

            return {
                "wall": wall,
                "ingest_wall": ingest_wall,
                "scope_wall": wall - ingest_wall,
                "ingest_run_seconds": busy(ingests),
                "scope_run_seconds": busy(scoped),
                "runs": len(ingests) + len(scoped),
                "dumps": len(dumps),
                "scopes": len(scopes),
                "tree_rss_mb": peak[0] / 2**20,
            }
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(timeout=120)
        log.close()


WORKERS["scale"] = scale_worker


def bench_scaleout(messages: int, dumps: int) -> Row:
    """The same landing folder with one run at a time and with two."""
    label = size_label(messages)
    landing = synth(WORK / f"landing-{dumps}x{label}", messages, dumps=dumps)
    results = {}
    for workers in (1, 2):
        data = fresh(WORK / f"data-scale-{label}-{workers}")
        results[workers] = measure("scale", landing=str(landing), data=str(data), workers=workers)
        # Each variant's staged tables take about as much disk as the input: the next one needs the room.
        shutil.rmtree(data, ignore_errors=True)
    one, two = results[1].inner, results[2].inner
    ratio = one["wall"] / two["wall"]

    def phases(r: dict[str, Any]) -> str:
        return (
            f"{r['wall']:.1f} s: ingest {r['ingest_wall']:.1f} s wall "
            f"({r['ingest_run_seconds']:.1f} s in its {r['dumps']} runs), "
            f"scopes {r['scope_wall']:.1f} s wall "
            f"({r['scope_run_seconds']:.1f} s in its {r['scopes']} runs), "
            "process tree peak "
            f"{r['tree_rss_mb']:,.0f} MB"
        )

    return Row(
        name="scaleout_10m",
        title=f"{label} messages as {dumps} dumps through the daemon's run queue (ingest run per dump, then "
        "a run per scope, each run its own process; transform only): 1 run at a time vs 2",
        input=f"{landing.name} ({size(landing)}, {messages:,} messages, {dumps} dumps)",
        command=worker_command(
            "scale", landing=str(landing), data=str(WORK / f"data-scale-{label}-2"), workers=2
        ),
        wall_s=two["wall"],
        rss_mb=two["tree_rss_mb"],
        throughput=f"{ratio:.2f}x the speed of 1 run at a time",
        target="(reference: the scaling of 2 concurrent runs on 2 cores)",
        met=None,
        details=f"1 run at a time: {phases(one)}; 2 at once: {phases(two)}; the runs' busy time over the "
        "wall time is how much of the time two runs did overlap",
    )
