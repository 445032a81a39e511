"""Rows for the doors users use: the ``assistants-backfill`` CLI and a scope run launched through a Dagster
instance with its run launcher (as the UI and the sensor launch them), each beside the core path it wraps
(``pipelines.runner.backfill``) measured in the same repeat, so that each ratio compares one host state.

The launch worker registers itself in ``benchmarks.workers.WORKERS`` when this module is imported.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from benchmarks.inputs import fresh, incremental_dumps, landing, size, size_label, synth
from benchmarks.measure import Measured, measure, measure_command, worker_command
from benchmarks.paths import ROOT, WORK
from benchmarks.repeats import median, spread
from benchmarks.report import Row
from benchmarks.workers import WORKERS

CLI = ".venv/bin/assistants-backfill"


def cli_command(source: Path, data: Path, *extra: str) -> list[str]:
    return [CLI, "run", "--input", str(source), "--data-dir", str(data), "--json", *extra]


def shown(cmd: list[str]) -> str:
    return " ".join(cmd).replace(f"{ROOT}/", "")


def cli_report(out: Path) -> dict[str, Any]:
    """The ``--json`` report a measured CLI run wrote to ``out``; a failed run stops the row."""
    report = json.loads(out.read_text())
    if not report["ok"]:
        raise RuntimeError(f"the CLI run failed: {report['failures']}")
    return report


def core_then_cli(
    core_args: dict[str, Any], cmd: list[str], cli_data: Path, out: Path
) -> tuple[Measured, Measured, dict[str, Any]]:
    """One repeat of a door row: ``backfill()`` on a fresh data folder, then the CLI command on a fresh one
    (its ``--json`` report written to ``out`` and checked)."""
    fresh(Path(core_args["data"]))
    core = measure("backfill", **core_args)
    fresh(cli_data)
    cli = measure_command(cmd, out)
    return core, cli, cli_report(out)


def bench_cli(messages: int, repeats: int) -> list[Row]:
    """The CLI end to end with the embedded load against ``backfill()`` on the same input, then the same
    command again with nothing new."""
    label = size_label(messages)
    source = synth(WORK / f"m{label}.ndjson", messages)
    core_data, cli_data = WORK / f"data-core-{label}", WORK / f"data-cli-{label}"
    core_args = {"source": str(source), "data": str(core_data), "load": True, "gates": True}
    runs: list[tuple[Measured, Measured, Measured, Measured, dict[str, Any]]] = []
    for _ in range(repeats):
        # The same job as the CLI's defaults: backfill()'s own default scores without the curation gates,
        # which read every answer's text (the CLI's scoring took 6.7 s per scope at 1M against ~1.6 s).
        fresh(core_data)
        core = measure("backfill", **core_args)
        core_again = measure("backfill", **core_args)
        out = WORK / f"cli-{label}.json"
        cli = measure_command(cli_command(source, fresh(cli_data)), out)
        report = cli_report(out)
        again_out = WORK / f"cli-again-{label}.json"
        again = measure_command(cli_command(source, cli_data), again_out)
        cli_report(again_out)
        runs.append((core, cli, core_again, again, report))
    core, cli, _, _, report = median(runs, key=lambda r: r[1].wall / r[0].wall)
    ratios = [r[1].wall / r[0].wall for r in runs]
    stored = sum(s["loaded"] for s in report["scopes"].values())
    tree = cli.inner["tree_rss_mb"]
    ratio = cli.wall / core.wall
    _, _, core_rerun, rerun, _ = median(runs, key=lambda r: r[3].wall)
    rerun_ratio = rerun.wall / core_rerun.wall
    return [
        Row(
            name="cli_1m",
            title=f"{label} messages end to end through the CLI (assistants-backfill run --json, embedded "
            "load) vs backfill() in the same run",
            input=f"{source.name} ({size(source)}, {messages:,} messages)",
            command=shown(cli_command(source, cli_data)),
            wall_s=cli.wall,
            rss_mb=tree,
            throughput=f"{ratio:.2f}x the core path",
            target="<= 180 s, <= 2 GB RSS (all its processes), <= 1.15x the core path",
            met=cli.wall <= 180 and tree <= 2048 and ratio <= 1.15,
            details=f"{spread(ratios, 'x')}CLI {cli.wall:.1f} s, its process tree peaked at {tree:,.0f} MB "
            f"RSS summed ({cli.inner['tree_pss_mb']:,.0f} MB PSS summed, sampled every 2 s), first process "
            f"{cli.rss_mb:,.0f} MB; core backfill() process {core.wall:.1f} s, "
            f"{core.rss_mb:,.0f} MB, stages {core.inner['stages']} (command: "
            f"{worker_command('backfill', **core_args)}, with the CLI's default curation gates); "
            f"{stored:,} patterns loaded by the CLI",
        ),
        Row(
            name="cli_rerun_1m",
            title=f"the same CLI command again with nothing new ({label} messages already loaded)",
            input=f"{source.name}, every dump already in the manifest",
            command=shown(cli_command(source, cli_data)) + "  # after the cli_1m row's run",
            wall_s=rerun.wall,
            rss_mb=rerun.inner["tree_rss_mb"],
            throughput=f"{rerun_ratio:.2f}x the core path's re-run",
            target="<= 5 s as a whole process",
            met=rerun.wall <= 5,
            details=f"{spread([r[3].wall for r in runs], 's')}the process reads the manifest, the scope "
            "catalog and one record per scope; no scope runs and the store is not listed; the core path's "
            f"re-run with nothing new in the same repeat (backfill() again on its own data folder): "
            f"{core_rerun.wall:.2f} s, backfill() {core_rerun.inner['seconds']:.2f} s, "
            f"{core_rerun.rss_mb:,.0f} MB (command: {worker_command('backfill', **core_args)}, after the "
            "core path's full run)",
        ),
    ]


def bench_cli_transform(messages: int, repeats: int) -> Row:
    """The CLI transform only (``--destination none``) on the 10M export, ``repeats`` times after one run
    of the core path on the same job; each run's tens of GB of staged files are deleted after it."""
    label = size_label(messages)
    source = synth(WORK / f"m{label}.ndjson", messages)
    data, core_data = WORK / f"data-cli-transform-{label}", WORK / f"data-core-transform-{label}"
    # The same job in the core path first (the CLI's default gates, no load), for the ratio in one host state.
    core = measure("backfill", source=str(source), data=str(fresh(core_data)), load=False, gates=True)
    # Deleted at once: two 10M data folders (~19 GB each) would not both fit beside the input. Few large
    # files, so the slow file creation after mass deletion (benchmarks.inputs.fresh) does not apply.
    shutil.rmtree(core_data)
    cmd = cli_command(source, fresh(data), "--destination", "none")
    out = WORK / f"cli-{label}.json"
    runs = []
    for _ in range(repeats):
        m = measure_command(cmd, out)
        report = cli_report(out)
        shutil.rmtree(data)  # as the core path's folder above
        runs.append((m, report))
    m, report = median(runs, key=lambda r: r[0].wall)
    runs_spread = spread([r[0].wall for r in runs], "s")
    scopes = report["scopes"].values()
    tree = m.inner["tree_rss_mb"]
    core_command = worker_command("backfill", source=str(source), data=str(core_data), load=False, gates=True)
    return Row(
        name="cli_10m",
        title=f"{label} messages through the CLI, transform only (assistants-backfill run --destination none "
        "--json)",
        input=f"{source.name} ({size(source)}, {messages:,} messages)",
        command=shown(cmd),
        wall_s=m.wall,
        rss_mb=tree,
        throughput=f"{messages / m.wall:,.0f} messages/s; {m.wall / core.wall:.2f}x the core path",
        target="<= 180 s, <= 4 GB RSS (all its processes)",
        met=m.wall <= 180 and tree <= 4096,
        details=f"{runs_spread}its process tree peaked at {tree:,.0f} MB RSS summed "
        f"({m.inner['tree_pss_mb']:,.0f} MB PSS summed, sampled every 2 s), "
        f"first process {m.rss_mb:,.0f} MB; "
        f"the core path on the same job just before: {core.wall:.1f} s, {core.rss_mb:,.0f} MB, stages "
        f"{core.inner['stages']} (command: {core_command}); "
        f"{len(scopes)} scopes, {sum(s['patterns'] for s in scopes):,} patterns, "
        f"{sum(s['kept'] for s in scopes):,} kept, {sum(s['loaded'] for s in scopes)} loaded "
        f"(load_skipped: {report['load_skipped']!r}); every staged check ran",
    )


