"""Dagster resources: the backfill settings and the Engramia destination.

Secrets never sit in configuration: a REST destination names the environment variable that holds its
API key, and the key is read only when a request is made.
"""

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from pipelines.ingest.catalog import scope_names
from pipelines.ingest.dumps import DEFAULT_CHUNK_BYTES
from pipelines.ingest.formats.base import ReaderOptions, set_reader_options
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
from pipelines.objectstore.settings import DEFAULT_KEY_ID_ENV, DEFAULT_SECRET_ENV, S3Settings
from pipelines.objectstore.working_copy import Locations, WorkingCopy
from pipelines.pairing.pairs import Pairing, PairingOptions
from pipelines.progress import open_bar
from pipelines.scopes import ScopeBy, ScopeMapping
from pipelines.scoring.gates import GateOptions
from pipelines.scoring.judge.options import DEFAULT_KEY_ENV, OPENAI_BASE_URL, JudgeOptions
from pipelines.scoring.options import ScoreStrategy, ScoringOptions
from pipelines.tables import DataLayout

# Transform only: every table and every check that needs no store, nothing loaded (a load needs a store to
# compare with, so its checks are skipped, not passed).
NO_DESTINATION = "none"
LOAD_SKIPPED_REASON = (
    "destination none (transform only): nothing was loaded, and the load's checks were skipped; "
    "run again with a destination to load what was scored"
)


