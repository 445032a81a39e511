"""The Engramia destination resource: where a scope's kept patterns are loaded, and how.

Secrets never sit in configuration: a REST destination names the environment variable that holds its
API key, and the key is read only when a request is made.
"""

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from pipelines.ingest.catalog import scope_names
from pipelines.load.embedded import destination_id, load_embedded
from pipelines.load.plan import LoadResult
from pipelines.load.rest.options import MODES as REST_MODES
from pipelines.load.rest.options import RestOptions
from pipelines.load.rest.options import destination_id as rest_destination_id
from pipelines.load.rest.readback import pattern_count_rest
from pipelines.load.rest.scope_load import load_rest
from pipelines.load.rest.servers import ServerConfig, ServerConfigError, ServerMap
from pipelines.load.rest.spot_check import spot_check_rest
from pipelines.load.spot_check import spot_check_embedded
from pipelines.load.store import engramia_scope, open_memory, pattern_count, store_writes
from pipelines.progress import open_bar
from pipelines.tables import DataLayout

# Transform only: every table and every check that needs no store, nothing loaded (a load needs a store to
# compare with, so its checks are skipped, not passed).
NO_DESTINATION = "none"
LOAD_SKIPPED_REASON = (
    "destination none (transform only): nothing was loaded, and the load's checks were skipped; "
    "run again with a destination to load what was scored"
)