def bench_cli_incremental(base: int, repeats: int) -> Row:
    """A scheduled incremental backfill as users run it: the CLI (embedded load) over a landing folder
    holding the base dump, then again once a 1% dump has landed beside it; the core path's same pair
    of runs (``backfill()`` with the CLI's default gates and the load) in the same repeat, for the ratio.
    The input is the ``incremental_load`` row's."""
    label = size_label(base)
    first, second = incremental_dumps(base)
    landing_dir = WORK / f"landing-cli-incremental-{label}"
    core_data, cli_data = WORK / f"data-core-incremental-{label}", WORK / f"data-cli-incremental-{label}"
    core_args = {"source": str(landing_dir), "data": str(core_data), "load": True, "gates": True}
    cmd = cli_command(landing_dir, cli_data)
    runs: list[tuple[Measured, Measured, Measured, Measured, dict[str, Any]]] = []
    for _ in range(repeats):
        landing(landing_dir, first)
        fresh(core_data)
        core_full = measure("backfill", **core_args)
        landing(landing_dir, first, second)
        core_incr = measure("backfill", **core_args)
        landing(landing_dir, first)
        fresh(cli_data)
        full_out, out = WORK / f"cli-incremental-full-{label}.json", WORK / f"cli-incremental-{label}.json"
        cli_full = measure_command(cmd, full_out)
        cli_report(full_out)
        landing(landing_dir, first, second)
        cli_incr = measure_command(cmd, out)
        report = cli_report(out)
        runs.append((core_full, core_incr, cli_full, cli_incr, report))
    core_full, core_incr, cli_full, cli_incr, report = median(runs, key=lambda r: r[3].wall / r[2].wall)
    share = cli_incr.wall / cli_full.wall
    return Row(
        name="cli_incremental_1m",
        title=f"incremental run after a 1% dump vs full run through the CLI (assistants-backfill run --json, "
        f"embedded load, {label} base), as whole processes, vs backfill() in the same run",
        input=f"{first.name} ({size(first)}) then {second.name} ({size(second)})",
        command=f"{shown(cmd)}  # twice: with {first.name} only, then with both",
        wall_s=cli_incr.wall,
        rss_mb=cli_incr.inner["tree_rss_mb"],
        throughput=f"{share:.1%} of the CLI's full run; {cli_incr.wall / core_incr.wall:.2f}x the core's",
        target="<= 10% of a full run, as whole processes",
        met=share <= 0.10,
        details=f"{spread([r[3].wall / r[2].wall * 100 for r in runs], '%')}"
        f"CLI: full run {cli_full.wall:.1f} s ({cli_full.inner['tree_rss_mb']:,.0f} MB summed), incremental "
        f"run {cli_incr.wall:.2f} s ({len(report['scopes'])} scopes); "
        f"core path: full run {core_full.wall:.1f} s, "
        f"incremental run {core_incr.wall:.2f} s (backfill() {core_incr.inner['seconds']:.2f} s, stages "
        f"{core_incr.inner['stages']}; command: {worker_command('backfill', **core_args)}, twice)",
    )


