"""Spot checks of a REST load that leave the server as they found it.

Invariants: only patterns this load stored are checked (``not_stored``, rejected, skipped and already
loaded patterns are outcomes of the load, not failures of the store). They are read back by key through
``GET /v1/export`` whenever the key may export, and compared with what the ledger says was sent
(:func:`pipelines.load.verify.read_back`). Recall is used only where the key cannot export, because a
recall on the server raises the reuse count and score of every pattern it fetches (0.7.x fetches about
four times the limit; measured: one load's three recalls at limit 5 changed some 60 patterns): then
exactly one pattern this load stored is recalled, with limit 1.
"""

from __future__ import annotations

from typing import Any

import httpx

from pipelines.load.ledger import Ledger
from pipelines.load.rest.options import RestOptions, destination_id, make_client
from pipelines.load.rest.readback import DUPLICATE_SIMILARITY, code_matches, sent_texts
from pipelines.load.rest.servers import ServerConfig
from pipelines.load.verify import read_back, spread, stored_by_load
from pipelines.tables import DataLayout

# Patterns read back through one export (cheap: the export is one request whatever the sample).
READ_BACK_SAMPLE = 20
# Recalls when the key cannot export: each one changes the scores of the patterns it fetches.
RECALL_SAMPLE = 1
RECALL_LIMIT = 1


def spot_check_rest(
    layout: DataLayout,
    scope: str,
    server: ServerConfig,
    options: RestOptions,
    ledger_run_id: str | None,
    transport: httpx.BaseTransport | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """How the check read the server (``export``, ``recall`` or ``nothing stored``) and one
    ``{"pattern_id", "key", "found": bool, ...}`` per checked pattern."""
    stored = stored_by_load(Ledger(layout, scope, destination_id(server)), ledger_run_id)
    if stored.is_empty():
        return "nothing stored", []
    with make_client(server, options, f"{scope} -> {server.url}", transport=transport) as client:
        rows = spread(stored, READ_BACK_SAMPLE).to_dicts()
        held = read_back(client, layout, scope, options, rows)
        if held is not None:
            return "export", [{**h, "found": h["held"] is True} for h in held]
        return "recall", [_recall_one(client, layout, scope, options, r) for r in rows[:RECALL_SAMPLE]]


def _recall_one(client: Any, layout: DataLayout, scope: str, options: RestOptions, row: dict) -> dict:
    """Recall the task as it was sent; found when its own pattern (by key, else by task and code) comes
    back as a duplicate-tier match."""
    text = sent_texts(layout, scope, [row["pattern_id"]], options.redact).get(row["pattern_id"])
    if text is None:
        return {**row, "found": False, "note": "pattern no longer staged"}
    hit = None
    for m in client.recall(text["task"], limit=RECALL_LIMIT).get("matches") or []:
        pattern = m.get("pattern") or {}
        if row["key"]:
            right = m.get("pattern_key") == row["key"]
        else:
            right = pattern.get("task") == text["task"] and code_matches(pattern.get("code"), text["code"])
        if right:
            hit = m
            break
    similarity = None if hit is None else float(hit.get("similarity") or 0)
    found = hit is not None and (
        hit.get("reuse_tier") == "duplicate" or (similarity or 0) >= DUPLICATE_SIMILARITY
    )
    return {**row, "found": found, "similarity": similarity}
