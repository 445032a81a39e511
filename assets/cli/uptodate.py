"""A run with nothing new, answered from the scopes' records instead of running them again.

When the landing folder holds no dump the manifest lacks and every scope's last complete run was made from
the same inputs (:mod:`pipelines.settled`), there is nothing to ingest, pair, score or load: the run
reports each scope as its last complete run left it, with everything that run loaded now counted as
already loaded. Deciding this reads the manifest, the scope catalog and one small record per scope, never
the staged tables or the store. After an ingest, likewise, only the scopes the new dumps touched run.
"""

from __future__ import annotations

import os
from typing import Any

import polars as pl

from assets.cli.instance import run_config
from assets.cli.summary import LOAD_TERMS, quarantine_reasons, unscoped_quarantined
from assets.common import CODE_VERSION
from assets.destination import LOAD_SKIPPED_REASON, EngramiaDestination
from assets.resources import BackfillSettings
from pipelines.ingest.catalog import pending_dumps, read_manifest, read_scopes
from pipelines.objectstore.location import is_remote
from pipelines.settled import fingerprint, record, settled
from pipelines.tables import DataLayout

# A scope is complete when nothing of it is left to load or to look at again.
_LEFT_OVER = ("failed", "not_stored", "rejected", "skipped")


# Where the data folder, the landing folder and the scratch space are says nothing of what a scope run makes
# from them: the staged dumps (in the fingerprint) are its input, whichever folder they were read from and
# wherever the data folder has moved since.
_LOCATIONS = {"settings": ("data_dir", "landing", "work_dir"), "engramia": ()}
# Paths compared as the files they name, not as typed; the files a scope run reads also by their content
# (size and modification time), so a file edited in place makes the scopes run again. The store is a folder
# its own loads change: only its name counts.
_PATHS = {"settings": ("tenant_map", "feedback", "signal_rules"), "engramia": ("store_dir", "servers_file")}
_NAME_ONLY = {"store_dir"}


def scope_fingerprint(settings: BackfillSettings, destination: EngramiaDestination, scope: str) -> str:
    """The inputs of a scope run: the run's configuration, the staged dumps holding rows of the scope, and
    the files the options name.

    Paths are compared as the files they name, not as typed: the same command run from another folder,
    with absolute paths, or through a symlink has the same inputs.
    """
    resources = run_config(settings, destination)["resources"]
    config: dict[str, Any] = {"code_version": CODE_VERSION}
    files: list[str | None] = []
    for name, resource in resources.items():
        options = {k: v for k, v in resource["config"].items() if k not in _LOCATIONS.get(name, ())}
        for key in _PATHS.get(name, ()):
            if options.get(key) is not None:
                options[key] = _canonical(options[key])
                if key not in _NAME_ONLY:
                    files.append(options[key])
        config[name] = {"config": options}
    manifest = read_manifest(settings.layout)
    dumps = manifest.filter(pl.col("scopes").list.contains(scope))["dump_id"].to_list()
    return fingerprint(config, dumps, files)


def _canonical(path: str) -> str:
    """An absolute path with symlinks resolved; an object-storage URI stays as it is."""
    return path if is_remote(path) else os.path.realpath(path)


def complete(scope_report: dict[str, Any]) -> bool:
    """Nothing left to load or look at; a transform-only run (nothing loaded by design, its fingerprint
    names destination none) is complete when its staged counts reconcile."""
    staged = bool(scope_report.get("lines_reconcile")) and bool(scope_report.get("messages_reconcile"))
    if scope_report.get("load_skipped"):
        return staged and bool(scope_report.get("load_adds_up"))
    return (
        staged
        and all(not scope_report.get(t) for t in _LEFT_OVER)
        and bool(scope_report.get("load_adds_up"))
        and bool(scope_report.get("load_reconciles"))
    )


def record_complete(
    settings: BackfillSettings,
    destination: EngramiaDestination,
    scopes: dict[str, dict[str, Any]],
    clean: set[str],
) -> None:
    """Record the scopes of ``clean`` (run, every check passed) whose report says they are complete."""
    for scope, report in scopes.items():
        if scope in clean and report.get("run_id") and complete(report):
            print_ = scope_fingerprint(settings, destination, scope)
            record(settings.layout, scope, print_, report["run_id"], report)


def _as_up_to_date(last: dict[str, Any]) -> dict[str, Any]:
    """A scope's last complete run's report as this run reports it: nothing sent, all of it already there."""
    report = dict(last["summary"])
    held = sum(int(report.get(t) or 0) for t in ("loaded", "already_loaded", "present"))
    report.update({t: 0 for t in LOAD_TERMS}, already_loaded=held, retracted=0, updated=0)
    if report.get("load_skipped"):
        report["skipped"] = int(report.get("kept") or 0)
    report.update(
        run_id=None,
        up_to_date_since=last["run_id"],
        pattern_count_before=report.get("pattern_count_after"),
    )
    return report


def up_to_date(
    settings: BackfillSettings, destination: EngramiaDestination, scopes: list[str]
) -> dict[str, dict[str, Any]]:
    """The reports of the scopes whose last complete run was made from the inputs they have now."""
    reports = {}
    for scope in scopes:
        last = settled(settings.layout, scope, scope_fingerprint(settings, destination, scope))
        if last is not None:
            reports[scope] = _as_up_to_date(last)
    return reports


def nothing_new(
    settings: BackfillSettings, destination: EngramiaDestination
) -> dict[str, dict[str, Any]] | None:
    """Every scope's report if this run has nothing to do (no new dump, every scope up to date), or None."""
    layout = settings.layout
    if not layout.manifest.exists() or pending_dumps(layout, settings.source):
        return None
    scopes = read_scopes(layout)["scope"].to_list()
    reports = up_to_date(settings, destination, scopes)
    return reports if scopes and len(reports) == len(scopes) else None


def key_warnings(destination: EngramiaDestination, scopes: list[str]) -> list[str]:
    if destination.is_rest and not destination.servers_file and len(scopes) > 1:
        return [
            f"--engramia-url/--api-key-env send all {len(scopes)} scopes to the ONE project of that key; "
            "give each scope its own key with --servers FILE (or use --scope-by single)"
        ]
    return []


def up_to_date_summary(
    layout: DataLayout, destination: EngramiaDestination, named: str, scopes: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The run's summary (as ``run`` prints it) when :func:`nothing_new` found nothing to do."""
    return {
        "ok": True,
        "exit_code": 0,
        "failures": [],
        "warnings": key_warnings(destination, list(scopes)),
        "failed_scopes": {},
        "failed_checks": {},
        "ingest_run_id": None,
        "this_run": {"dumps": 0, "lines": 0, "staged": 0, "quarantined": 0, "files": []},
        "scopes": scopes,
        "unscoped_quarantined": unscoped_quarantined(layout),
        "unscoped_quarantine_reasons": quarantine_reasons(layout, None),
        "data_dir": str(layout.root),
        "engramia_store": str(destination.store(layout)) if destination.mode == "embedded" else None,
        "destination": named,
        "load_skipped": None if destination.loads else LOAD_SKIPPED_REASON,
    }
