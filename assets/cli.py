"""``assistants-backfill``: run the whole asset graph in-process, without the UI.

A run is the project's named jobs, ``ingest_job`` and then ``scope_job`` once per scope, recorded in the
Dagster instance under ``<data-dir>/dagster_home`` (unless DAGSTER_HOME is set): they show up in the UI's
run history next to the sensor's runs, with their configuration, and can be re-executed from there.
"""

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from assets.definitions import defs
from assets.jobs import ingest_job, scope_job, scope_run_tags
from assets.resources import BackfillSettings, EngramiaDestination
from pipelines.ingest.catalog import read_scopes, scope_names
from pipelines.load.plan import latest_load_result
from pipelines.load.rollback import rollback_embedded, rollback_rest
from pipelines.pairing.batches import current
from pipelines.progress import progress_bars
from pipelines.quality.reconcile import scope_counts
from pipelines.scoring.scores import scan_scored
from pipelines.tables import DataLayout
from pipelines.tools import synth

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
INSTANCE_TEMPLATE = Path(__file__).with_name("dagster.yaml")


def _instance(data_dir: Path) -> dg.DagsterInstance:
    home = Path(os.environ.get("DAGSTER_HOME") or data_dir / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        # The UI's instance and the CLI's are one: same run queue, same pools, no telemetry.
        shutil.copyfile(INSTANCE_TEMPLATE, config)
    # Built from the folder, not from the environment: the caller's DAGSTER_HOME is left as it was.
    return dg.DagsterInstance.from_config(str(home))


def _resource_config(resource: dg.ConfigurableResource) -> dict[str, Any]:
    return {name: v for name in type(resource).model_fields if (v := getattr(resource, name)) is not None}


def run_config(settings: BackfillSettings, destination: EngramiaDestination) -> dict[str, Any]:
    """The whole configuration of a CLI run as run config: the UI shows it and re-executes with it."""
    return {
        "resources": {
            "settings": {"config": _resource_config(settings)},
            "engramia": {"config": _resource_config(destination)},
        },
        **QUIET,
    }


def _failed_checks(result: dg.ExecuteInProcessResult) -> list[str]:
    out = []
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed:
            severity = evaluation.severity.value if evaluation.severity else "ERROR"
            out.append(f"{evaluation.asset_key.to_user_string()}.{evaluation.check_name} ({severity})")
    return out


def scope_summary(settings: BackfillSettings, scope: str) -> dict[str, Any]:
    layout = settings.layout
    counts = scope_counts(layout, scope)
    scored = scan_scored(layout, scope)
    patterns = current(layout, "patterns", scope)
    n_patterns = 0 if patterns is None else int(patterns.select(pl.len()).collect().item())
    kept = n_patterns if scored is None else int(scored.select(pl.col("kept").sum()).collect().item())
    load = latest_load_result(layout, scope) or {}
    tenant_id, project_id = scope_names(layout, scope)
    return {
        "tenant_id": tenant_id,
        "project_id": project_id,
        "lines_in": counts.lines_in,
        "messages": counts.messages,
        "quarantined": counts.quarantined,
        "repeats": counts.repeats,
        "patterns": n_patterns,
        "unpaired": counts.unpaired,
        "duplicates": n_patterns - kept,
        "kept": kept,
        "loaded": load.get("stored", 0),
        "already_loaded": load.get("already_loaded", 0),
        "rejected": load.get("rejected", 0),
        "retracted": load.get("retracted", 0),
        "pattern_count_before": load.get("pattern_count_before"),
        "pattern_count_after": load.get("pattern_count_after"),
        "lines_reconcile": counts.lines_reconcile,
        "messages_reconcile": counts.messages_reconcile,
        "load_reconciles": bool(load.get("reconciles", False)),
    }


def run(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir)
    settings = BackfillSettings(
        data_dir=str(data_dir),
        landing=str(args.input),
        scope_by=args.scope_by,
        tenant=args.tenant,
        project=args.project,
        tenant_map=str(args.tenant_map) if args.tenant_map else None,
        pairing=args.pairing,
        task_max_chars=args.task_max_chars,
        code_max_chars=args.code_max_chars,
        score_strategy="feedback" if args.feedback else "neutral",
        feedback=str(args.feedback) if args.feedback else None,
        # The dumps were named explicitly: read them as they are now.
        settle_seconds=0,
    )
    try:
        destination = _destination(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = run_config(settings, destination)
    instance = _instance(data_dir)

    def say(msg: str) -> None:
        if not args.json or args.verbose:
            print(msg, file=sys.stderr, flush=True)

    say(f"ingesting {args.input} into {settings.layout.root}")
    ingest = defs.resolve_job_def(ingest_job.name).execute_in_process(
        run_config=config, instance=instance, raise_on_error=False
    )
    if not ingest.success:
        print(f"ingest failed: {_first_error(ingest)}", file=sys.stderr)
        return 2
    scopes = read_scopes(settings.layout)["scope"].to_list()
    job = defs.resolve_job_def(scope_job.name)
    if destination.is_rest and not destination.servers_file and len(scopes) > 1:
        say(
            f"warning: --engramia-url/--api-key-env send all {len(scopes)} scopes to the ONE project of that "
            "key; give each scope its own key with --servers FILE (or use --scope-by single)"
        )
    failures: dict[str, str] = {}
    failed_checks: dict[str, list[str]] = {}
    bars = _progress_factory(args)
    for i, scope in enumerate(scopes, start=1):
        say(f"[{i}/{len(scopes)}] {scope}: messages -> patterns -> scores -> Engramia")
        with progress_bars(bars):
            result = job.execute_in_process(
                run_config=config,
                instance=instance,
                partition_key=scope,
                tags=scope_run_tags(scope),
                raise_on_error=False,
            )
        if not result.success:
            failures[scope] = _first_error(result)
            say(f"    FAILED: {failures[scope]}")
        if bad := _failed_checks(result):
            failed_checks[scope] = bad
            say(f"    checks not passed: {', '.join(bad)}")
    summary: dict[str, Any] = {"scopes": {}, "failed_scopes": failures, "failed_checks": failed_checks}
    for scope in scopes:
        summary["scopes"][scope] = scope_summary(settings, scope)
    summary["unscoped_quarantined"] = _unscoped_quarantined(settings)
    summary["data_dir"] = str(settings.layout.root)
    summary["engramia_store"] = (
        str(destination.store(settings.layout)) if args.destination == "embedded" else None
    )
    summary["destination"] = args.destination
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        _print_table(summary)
    hard_failures = {s: c for s, c in failed_checks.items() if any("(ERROR)" in x for x in c)}
    return 1 if failures or hard_failures else 0


def _destination(args: argparse.Namespace) -> EngramiaDestination:
    """The destination resource from the ``run`` options (REST options are ignored for embedded)."""
    rest = args.destination != "embedded"
    if rest and not args.servers and not (args.engramia_url and args.api_key_env):
        raise ValueError(
            f"--destination {args.destination} needs --engramia-url URL --api-key-env NAME (one server "
            "and key for every scope of the run) or --servers FILE (a key per scope)"
        )
    if args.servers and (args.engramia_url or args.api_key_env):
        raise ValueError("give either --servers FILE or --engramia-url/--api-key-env, not both")
    destination = EngramiaDestination(
        mode=args.destination,
        store_dir=str(args.store) if args.store else None,
        **(_rest_fields(args) if rest else {}),
    )
    if rest:
        destination.servers()  # a bad URL, variable name or mapping file fails here, before any work
    return destination


def _rest_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "url": args.engramia_url,
        "api_key_env": args.api_key_env,
        "servers_file": str(args.servers) if args.servers else None,
        "redact": not args.no_redact,
        "timeout": args.timeout,
        "requests_per_minute": args.requests_per_minute,
        "concurrency": args.concurrency,
        "max_retries": args.max_retries,
        "max_retry_after": args.max_retry_after,
    }
    for name in ("async_import", "max_body_bytes", "resend_rejected"):
        if hasattr(args, name):
            fields[name] = getattr(args, name)
    if hasattr(args, "no_validate"):
        fields["validate_limits"] = not args.no_validate
    return fields


def _progress_factory(args: argparse.Namespace):
    """tqdm bars on stderr, one per scope load (off with --no-progress, or --json without --verbose)."""
    if args.no_progress or (args.json and not args.verbose):
        return None
    from tqdm import tqdm

    def make(desc: str, total: int | None):
        return tqdm(
            total=total, desc=desc, unit="pattern", file=sys.stderr, dynamic_ncols=True, mininterval=0.5
        )

    return make


def rollback(args: argparse.Namespace) -> int:
    layout = DataLayout.at(args.data_dir)
    known = read_scopes(layout)["scope"].to_list() if layout.staged.exists() else []
    if args.scope not in known:
        print(
            f"error: scope {args.scope!r} not found in {layout.root} (known: {', '.join(known) or 'none'})",
            file=sys.stderr,
        )
        return 2
    tenant_id, project_id = scope_names(layout, args.scope)
    rest = bool(args.engramia_url or args.api_key_env or args.servers)
    if rest and args.embedded:
        print(
            "error: --embedded cannot be combined with --engramia-url/--api-key-env/--servers",
            file=sys.stderr,
        )
        return 2
    if rest:
        try:
            args.destination = "rest-import"  # the mode does not matter for deleting by key
            destination = _destination(args)
            server = destination.server_for(layout, args.scope, tenant_id, project_id)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        report = rollback_rest(layout, args.scope, server, destination.rest_options(), dry_run=args.dry_run)
    else:
        report = rollback_embedded(
            layout, args.scope, tenant_id, project_id, args.store, dry_run=args.dry_run
        )
    out = report.as_dict()
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    else:
        verb = "would delete" if args.dry_run else "rollback of"
        print(f"{verb} scope {args.scope} ({tenant_id}/{project_id}) at {report.destination}:")
        for item in report.items:
            print(f"  {item.action:<14} {item.pattern_id}  {item.key or '(key unknown)'}  [{item.outcome}]")
        print(
            f"deleted {out['deleted']}, already absent {out['absent']}, would delete {out['would_delete']}, "
            f"key unknown {out['key_unknown']}; pattern_count {report.pattern_count_before} -> "
            f"{report.pattern_count_after}"
        )
    if report.error:
        print(f"error: {report.error}", file=sys.stderr)
        return 1
    return 0


def _add_rest_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("REST destination (rest-learn, rest-import, rollback)")
    g.add_argument("--engramia-url", help="base URL of the Engramia server (every scope of the run)")
    g.add_argument("--api-key-env", help="NAME of the environment variable holding the API key (not the key)")
    g.add_argument("--servers", type=Path, help="YAML/JSON file mapping scopes to url + api_key_env")
    g.add_argument("--no-redact", action="store_true", help="send task and code without PII redaction")
    g.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default 30)")
    g.add_argument(
        "--requests-per-minute",
        type=float,
        default=60.0,
        help="client-side rate limit (default 60, the server's per-path limit; 0 = none)",
    )
    g.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="requests in flight (default 1; JSON-backed servers need 1)",
    )
    g.add_argument("--max-retries", type=int, default=5, help="retries on connection errors, timeouts, 5xx")
    g.add_argument(
        "--max-retry-after",
        type=float,
        default=120.0,
        help="longest wait honoured for one 429 Retry-After (seconds)",
    )