def launch_worker(args: dict[str, Any]) -> dict[str, Any]:
    """One scope launched through the instance's run launcher, as the UI launches it (a GraphQL launch
    against a code server for workspace.yaml; the launcher starts a run process), after the ingest ran."""
    import dagster as dg
    from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

    from assets.cli.instance import INSTANCE_TEMPLATE, execute, run_config
    from assets.destination import EngramiaDestination
    from assets.jobs import ingest_job, scope_run_tags
    from assets.resources import BackfillSettings

    data = Path(args["data"])
    home = data / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(INSTANCE_TEMPLATE, home / "dagster.yaml")
    # No daemon here to dequeue runs, as `dagster dev` has: the launcher starts the run at once.
    with (home / "dagster.yaml").open("a") as f:
        f.write("run_coordinator:\n  module: dagster.core.run_coordinator\n  class: DefaultRunCoordinator\n")
    # Opened as `dagster dev` opens it (from DAGSTER_HOME's dagster.yaml, Dagster's own storage classes), not
    # as the CLI does: the launched run is measured as the UI's and the sensor's runs are.
    instance = dg.DagsterInstance.from_config(str(home))
    settings = BackfillSettings(data_dir=str(data), landing=args["source"], settle_seconds=0)
    config = run_config(settings, EngramiaDestination())
    assert execute(instance, ingest_job.name, config).success
    scope = args["scope"]
    mutation = """
    mutation($params: ExecutionParams!) {
      launchPipelineExecution(executionParams: $params) {
        __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
      }
    }"""
    selector = {"repositoryLocationName": "assistants_backfill", "repositoryName": "__repository__"}
    tags = [{"key": k, "value": v} for k, v in {"dagster/partition": scope, **scope_run_tags(scope)}.items()]
    with define_out_of_process_context(str(ROOT / "workspace.yaml"), None, instance) as context:
        started = time.perf_counter()
        result = execute_dagster_graphql(
            context,
            mutation,
            {"params": {"selector": {**selector, "jobName": "scope_job"}, "runConfigData": config,
                        "executionMetadata": {"tags": tags}}},
        )  # fmt: skip
        launched = result.data["launchPipelineExecution"]
        if launched["__typename"] != "LaunchRunSuccess":
            raise RuntimeError(str(launched))
        run_id = launched["run"]["runId"]
        while not instance.get_run_by_id(run_id).is_finished:
            time.sleep(0.05)
        seconds = time.perf_counter() - started
    run = instance.get_run_by_id(run_id)
    stats = instance.get_run_stats(run_id)
    return {
        "seconds": seconds,
        "success": run.status == dg.DagsterRunStatus.SUCCESS,
        "run_seconds": (stats.end_time or 0) - (stats.start_time or 0),
    }


