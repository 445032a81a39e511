"""Reading back patterns a load updated: does the store hold the content the ledger says it sent?

Invariant: nothing here writes. The embedded store is read through the read-only storage of
:mod:`pipelines.load.spot_check`; a server through ``GET /v1/export`` (admin), never through recall,
which raises the scores it returns. Where the key may not export, a pattern is reported unverified
(``held`` None), not failed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.load.content import stored_fingerprint
from pipelines.load.ledger import Ledger, Outcome
from pipelines.load.rest.client import EngramiaClient
from pipelines.load.rest.errors import AuthError
from pipelines.load.rest.options import RestMode, RestOptions, destination_id, make_client
from pipelines.load.rest.readback import code_matches, sent_texts
from pipelines.load.rest.servers import ServerConfig
from pipelines.load.store import engramia_scope, read_only_memory
from pipelines.tables import DataLayout

# Updated patterns read back per load (the load names up to pipelines.load.plan.UPDATE_SAMPLE).
VERIFY_SAMPLE = 5


def stored_by_load(ledger: Ledger, ledger_run_id: str | None) -> pl.DataFrame:
    """The ledger's latest rows (pattern_id, key, fingerprint) of patterns ``ledger_run_id`` stored."""
    if not ledger_run_id:
        return pl.DataFrame(schema={"pattern_id": pl.String, "key": pl.String, "fingerprint": pl.String})
    return (
        ledger.state()
        .filter((pl.col("run_id") == ledger_run_id) & (pl.col("outcome") == Outcome.STORED))
        .sort("pattern_id")
        .select("pattern_id", "key", "fingerprint")
    )


def spread(frame: pl.DataFrame, n: int) -> pl.DataFrame:
    """``n`` rows spread over the frame (first, last and between), not just its head."""
    if frame.height <= n:
        return frame
    step = frame.height / n
    return frame[[int(i * step) for i in range(n)]]


def _latest(ledger: Ledger, sample: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ledger's latest row (key, fingerprint) of each sampled pattern."""
    ids = [s["pattern_id"] for s in sample[:VERIFY_SAMPLE]]
    state = ledger.state().filter(pl.col("pattern_id").is_in(ids))
    return state.select("pattern_id", "key", "fingerprint").to_dicts()


def verdict(
    row: dict[str, Any], data: dict[str, Any] | None, sent_code: Callable[[dict], str | None]
) -> dict[str, Any]:
    if data is None:
        return {**row, "held": False, "note": "key not in the store"}
    held = stored_fingerprint(data) == row["fingerprint"]
    code = sent_code(data)
    if not held and code is not None:
        # the stored code is the sent one after the server's redaction: compare with the sent code
        design = {**(data.get("design") or {}), "code": code}
        held = stored_fingerprint({**data, "design": design}) == row["fingerprint"]
    return {**row, "held": held, "score": data.get("success_score")}


def verify_updates_embedded(
    layout: DataLayout,
    scope: str,
    store: Path,
    destination: str,
    tenant_id: str,
    project_id: str,
    sample: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Each sampled updated pattern's file holds the fingerprint its ledger row names."""
    rows = _latest(Ledger(layout, scope, destination), sample)
    memory = read_only_memory(store)
    with engramia_scope(tenant_id, project_id):
        return [
            verdict(r, memory.storage.load(r["key"]) if r["key"] else None, lambda _d: None) for r in rows
        ]


def read_back(
    client: EngramiaClient,
    layout: DataLayout,
    scope: str,
    options: RestOptions,
    rows: list[dict[str, Any]],
) -> list[dict[str, Any]] | None:
    """Each of ``rows`` (pattern_id, key, fingerprint: ledger rows) read back by key through
    ``/v1/export`` and compared with the content the row names; None when the key cannot export.
    Over learn, the server's own redaction of the code is allowed for."""
    try:
        records = {r["key"]: r.get("data") for r in client.export()}
    except AuthError:
        return None
    texts = (
        sent_texts(layout, scope, [r["pattern_id"] for r in rows], options.redact)
        if options.mode is RestMode.LEARN
        else {}
    )

    def sent_code(pid: str) -> Callable[[dict], str | None]:
        # learn stores the code after the server's own redaction (task and score as sent)
        def code(data: dict) -> str | None:
            sent = texts.get(pid)
            stored = (data.get("design") or {}).get("code")
            return sent["code"] if sent is not None and code_matches(stored, sent["code"]) else None

        return code

    return [verdict(r, records.get(r["key"]) if r["key"] else None, sent_code(r["pattern_id"])) for r in rows]


def verify_updates_rest(
    layout: DataLayout,
    scope: str,
    server: ServerConfig,
    options: RestOptions,
    sample: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Each sampled updated pattern is on the server (``/v1/export``) with the content its ledger row
    names."""
    rows = _latest(Ledger(layout, scope, destination_id(server)), sample)
    if not rows:
        return []
    with make_client(server, options, f"{scope} -> {server.url}") as client:
        held = read_back(client, layout, scope, options, rows)
    if held is None:
        return [{**r, "held": None, "note": "the key cannot read /v1/export"} for r in rows]
    return held