def _unscoped_quarantined(settings: BackfillSettings) -> int:
    files = sorted(settings.layout.quarantine().glob("*.parquet"))
    if not files:
        return 0
    return int(pl.scan_parquet(files).filter(pl.col("scope").is_null()).select(pl.len()).collect().item())


def _first_error(result: dg.ExecuteInProcessResult) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            err = event.step_failure_data.error
            while err.cause is not None and "Error occurred while executing" in err.message:
                err = err.cause
            return err.message.strip().splitlines()[-1] if err.message else "step failed"
    return "run failed"


def _print_table(summary: dict[str, Any]) -> None:
    cols = [
        "messages",
        "quarantined",
        "repeats",
        "patterns",
        "unpaired",
        "duplicates",
        "loaded",
        "pattern_count_before",
        "pattern_count_after",
    ]
    rows = [
        {
            "scope": s,
            **{c: v[c] for c in cols},
            "ok": v["lines_reconcile"] and v["messages_reconcile"] and v["load_reconciles"],
        }
        for s, v in summary["scopes"].items()
    ]
    if rows:
        with pl.Config(
            tbl_rows=-1,
            tbl_cols=-1,
            tbl_width_chars=200,
            tbl_hide_dataframe_shape=True,
            tbl_hide_column_data_types=True,
        ):
            print(pl.DataFrame(rows))
    print(f"lines quarantined without a scope: {summary['unscoped_quarantined']}")
    print(f"staged Parquet: {summary['data_dir']}/staged   warehouse: {summary['data_dir']}/warehouse.duckdb")
    if summary["engramia_store"]:
        print(f"Engramia store (embedded): {summary['engramia_store']}")
    for scope, err in summary["failed_scopes"].items():
        print(f"FAILED {scope}: {err}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assistants-backfill", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="ingest dumps and load every scope into Engramia")
    r.add_argument("--input", type=Path, required=True, help="a dump file or a folder of dumps")
    r.add_argument("--data-dir", type=Path, default=Path("data"))
    r.add_argument("--scope-by", choices=["assistant", "tenant", "single"], default="assistant")
    r.add_argument("--tenant", default="default", help="tenant name (scope-by assistant|single)")
    r.add_argument("--project", default="default", help="project name (scope-by tenant|single)")
    r.add_argument("--tenant-map", type=Path, help="CSV/Parquet thread_id,tenant_id (scope-by tenant)")
    r.add_argument("--feedback", type=Path, help="CSV/Parquet of feedback keyed by message_id or thread_id")
    r.add_argument("--pairing", choices=["merge", "strict"], default="merge")
    r.add_argument("--task-max-chars", type=int, default=2_000)
    r.add_argument("--code-max-chars", type=int, default=8_000)
    r.add_argument("--destination", choices=["embedded", "rest-learn", "rest-import"], default="embedded")
    r.add_argument("--store", type=Path, help="embedded Engramia store folder (default <data-dir>/engramia)")
    r.add_argument("--json", action="store_true", help="print the per-scope summary as JSON")
    r.add_argument("--verbose", action="store_true", help="progress on stderr even with --json")
    r.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    _add_rest_options(r)
    r.add_argument("--no-validate", action="store_true", help="skip the check of the server's input limits")
    r.add_argument("--async-import", action="store_true", help="rest-import: Prefer: respond-async + polling")
    r.add_argument(
        "--max-body-bytes",
        type=int,
        default=1_048_576,
        help="the server's request body limit (default 1 MiB); import batches stay under it",
    )
    r.add_argument(
        "--resend-rejected",
        action="store_true",
        help="send again patterns the server rejected (422) or did not store",
    )
    r.set_defaults(func=run)
    b = sub.add_parser("rollback", help="delete exactly the patterns this pipeline loaded into a scope")
    b.add_argument("--data-dir", type=Path, default=Path("data"))
    b.add_argument("--scope", required=True, help="the scope key (as in staged/*/scope=<key>)")
    b.add_argument(
        "--embedded", action="store_true", help="the embedded store (default without REST options)"
    )
    b.add_argument("--store", type=Path, help="embedded Engramia store folder (default <data-dir>/engramia)")
    b.add_argument("--dry-run", action="store_true", help="list what would be deleted; delete nothing")
    b.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_rest_options(b)
    b.set_defaults(func=rollback)
    s = sub.add_parser("synth", help="generate a synthetic export")
    s.add_argument("rest", nargs=argparse.REMAINDER)
    s.set_defaults(func=lambda a: synth.main(a.rest) or 0)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))
