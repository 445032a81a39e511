"""Take back exactly what this pipeline loaded into one scope, and nothing else.

The list comes from the scope's ledger for that destination: every pattern whose latest outcome is
``stored`` or ``present`` (``present`` means the destination already had the pipeline's own
deterministic key, or the pattern was found there after an interrupted run). Each is deleted by key
and recorded ``retracted``; a pattern already gone is recorded ``retracted`` too, with that reason.
Projects are never deleted (``DELETE /v1/governance/projects/{id}`` would revoke every key of the
project and has no dry run).

What rollback can do per mode:

* embedded and rest-import: keys are deterministic (``patterns/<pattern_id>``): exact.
* rest-learn: the server picks the key (``patterns/<sha256(task)[:8]>_<ms>``). The load records it
  when the key may read ``/v1/export`` (admin); otherwise rollback finds each pattern at deletion time,
  by its task and code as sent, through ``/v1/export`` (admin) or ``/v1/recall`` (any role). An editor
  key may delete only patterns it created (which is what it loaded). A pattern that cannot be found
  is listed as ``key unknown`` and left alone.

Only keys this pipeline created are deleted. Two kinds of ledger rows name keys it did not create:

* a learn answered as replacing a near-duplicate (0.7.x keeps the better of two near-duplicate tasks under
  the OLD key): the key held another pattern before the load. Rollback puts that pattern back
  (``POST /v1/import`` with ``overwrite``, admin) from the record the load kept (``previous``); when the
  record is unknown (the key could not export) or the key may not import, the key is left alone and
  listed (``replaced: left in place``).
* a learned pattern found on the server with the same task and code (not sent by this pipeline): listed,
  left alone.

Deletes go at the server's per-key limit (``DELETE /v1/patterns/<key>`` is a new path for every key, so
the per-path limit does not bind; see :mod:`pipelines.load.rest.pacing`), with progress and an estimate.

``--dry-run`` lists what would be done (resolving learned keys only through the read-only export;
recall changes scores on the server, so a dry run never calls it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from pipelines.load.embedded import destination_id as embedded_destination_id
from pipelines.load.ledger import Ledger, Outcome
from pipelines.load.rest.batching import encode, import_body
from pipelines.load.rest.client import EngramiaClient
from pipelines.load.rest.errors import AuthError, RestError
from pipelines.load.rest.learn import FOUND_REASON, REPLACED_REASON
from pipelines.load.rest.options import RestOptions, destination_id, make_client
from pipelines.load.rest.pacing import Progress
from pipelines.load.rest.readback import LearnMatcher, sent_texts
from pipelines.load.rest.servers import ServerConfig
from pipelines.load.store import engramia_scope, open_memory
from pipelines.load.store import pattern_count as embedded_pattern_count
from pipelines.settled import unsettle
from pipelines.tables import DataLayout

RollbackAction = Literal[
    "would delete",
    "would delete (key looked up by recall when deleting)",
    "would restore",
    "deleted",
    "absent",
    "restored",
    "key unknown",
    "replaced: left in place",
    "not created here: left in place",
]
LEFT_IN_PLACE: tuple[RollbackAction, ...] = ("replaced: left in place", "not created here: left in place")


@dataclass
class RollbackItem:
    pattern_id: str
    key: str | None
    outcome: str
    action: RollbackAction
    note: str | None = None


@dataclass
class RollbackReport:
    scope: str
    destination: str
    dry_run: bool
    items: list[RollbackItem] = field(default_factory=list)
    pattern_count_before: int | None = None
    pattern_count_after: int | None = None
    requests_per_minute: float | None = None
    seconds: float = 0.0
    error: str | None = None

    def count(self, *actions: RollbackAction) -> int:
        return sum(1 for i in self.items if i.action in actions)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["deleted"] = self.count("deleted")
        out["absent"] = self.count("absent")
        out["restored"] = self.count("restored")
        out["would_delete"] = self.count("would delete")
        out["would_restore"] = self.count("would restore")
        out["key_unknown"] = self.count("key unknown")
        out["left_in_place"] = self.count(*LEFT_IN_PLACE)
        return out


def replaced_by_load(row: dict[str, Any]) -> bool:
    """The learn overwrote another pattern under this key (ledgers older than the ``replaced`` column
    say so in the reason)."""
    return bool(row.get("replaced")) or REPLACED_REASON in (row.get("reason") or "")


def found_not_sent(row: dict[str, Any]) -> bool:
    return (row.get("reason") or "").startswith(FOUND_REASON)


def _restore(client: EngramiaClient, previous: str) -> None:
    record = json.loads(previous)
    client.request("POST", "/v1/import", content=import_body([encode(record)], overwrite=True))


def rollback_rest(
    layout: DataLayout,
    scope: str,
    server: ServerConfig,
    options: RestOptions | None = None,
    dry_run: bool = False,
    transport: httpx.BaseTransport | None = None,
    say: Callable[[str], None] | None = None,
) -> RollbackReport:
    options = options or RestOptions()
    if not dry_run:
        unsettle(layout, scope)
    ledger = Ledger(layout, scope, destination_id(server))
    report = RollbackReport(
        scope, destination_id(server), dry_run, requests_per_minute=options.requests_per_minute
    )
    rows = ledger.in_store().sort("pattern_id").to_dicts()
    if not rows:
        return report
    progress = Progress(f"rollback of {scope}", len(rows), options.requests_per_minute, say)
    with make_client(server, options, f"{scope} -> {server.url} (rollback)", transport=transport) as client:
        try:
            report.pattern_count_before = client.pattern_count()
            missing = [r["pattern_id"] for r in rows if not r["key"] and not replaced_by_load(r)]
            texts = sent_texts(layout, scope, missing, options.redact) if missing else {}
            matcher = LearnMatcher(client)
            claimed = {r["key"] for r in rows if r["key"]}
            index = matcher.export_index() if missing else None
            progress.start()
            for r in rows:
                report.items.append(_undo(r, client, ledger, matcher, texts, index, claimed, dry_run))
                progress.tick()
            report.pattern_count_after = client.pattern_count()
        except AuthError as exc:
            report.error = (
                f"scope {scope} at {server.url}: the key in ${server.api_key_env} may not delete "
                f"(HTTP {exc.status}: {exc.reason}); rollback needs the 'admin' role, or 'editor' for "
                "patterns that same key created"
            )
        except RestError as exc:
            report.error = f"scope {scope} at {server.url}: {exc}; re-run the rollback to finish"
        finally:
            ledger.flush()
            report.seconds = progress.elapsed()
    return report


def _undo(
    r: dict[str, Any],
    client: EngramiaClient,
    ledger: Ledger,
    matcher: LearnMatcher,
    texts: dict[str, dict[str, Any]],
    index: Any,
    claimed: set[str],
    dry_run: bool,
) -> RollbackItem:
    """Take one ledger row back: delete a key this pipeline created, restore one it replaced."""
    pid, outcome = r["pattern_id"], r["outcome"]
    if found_not_sent(r):
        return RollbackItem(pid, r["key"], outcome, "not created here: left in place", FOUND_REASON)
    if replaced_by_load(r):
        if not r["key"] or not r.get("previous"):
            why = "the pattern this learn replaced is unknown (the key could not export): restore it by hand"
            return RollbackItem(pid, r["key"], outcome, "replaced: left in place", why)
        if dry_run:
            return RollbackItem(pid, r["key"], outcome, "would restore")
        try:
            _restore(client, r["previous"])
        except AuthError as exc:
            why = (
                f"restoring needs the 'admin' role (HTTP {exc.status}); its previous record is in the ledger"
            )
            return RollbackItem(pid, r["key"], outcome, "replaced: left in place", why)
        ledger.record(pid, r["key"], Outcome.RETRACTED, "rollback: the replaced pattern restored")
        ledger.flush()
        return RollbackItem(pid, r["key"], outcome, "restored")
    key = r["key"]
    if not key and pid in texts:
        if index is not None:
            key = matcher.find_in_index(index, texts[pid], claimed)
        elif not dry_run:
            key = matcher.find_by_recall(texts[pid], claimed)
        if key:
            claimed.add(key)
    if not key:
        later = dry_run and index is None and pid in texts
        action = "would delete (key looked up by recall when deleting)" if later else "key unknown"
        return RollbackItem(pid, None, outcome, action)
    if dry_run:
        return RollbackItem(pid, key, outcome, "would delete")
    deleted = client.delete_pattern(key)
    ledger.record(
        pid, key, Outcome.RETRACTED, "rollback" if deleted else "rollback: not on the server any more"
    )
    ledger.flush()
    return RollbackItem(pid, key, outcome, "deleted" if deleted else "absent")


def rollback_embedded(
    layout: DataLayout,
    scope: str,
    tenant_id: str,
    project_id: str,
    store: Path | None = None,
    dry_run: bool = False,
) -> RollbackReport:
    store = Path(store or layout.engramia)
    if not dry_run:
        unsettle(layout, scope)
    ledger = Ledger(layout, scope, embedded_destination_id(store))
    report = RollbackReport(scope, embedded_destination_id(store), dry_run)
    rows = ledger.in_store().sort("pattern_id").to_dicts()
    memory = open_memory(store)
    with engramia_scope(tenant_id, project_id):
        report.pattern_count_before = embedded_pattern_count(memory)
        for r in rows:
            if dry_run:
                report.items.append(RollbackItem(r["pattern_id"], r["key"], r["outcome"], "would delete"))
                continue
            deleted = memory.delete_pattern(r["key"])
            ledger.record(
                r["pattern_id"],
                r["key"],
                Outcome.RETRACTED,
                "rollback" if deleted else "rollback: not in the store",
            )
            report.items.append(
                RollbackItem(r["pattern_id"], r["key"], r["outcome"], "deleted" if deleted else "absent")
            )
        ledger.flush()
        report.pattern_count_after = embedded_pattern_count(memory)
    return report
