"""Check that a load accounts for every kept pattern: ``kept = loaded + already_loaded + present +
not_stored + rejected + failed + skipped`` (``replaced`` is part of ``loaded``), against the kept set read
again from the scored table and the patterns the ledger says the store holds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from pipelines.load.plan import LOAD_TERMS

LOAD_ACCOUNTS_FOR_KEPT = dg.AssetCheckSpec(
    "load_accounts_for_every_kept_pattern",
    asset="engramia_scopes",
    description="Every kept pattern ends in exactly one load term (kept = loaded + already_loaded + present "
    "+ not_stored + rejected + failed + skipped; replaced is part of loaded), the kept set is the one the "
    "scored table holds now, and the ledger holds in the store exactly loaded + already_loaded + present "
    "of them.",
)


def load_accounts_for_kept(
    load: Mapping[str, Any] | None, kept_now: int, kept_in_store: int
) -> dg.AssetCheckResult:
    """``load``: the load's figures (its terms, ``kept`` and ``replaced``); ``kept_now``: kept patterns
    counted again from the scored table; ``kept_in_store``: of those, how many the ledger says the store
    holds after the load."""
    if load is None:
        return dg.AssetCheckResult(
            check_name=LOAD_ACCOUNTS_FOR_KEPT.name,
            passed=False,
            metadata={"error": "no load recorded for this scope"},
        )
    terms = {t: int(load.get(t) or 0) for t in LOAD_TERMS}
    in_store_terms = terms["loaded"] + terms["already_loaded"] + terms["present"]
    unaccounted = int(load["kept"]) - sum(terms.values())
    return dg.AssetCheckResult(
        check_name=LOAD_ACCOUNTS_FOR_KEPT.name,
        passed=unaccounted == 0 and int(load["kept"]) == kept_now and in_store_terms == kept_in_store,
        metadata={
            "kept": int(load["kept"]),
            "kept_now": kept_now,
            **terms,
            "replaced": int(load.get("replaced") or 0),
            "unaccounted": unaccounted,
            "in_store_per_terms": in_store_terms,
            "in_store_per_ledger": kept_in_store,
        },
    )
