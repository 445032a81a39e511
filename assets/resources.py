"""Dagster resources: the backfill settings and the Engramia destination.

Secrets never sit in configuration: a REST destination names the environment variable that holds its
API key, and the key is read only when a request is made.
"""

import os
from collections.abc import Callable
from pathlib import Path

import dagster as dg
from pydantic import Field

from pipelines.embedded import destination_id, load_embedded, open_memory, pattern_count, recall_check
from pipelines.layout import DataLayout
from pipelines.load_plan import LoadResult
from pipelines.pairing import Pairing, PairingOptions
from pipelines.scopes import ScopeBy, ScopeMapping
from pipelines.scoring import ScoreStrategy, ScoringOptions

DEFAULT_DATA_DIR = os.environ.get("BACKFILL_DATA_DIR", "data")


class BackfillSettings(dg.ConfigurableResource):
    """Where the data lives and how threads become patterns."""

    data_dir: str = Field(default=DEFAULT_DATA_DIR, description="Root of landing/, staged/, engramia/.")
    landing: str | None = Field(
        default=None,
        description="A dump file or a folder of dumps (*.ndjson, *.jsonl); default <data_dir>/landing.",
    )
    scope_by: str = Field(default="assistant", description="assistant | tenant | single")
    tenant: str = Field(default="default", description="Tenant name for scope_by=assistant|single.")
    project: str = Field(default="default", description="Project name for scope_by=tenant|single.")
    tenant_map: str | None = Field(
        default=None, description="CSV/Parquet thread_id,tenant_id for scope_by=tenant."
    )
    pairing: str = Field(default="merge", description="merge | strict")
    task_max_chars: int = 2_000
    code_max_chars: int = 8_000
    score_strategy: str = Field(default="neutral", description="neutral | feedback")
    feedback: str | None = Field(default=None, description="CSV/Parquet keyed by message_id or thread_id.")
    rating_min: float = 1.0
    rating_max: float = 5.0
    chunk_mib: int = Field(default=128, description="Bytes of a dump read at once (bounds memory).")

    @property
    def layout(self) -> DataLayout:
        return DataLayout.at(self.data_dir)

    @property
    def source(self) -> Path:
        return Path(self.landing) if self.landing else self.layout.landing

    def mapping(self) -> ScopeMapping:
        return ScopeMapping(
            scope_by=ScopeBy(self.scope_by),
            tenant=self.tenant,
            project=self.project,
            tenant_map=Path(self.tenant_map) if self.tenant_map else None,
        )

    def pairing_options(self) -> PairingOptions:
        return PairingOptions(Pairing(self.pairing), self.task_max_chars, self.code_max_chars)

    def scoring_options(self) -> ScoringOptions:
        return ScoringOptions(
            strategy=ScoreStrategy(self.score_strategy),
            feedback=Path(self.feedback) if self.feedback else None,
            rating_min=self.rating_min,
            rating_max=self.rating_max,
        )


class EngramiaDestination(dg.ConfigurableResource):
    """Where patterns are loaded: ``embedded`` (the engramia package in-process, JSON storage)."""

    mode: str = Field(default="embedded", description="embedded")
    store_dir: str | None = Field(
        default=None, description="Embedded store folder; default <data_dir>/engramia."
    )

    def store(self, layout: DataLayout) -> Path:
        return Path(self.store_dir) if self.store_dir else layout.engramia

    def describe(self, layout: DataLayout) -> str:
        return destination_id(self.store(layout))

    def load(
        self,
        layout: DataLayout,
        scope: str,
        tenant_id: str,
        project_id: str,
        progress: Callable[[int], None] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> LoadResult:
        if self.mode != "embedded":
            raise ValueError(f"unknown destination mode {self.mode!r}")
        return load_embedded(layout, scope, tenant_id, project_id, self.store(layout), progress=progress)

    def pattern_count(self, layout: DataLayout, scope: str, tenant_id: str, project_id: str) -> int:
        from pipelines.embedded import engramia_scope

        memory = open_memory(self.store(layout))
        with engramia_scope(tenant_id, project_id):
            return pattern_count(memory)

    def recall_check(self, layout: DataLayout, tenant_id: str, project_id: str, tasks, keys) -> list[dict]:
        return recall_check(self.store(layout), tenant_id, project_id, tasks, keys)