WORKERS["launch"] = launch_worker


def _cli_scope_seconds(data: Path, scope: str) -> float:
    """The scope run's own duration (start to end, as the instance recorded it) of a CLI run."""
    import dagster as dg

    from assets.cli.instance import open_instance

    with open_instance(data) as instance:
        [run] = instance.get_runs(dg.RunsFilter(job_name="scope_job", tags={"dagster/partition": scope}))
        stats = instance.get_run_stats(run.run_id)
    return (stats.end_time or 0) - (stats.start_time or 0)


def bench_launched(messages: int, repeats: int) -> Row:
    """One scope of about a 1M export's scope size: launched through the instance vs through the CLI."""
    source = synth(WORK / f"one-scope-{size_label(messages)}.ndjson", messages, assistants=1)
    cli_data, launch_data = WORK / "data-one-scope-cli", WORK / "data-one-scope-launched"
    runs = []
    for _ in range(repeats):
        cli = measure_command(cli_command(source, fresh(cli_data)), WORK / "cli-one-scope.json")
        scopes = cli_report(WORK / "cli-one-scope.json")["scopes"]
        scope = max(scopes, key=lambda s: scopes[s]["patterns"])  # (lines without an assistant: a 2nd)
        cli_scope = _cli_scope_seconds(cli_data, scope)
        launched = measure("launch", source=str(source), data=str(fresh(launch_data)), scope=scope)
        if not launched.inner["success"]:
            raise RuntimeError("the launched scope run failed")
        runs.append((launched.inner["seconds"] / cli_scope, cli, cli_scope, launched))
    ratio, cli, cli_scope, launched = median(runs, key=lambda r: r[0])
    return Row(
        name="launched_scope",
        title="one scope run launched through the Dagster instance's run launcher (as the UI and the sensor "
        "launch it) vs the same scope's run inside the CLI",
        input=f"{source.name} ({size(source)}, {messages:,} messages, one assistant)",
        command=worker_command("launch", source=str(source), data=str(launch_data), scope=scope),
        wall_s=launched.inner["seconds"],
        rss_mb=launched.rss_mb,
        throughput=f"{ratio:.2f}x the CLI's scope run",
        target="<= 1.5x the same scope through the CLI",
        met=ratio <= 1.5,
        details=f"{spread([r[0] for r in runs], 'x')}launched: {launched.inner['seconds']:.1f} s from "
        f"the launch request to the finished run (its run process {launched.inner['run_seconds']:.1f} s from "
        f"start to end); CLI: that scope's run {cli_scope:.1f} s (whole CLI process {cli.wall:.1f} s, with "
        f"ingest; command {shown(cli_command(source, cli_data))}); the launch goes straight to the run "
        "launcher (the instance's default run coordinator): a queued coordinator adds the daemon's dequeue "
        "interval",
    )