class EngramiaDestination(dg.ConfigurableResource):
    """Where patterns are loaded.

    ``embedded``: the engramia package in-process, JSON storage under ``store_dir``.
    ``rest-learn`` / ``rest-import``: a running Engramia server over REST (see pipelines/load/rest/),
    configured per scope by ``url`` + ``api_key_env`` (one server and key for every scope of the run) or
    a ``servers_file`` mapping scopes to servers. ``none``: transform only; nothing is loaded and the
    load's checks are skipped (a later run with a destination loads what was scored). Only the NAME of
    the key's environment variable is configuration; the key is read from the environment when a request
    is made.
    """

    mode: str = Field(
        default="embedded",
        description="embedded | rest-learn | rest-import | none (transform only: nothing is loaded)",
    )
    store_dir: str | None = Field(
        default=None, description="Embedded store folder; default <data_dir>/engramia."
    )
    url: str | None = Field(
        default=None, description="REST: base URL of the server, for every scope of the run."
    )
    api_key_env: str | None = Field(
        default=None,
        description="REST: NAME of the environment variable holding the API key (never the key).",
    )
    servers_file: str | None = Field(
        default=None, description="REST: YAML/JSON file mapping scopes to url + api_key_env (several scopes)."
    )
    redact: bool = Field(
        default=True, description="REST: redact PII/secrets in task and code before sending."
    )
    validate_limits: bool = Field(default=True, description="REST: check the server's input limits first.")
    timeout: float = Field(default=30.0, description="REST: seconds per request.")
    requests_per_minute: float = Field(
        default=60.0, description="REST: client-side limit (the server allows 60/min per path); 0 = none."
    )
    concurrency: int = Field(default=1, description="REST: requests in flight (1 for JSON-backed servers).")
    async_import: bool = Field(default=False, description="rest-import: Prefer: respond-async + job polling.")
    max_body_bytes: int = Field(
        default=1_048_576, description="REST: the server's body limit (import batches)."
    )
    max_batch_records: int = Field(default=2_000, description="rest-import: records per request at most.")
    max_retries: int = Field(default=5, description="REST: retries on connection errors, timeouts, 5xx.")
    backoff_seconds: float = Field(default=0.5, description="REST: first backoff (doubles, with jitter).")
    max_backoff_seconds: float = Field(default=30.0, description="REST: longest backoff.")
    max_retry_after: float = Field(default=120.0, description="REST: longest wait for one 429 Retry-After.")
    rate_limit_budget: float = Field(default=900.0, description="REST: total 429 waiting per request.")
    job_poll_seconds: float = Field(default=1.0, description="rest-import async: first poll interval.")
    job_timeout: float = Field(default=900.0, description="rest-import async: give up on a job after this.")
    quota_pct: float | None = Field(
        default=None,
        description="REST: share of the plan's pattern limit a project may use: the server's "
        "ENGRAMIA_PROJECT_QUOTA_PCT when it is not Engramia's default 0.8 (None: 0.8).",
    )
    resend_rejected: bool = Field(
        default=False, description="REST: send patterns the server rejected / did not store again."
    )
    writers: int = Field(
        default=1,
        ge=1,
        description="Scope runs that may write into one destination at once: the limit its Dagster pool "
        "engramia_writes/<destination> is made with (1 for the embedded store and JSON-backed servers).",
    )

    @property
    def is_rest(self) -> bool:
        return self.mode in REST_MODES

    @property
    def loads(self) -> bool:
        """False for ``none``: the run transforms and checks, and loads nothing."""
        return self.mode != NO_DESTINATION

    def store(self, layout: DataLayout) -> Path:
        return Path(self.store_dir) if self.store_dir else layout.engramia

    def rest_options(self) -> RestOptions:
        return RestOptions(
            mode=self.mode,
            redact=self.redact,
            validate=self.validate_limits,
            timeout=self.timeout,
            requests_per_minute=self.requests_per_minute,
            concurrency=self.concurrency,
            async_import=self.async_import,
            max_body_bytes=self.max_body_bytes,
            max_batch_records=self.max_batch_records,
            max_retries=self.max_retries,
            backoff_base=self.backoff_seconds,
            backoff_max=self.max_backoff_seconds,
            max_retry_after=self.max_retry_after,
            rate_limit_budget=self.rate_limit_budget,
            job_poll=self.job_poll_seconds,
            job_timeout=self.job_timeout,
            quota_pct=self.quota_pct,
            resend_rejected=self.resend_rejected,
        )

    def servers(self) -> ServerMap:
        if self.servers_file:
            return ServerMap.load(self.servers_file)
        if self.url and self.api_key_env:
            return ServerMap.one(self.url, self.api_key_env)
        raise ServerConfigError(
            f"destination {self.mode} needs url + api_key_env (one server for every scope) or servers_file"
        )

    def server_for(
        self, layout: DataLayout, scope: str, tenant_id: str | None = None, project_id: str | None = None
    ) -> ServerConfig:
        if tenant_id is None or project_id is None:
            tenant_id, project_id = scope_names(layout, scope)
        return self.servers().for_scope(scope, tenant_id, project_id)

    def describe(self, layout: DataLayout, scope: str | None = None) -> str:
        if not self.loads:
            return NO_DESTINATION
        if not self.is_rest:
            return destination_id(self.store(layout))
        if scope is None:
            return f"{self.mode}: {self.servers().source}"
        return rest_destination_id(self.server_for(layout, scope))

    def load(
        self,
        layout: DataLayout,
        scope: str,
        tenant_id: str,
        project_id: str,
        progress: Callable[[int], None] | None = None,
        log: Callable[[str], None] | None = None,
        writes: AbstractContextManager[Any] | None = None,
    ) -> LoadResult:
        """``writes``: held around the load's writes (the destination's write slot): for the embedded
        store only while files are written, beside its own lock; for a server, the whole load."""
        if self.mode == "embedded":
            bar = None
            if progress is None and (bar := open_bar(scope, None)) is not None:
                progress = bar.update
            try:
                store = self.store(layout)
                return load_embedded(
                    layout,
                    scope,
                    tenant_id,
                    project_id,
                    store,
                    progress=progress,
                    writes=_both(writes, store_writes(store)),
                )
            finally:
                if bar is not None:
                    bar.close()
        if not self.is_rest:
            raise ValueError(
                f"destination mode {self.mode!r} loads nothing (embedded | rest-learn | rest-import load)"
            )
        try:
            server = self.server_for(layout, scope, tenant_id, project_id)
            options = self.rest_options()
        except (ServerConfigError, ValueError) as exc:
            return LoadResult(
                scope=scope,
                destination=self.mode,
                tenant_id=tenant_id,
                project_id=project_id,
                error=f"scope {scope} ({tenant_id}/{project_id}): {exc}",
            )
        with writes or nullcontext():
            return load_rest(
                layout, scope, tenant_id, project_id, server, options, progress=progress, log=log
            )

    def pattern_count(self, layout: DataLayout, scope: str, tenant_id: str, project_id: str) -> int:
        if self.is_rest:
            server = self.server_for(layout, scope, tenant_id, project_id)
            return pattern_count_rest(server, self.rest_options(), f"{scope} -> {server.url}")
        memory = open_memory(self.store(layout))
        with engramia_scope(tenant_id, project_id):
            return pattern_count(memory)

    def spot_check(
        self, layout: DataLayout, scope: str, tenant_id: str, project_id: str, ledger_run_id: str | None
    ) -> tuple[str, list[dict]]:
        """How the store was read and one ``{"found": bool, ...}`` per pattern checked (see
        checks.loading.RECALL_SPOT_CHECK)."""
        if self.is_rest:
            server = self.server_for(layout, scope, tenant_id, project_id)
            return spot_check_rest(layout, scope, server, self.rest_options(), ledger_run_id)
        store, destination = self.store(layout), self.describe(layout, scope)
        return spot_check_embedded(layout, scope, store, destination, tenant_id, project_id, ledger_run_id)


@contextmanager
def _both(outer: AbstractContextManager[Any] | None, inner: AbstractContextManager[Any]) -> Iterator[None]:
    with outer or nullcontext(), inner:
        yield