class BackfillSettings(dg.ConfigurableResource):
    """Where the data lives and how threads become patterns."""

    data_dir: str = Field(default="data", description="Root of landing/, staged/, engramia/.")
    landing: str | None = Field(
        default=None,
        description="A dump file or a folder of dumps (*.ndjson, *.jsonl, *.json, each also .gz or .zst, "
        "and .zip archives of them); default <data_dir>/landing.",
    )
    input_format: str | None = Field(
        default=None,
        description="Read every dump as this input format (a name of pipelines.ingest.formats.FORMATS, "
        "e.g. guide-ndjson or assistants-api); unset = detected per dump from its first 64 KB.",
    )
    scope_by: str = Field(default="assistant", description="assistant | tenant | single")
    tenant: str = Field(default="default", description="Tenant name for scope_by=assistant|single.")
    project: str = Field(default="default", description="Project name for scope_by=tenant|single.")
    tenant_map: str | None = Field(
        default=None, description="CSV/Parquet thread_id,tenant_id for scope_by=tenant."
    )
    conflicts: str = Field(
        default="first",
        description="first | latest: which copy of a message_id with different content wins; latest "
        "lets a corrected re-export replace the earlier copy (which is quarantined as superseded).",
    )
    assistant_name: str | None = Field(
        default=None,
        description="The assistant of ChatGPT exports (instead of the model), ShareGPT and Chat Completions "
        "files (instead of their defaults).",
    )
    pairing: str = Field(default="merge", description="merge | strict")
    task_max_chars: int = 2_000
    code_max_chars: int = 8_000
    score_strategy: str = Field(default="neutral", description="neutral | feedback")
    feedback: str | None = Field(default=None, description="CSV/Parquet keyed by message_id or thread_id.")
    rating_min: float = 1.0
    rating_max: float = 5.0
    task_context: str = Field(
        default="none", description="none | previous: prefix follow-up tasks with the exchange before them."
    )
    llm_judge: str | None = Field(default=None, description="Model of the LLM judge; unset = no judge.")
    llm_base_url: str = Field(default=OPENAI_BASE_URL, description="OpenAI-compatible endpoint of the judge.")
    llm_api_key_env: str = Field(
        default=DEFAULT_KEY_ENV, description="NAME of the environment variable holding the judge's key."
    )
    llm_concurrency: int = Field(default=8, description="Judge requests in flight.")
    llm_max_patterns: int | None = Field(default=None, description="Judge at most this many patterns a run.")
    llm_max_cost: float | None = Field(default=None, description="Stop judging before this cost (USD).")
    llm_price_per_mtok_in: float = Field(default=0.0, description="USD per million prompt tokens.")
    llm_price_per_mtok_out: float = Field(default=0.0, description="USD per million completion tokens.")
    llm_batch: bool = Field(default=False, description="Judge through the OpenAI Batch API.")
    signals: bool = Field(default=False, description="Implicit signals from the user's next turn.")
    signal_rules: str | None = Field(default=None, description="YAML rules of implicit signals (own file).")
    gate_trivial: bool = Field(default=True, description="Filter greetings, thanks, nudges, tiny tasks.")
    gate_non_answer: bool = Field(default=True, description="Filter refusals and empty answers.")
    min_score: float = Field(default=3.0, description="Filter patterns scored below this (0 = off).")
    min_task_words: int = Field(default=2, description="Trivial gate: fewer words than this.")
    min_task_chars: int = Field(default=6, description="Trivial gate: fewer characters than this.")
    # The core path's chunk size: 128 MiB chunks took twice the memory and ran slower at 1M messages.
    chunk_mib: int = Field(
        default=DEFAULT_CHUNK_BYTES // 2**20, description="MiB of a dump read at once (bounds memory)."
    )
    settle_seconds: float = Field(
        default=10.0,
        description="A dump must be unchanged this long before it is read (files being copied in).",
    )

    # Object storage (README: Object storage): data_dir and landing may be s3://bucket/prefix.
    s3_endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint URL; unset = $AWS_ENDPOINT_URL, else AWS."
    )
    s3_region: str | None = Field(default=None, description="Region; unset = $AWS_REGION or us-east-1.")
    s3_allow_http: bool = Field(default=False, description="Allow a plain-HTTP endpoint off 127.0.0.1.")
    s3_key_id_env: str = Field(default=DEFAULT_KEY_ID_ENV, description="NAME of the key id variable.")
    s3_secret_env: str = Field(default=DEFAULT_SECRET_ENV, description="NAME of the secret variable.")
    work_dir: str | None = Field(
        default=None,
        description="Local working copy of an s3:// data_dir and scratch for s3:// dumps; unset = "
        "<system temp>/assistants-backfill/<bucket>/<prefix>.",
    )
    _copy: WorkingCopy | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Readers take their options from the process (their read() has no room for them).
        set_reader_options(ReaderOptions(assistant_name=self.assistant_name or None))
        # A run (not a sensor tick, which has no run) on object storage works in a local copy.
        if context.dagster_run is not None and self.locations().remote:
            self._copy = WorkingCopy(self.locations()).open()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        # A process that goes on (tests, a code server) must not keep one run's options.
        set_reader_options(ReaderOptions())
        if self._copy is not None:
            self._copy.close()
            self._copy = None

    def s3(self) -> S3Settings:
        return S3Settings(
            endpoint_url=self.s3_endpoint_url,
            region=self.s3_region,
            allow_http=self.s3_allow_http,
            key_id_env=self.s3_key_id_env,
            secret_env=self.s3_secret_env,
        )

    @property
    def settle(self) -> float:
        """Seconds a dump must be unchanged before it is read: none for objects, which S3 shows only
        once their upload completed."""
        return 0.0 if self.locations().landing_url else self.settle_seconds

    def locations(self) -> Locations:
        return Locations(self.data_dir, self.landing, self.work_dir, self.s3())

    @property
    def layout(self) -> DataLayout:
        """The data directory the stages read and write (an s3:// one's local working copy)."""
        return DataLayout.at(self.locations().local_data)

    @property
    def source(self) -> Path:
        return self.locations().local_landing

    def mapping(self) -> ScopeMapping:
        return ScopeMapping(
            scope_by=ScopeBy(self.scope_by),
            tenant=self.tenant,
            project=self.project,
            tenant_map=Path(self.tenant_map) if self.tenant_map else None,
        )

    def pairing_options(self) -> PairingOptions:
        return PairingOptions(
            Pairing(self.pairing), self.task_max_chars, self.code_max_chars, self.task_context
        )

    def judge_options(self) -> JudgeOptions | None:
        if not self.llm_judge:
            return None
        return JudgeOptions(
            model=self.llm_judge,
            base_url=self.llm_base_url,
            api_key_env=self.llm_api_key_env,
            concurrency=self.llm_concurrency,
            max_patterns=self.llm_max_patterns,
            max_cost=self.llm_max_cost,
            price_in=self.llm_price_per_mtok_in,
            price_out=self.llm_price_per_mtok_out,
            batch=self.llm_batch,
        )

    def gate_options(self) -> GateOptions:
        enabled = {"trivial"} if self.gate_trivial else set()
        enabled |= {"non_answer"} if self.gate_non_answer else set()
        enabled |= {"min_score"} if self.min_score > 0 else set()
        return GateOptions(
            enabled=frozenset(enabled),
            min_words=self.min_task_words,
            min_chars=self.min_task_chars,
            min_score=self.min_score,
        )

    def scoring_options(self) -> ScoringOptions:
        return ScoringOptions(
            strategy=ScoreStrategy(self.score_strategy),
            feedback=Path(self.feedback) if self.feedback else None,
            rating_min=self.rating_min,
            rating_max=self.rating_max,
            judge=self.judge_options(),
            signals=self.signals,
            signal_rules=Path(self.signal_rules) if self.signal_rules else None,
            gates=self.gate_options(),
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
