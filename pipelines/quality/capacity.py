"""Whether a destination can take what a run would send to one scope: the embedded store's per-scope cap,
or for REST the server's count, its quota, the per-scope cap, and the requests and time the client's rate
limit implies. A REST server only receives reads (``/v1/version``, ``/v1/metrics``, ``/v1/billing/status``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pipelines.load.limits import SCOPE_PATTERN_CAP, SERVER_QUOTA_PCT
from pipelines.load.plan import LoadPlan, texts_to_send
from pipelines.load.records import KEY_PREFIX, import_record
from pipelines.load.rest.batching import encode, pack_by_bytes
from pipelines.load.rest.client import Backoff, EngramiaClient
from pipelines.load.rest.errors import RestError
from pipelines.load.rest.options import RestMode, RestOptions
from pipelines.load.rest.options import destination_id as rest_destination_id
from pipelines.load.rest.servers import ServerConfigError, ServerMap
from pipelines.quality.pending import PendingDump
from pipelines.tables import DataLayout

# The default plan of an Engramia server without billing: 10,000 patterns, of which a project may use
# ``quota_pct`` (ENGRAMIA_PROJECT_QUOTA_PCT, default 0.8).
DEFAULT_PLAN_PATTERNS = 10_000
# An import record's JSON beyond the task and code texts (key, provenance, ids, score), measured on the
# sample: used only to estimate the request count of patterns not paired yet.
RECORD_OVERHEAD_BYTES = 700


@dataclass
class Capacity:
    """Whether the destination can take what a run would send to one scope."""

    destination: str
    pattern_count: int | None  # now, as the store or the server counts it
    projected: int | None  # after the run: pattern_count - retracted + sent
    scope_cap: int = SCOPE_PATTERN_CAP
    quota: int | None = None  # REST: patterns the project may hold
    quota_source: str | None = None
    server_version: str | None = None
    requests: int | None = None  # REST: requests to send the patterns (learn: one each; import: batches)
    requests_per_minute: float | None = None
    minutes: float | None = None  # at the client's rate limit; None when it sets none
    fits: bool | None = None
    error: str | None = None


@dataclass
class EmbeddedTarget:
    store: Path


@dataclass
class RestTarget:
    servers: ServerMap
    options: RestOptions


def store_keys(store: Path, tenant_id: str, project_id: str) -> set[str]:
    """Pattern keys the embedded store holds for a scope, read from its folder without creating it
    (Engramia's JSONStorage keeps the default scope at the root, others under ``<tenant>/<project>/``)."""

    def segment(s: str) -> str:
        # engramia.providers.json_storage._sanitize_segment
        return "".join(c if c.isalnum() or c in "-_" else "_" for c in s) or "default"

    root = Path(store)
    if (tenant_id, project_id) != ("default", "default"):
        root = root / segment(tenant_id) / segment(project_id)
    folder = root / KEY_PREFIX.rstrip("/")
    try:
        with os.scandir(folder) as it:
            names = [e.name for e in it]
    except OSError:
        return set()
    return {KEY_PREFIX + n[:-5] for n in names if n.endswith(".json") and not n.startswith("_")}


def _import_requests(sizes: list[int], estimated: int, avg_bytes: float, options: RestOptions) -> int:
    batches, oversize = pack_by_bytes(sizes, options.body_budget, options.max_batch_records)
    requests = len(batches) + len(oversize)  # an oversize record is tried once, then rejected
    if estimated:
        per_request = max(1, min(options.max_batch_records, int(options.body_budget // max(avg_bytes, 1))))
        requests += math.ceil(estimated / per_request)
    return requests


def rest_capacity(
    target: RestTarget,
    scope: str,
    tenant_id: str,
    project_id: str,
    sizes: list[int],
    estimated: int,
    avg_bytes: float,
    to_retract: int,
) -> Capacity:
    options = target.options
    try:
        server = target.servers.for_scope(scope, tenant_id, project_id)
    except ServerConfigError as exc:
        return Capacity(destination="rest", pattern_count=None, projected=None, error=str(exc))
    cap = Capacity(destination=rest_destination_id(server), pattern_count=None, projected=None)
    n_send = len(sizes) + estimated
    cap.requests_per_minute = options.requests_per_minute or None
    cap.requests = (
        n_send if options.mode is RestMode.LEARN else _import_requests(sizes, estimated, avg_bytes, options)
    )
    if cap.requests_per_minute:
        cap.minutes = cap.requests / cap.requests_per_minute
    # Three reads: no client pacing (the load's own pacing is for the writes), one retry at most.
    client = EngramiaClient(
        server.url,
        server.api_key_env,
        label=f"{scope} -> {server.url}",
        timeout=options.timeout,
        requests_per_minute=None,
        backoff=Backoff(max_retries=1),
        max_retry_after=5.0,
        rate_limit_budget=5.0,
    )
    try:
        info = client.version()
        cap.server_version = f"engramia {info.get('app_version') or '?'}"
        cap.pattern_count = client.pattern_count()
        billing = client.billing_status()
    except (RestError, KeyError, TypeError, ValueError) as exc:
        cap.error = f"{type(exc).__name__}: {exc}"
        return cap
    finally:
        client.close()
    pct = options.quota_pct if options.quota_pct is not None else SERVER_QUOTA_PCT
    if billing and billing.get("patterns_limit") is not None:
        limit = int(billing["patterns_limit"])
        cap.quota_source = f"billing status: patterns_limit {limit:,} x quota_pct {pct:g}"
    else:
        limit = DEFAULT_PLAN_PATTERNS
        cap.quota_source = f"the default plan (no billing status): {limit:,} x quota_pct {pct:g}"
    cap.quota = int(limit * pct)
    cap.projected = cap.pattern_count - to_retract + n_send
    # The server refuses an import when current + batch >= quota, a learn when current >= quota.
    within_quota = (
        cap.projected < cap.quota if options.mode is RestMode.IMPORT else cap.projected <= cap.quota
    )
    cap.fits = n_send == 0 or (within_quota and cap.projected <= SCOPE_PATTERN_CAP)
    return cap


def record_sizes(
    layout: DataLayout, scope: str, tenant_id: str, project_id: str, load: LoadPlan
) -> list[int]:
    """Encoded import record sizes of the patterns the load would send (before redaction)."""
    frame = texts_to_send(layout, scope, load)
    if frame is None:
        return []
    return [len(encode(import_record(row, tenant_id, project_id))) for row in frame.iter_rows(named=True)]


def estimated_record_bytes(pending: Iterable[PendingDump], scope: str) -> float:
    """A record of a pattern not paired yet: about two lines of its dumps (question and answer)."""
    sizes = [(d.size / d.lines, n) for d in pending if d.lines and (n := d.lines_per_scope.get(scope))]
    if not sizes:
        return 2 * RECORD_OVERHEAD_BYTES
    per_line = sum(s * n for s, n in sizes) / sum(n for _, n in sizes)
    return 2 * per_line + RECORD_OVERHEAD_BYTES