def checks_worker(args: dict[str, Any]) -> dict[str, Any]:
    """Each scope's two GX checks, as a scope run calls them, timed one by one; GX imported first (once per
    process: a run process starts that import ahead, beside its first steps)."""
    from checks.expectations import messages_quality, scored_quality
    from pipelines.imports import GREAT_EXPECTATIONS, import_ahead
    from pipelines.ingest.catalog import read_scopes
    from pipelines.ingest.messages import scan_messages
    from pipelines.load.records import kept_patterns
    from pipelines.tables import DataLayout

    started = time.perf_counter()
    import_ahead(GREAT_EXPECTATIONS).join()
    gx_import = time.perf_counter() - started
    layout = DataLayout.at(args["data"])
    calls = []
    for scope in read_scopes(layout)["scope"].to_list():
        for name, check, frame in (
            ("messages_quality", messages_quality, scan_messages(layout, scope)),
            ("scored_quality", scored_quality, kept_patterns(layout, scope)),
        ):
            t = time.perf_counter()
            result = check(frame)
            calls.append({"check": name, "scope": scope, "seconds": time.perf_counter() - t,
                          "rows": result.metadata["rows"].value, "passed": result.passed})  # fmt: skip
    return {"gx_import_s": gx_import, "calls": calls}


WORKERS["checks"] = checks_worker


def bench_checks(big: Path | None) -> Row:
    """The GX checks per scope at demo size (the bundled sample through the CLI) and on a 1M data folder."""
    demo = WORK / "data-checks-demo"
    sample = ROOT / "data" / "sample"
    measure_command(cli_command(sample, fresh(demo)), WORK / "cli-demo.json")
    small = measure("checks", data=str(demo))
    calls = small.inner["calls"]
    worst = max(c["seconds"] for c in calls)
    details = (
        f"demo: {len(calls)} check calls over {len(calls) // 2} scopes, slowest {worst:.3f} s, all passed: "
        f"{all(c['passed'] for c in calls)}; GX imported once per process beforehand in "
        f"{small.inner['gx_import_s']:.1f} s (a scope run starts that import ahead, beside its first steps)"
    )
    if big is not None and big.exists():
        large = measure("checks", data=str(big)).inner["calls"]
        for name in ("messages_quality", "scored_quality"):
            mine = [c for c in large if c["check"] == name and c["rows"]]
            per_row = sum(c["seconds"] for c in mine) / max(1, sum(c["rows"] for c in mine)) * 1e6
            details += (
                f"; on {big.name} {name}: {max(c['seconds'] for c in mine):.2f} s at most per scope, "
                f"{per_row:.1f} us per row over {sum(c['rows'] for c in mine):,} rows"
            )
    return Row(
        name="checks",
        title="data-quality checks (the two GX suites) per scope: demo size, and 1M messages for linearity",
        input="data/sample through the CLI; the cli_1m row's data folder",
        command=worker_command("checks", data=str(demo)),
        wall_s=small.wall,
        rss_mb=small.rss_mb,
        throughput=f"slowest check {worst:.3f} s",
        target="<= 1 s per check per scope at demo size, linear at scale",
        met=worst <= 1.0,
        details=details,
    )
