"""The backfill settings resource: where the data lives and how threads become patterns (the Engramia
destination is :mod:`assets.destination`)."""

from pathlib import Path

import dagster as dg
from pydantic import Field, PrivateAttr

from pipelines.ingest.dumps import DEFAULT_CHUNK_BYTES
from pipelines.ingest.formats.base import ReaderOptions, set_reader_options
from pipelines.objectstore.settings import DEFAULT_KEY_ID_ENV, DEFAULT_SECRET_ENV, S3Settings
from pipelines.objectstore.working_copy import Locations, WorkingCopy
from pipelines.pairing.pairs import Pairing, PairingOptions
from pipelines.scopes import ScopeBy, ScopeMapping
from pipelines.scoring.gates import GateOptions
from pipelines.scoring.judge.options import DEFAULT_KEY_ENV, OPENAI_BASE_URL, JudgeOptions
from pipelines.scoring.options import ScoreStrategy, ScoringOptions
from pipelines.tables import DEFAULT_DATA_DIR, DataLayout


class BackfillSettings(dg.ConfigurableResource):
    """Where the data lives and how threads become patterns."""

    data_dir: str = Field(default=str(DEFAULT_DATA_DIR), description="Root of landing/, staged/, engramia/.")
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
