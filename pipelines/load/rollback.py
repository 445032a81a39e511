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

``--dry-run`` lists what would be deleted (resolving learned keys only through the read-only export;
recall changes scores on the server, so a dry run never calls it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from pipelines.load.embedded import destination_id as embedded_destination_id
from pipelines.load.ledger import Ledger, Outcome
from pipelines.load.rest.errors import AuthError, RestError
from pipelines.load.rest.options import RestOptions, destination_id, make_client
from pipelines.load.rest.readback import LearnMatcher, sent_texts
from pipelines.load.rest.servers import ServerConfig
from pipelines.load.store import engramia_scope, open_memory
from pipelines.load.store import pattern_count as embedded_pattern_count
from pipelines.settled import unsettle
from pipelines.tables import DataLayout

RollbackAction = Literal[
    "would delete",
    "would delete (key looked up by recall when deleting)",
    "deleted",
    "absent",
    "key unknown",
]


@dataclass
class RollbackItem:
    pattern_id: str
    key: str | None
    outcome: str
    action: RollbackAction


@dataclass
class RollbackReport:
    scope: str
    destination: str
    dry_run: bool
    items: list[RollbackItem] = field(default_factory=list)
    pattern_count_before: int | None = None
    pattern_count_after: int | None = None
    error: str | None = None

    def count(self, action: RollbackAction) -> int:
        return sum(1 for i in self.items if i.action == action)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["deleted"] = self.count("deleted")
        out["absent"] = self.count("absent")
        out["would_delete"] = self.count("would delete")
        out["key_unknown"] = self.count("key unknown")
        return out


def rollback_rest(
    layout: DataLayout,
    scope: str,
    server: ServerConfig,
    options: RestOptions | None = None,
    dry_run: bool = False,
    transport: httpx.BaseTransport | None = None,
) -> RollbackReport:
    options = options or RestOptions()
    if not dry_run:
        unsettle(layout, scope)
    ledger = Ledger(layout, scope, destination_id(server))
    report = RollbackReport(scope, destination_id(server), dry_run)
    rows = ledger.in_store().sort("pattern_id").to_dicts()
    if not rows:
        return report
    with make_client(server, options, f"{scope} -> {server.url} (rollback)", transport=transport) as client:
        try:
            report.pattern_count_before = client.pattern_count()
            missing = [r["pattern_id"] for r in rows if not r["key"]]
            texts = sent_texts(layout, scope, missing, options.redact) if missing else {}
            matcher = LearnMatcher(client)
            claimed = {r["key"] for r in rows if r["key"]}
            index = matcher.export_index() if missing else None
            for r in rows:
                key = r["key"]
                if not key and r["pattern_id"] in texts:
                    text = texts[r["pattern_id"]]
                    if index is not None:
                        key = matcher.find_in_index(index, text, claimed)
                    elif not dry_run:
                        key = matcher.find_by_recall(text, claimed)
                    if key:
                        claimed.add(key)
                if not key:
                    later = dry_run and index is None and r["pattern_id"] in texts
                    action = (
                        "would delete (key looked up by recall when deleting)" if later else "key unknown"
                    )
                    report.items.append(RollbackItem(r["pattern_id"], None, r["outcome"], action))
                    continue
                if dry_run:
                    report.items.append(RollbackItem(r["pattern_id"], key, r["outcome"], "would delete"))
                    continue
                deleted = client.delete_pattern(key)
                reason = "rollback" if deleted else "rollback: not on the server any more"
                ledger.record(r["pattern_id"], key, Outcome.RETRACTED, reason)
                ledger.flush()
                report.items.append(
                    RollbackItem(r["pattern_id"], key, r["outcome"], "deleted" if deleted else "absent")
                )
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
    return report


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
