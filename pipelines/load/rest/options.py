"""How a REST load is configured: the mode, its limits and pacing, and the client built from them.

Invariants: a mode is a :class:`RestMode` (its value, ``rest-learn`` or ``rest-import``, is what the CLI,
the Dagster config and the load results carry); both modes share one ledger per scope and server
(:func:`destination_id`), so a pattern learned once is never imported again, or the other way round.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import httpx

from pipelines.load.rest.client import Backoff, EngramiaClient
from pipelines.load.rest.servers import ServerConfig


class RestMode(StrEnum):
    LEARN = "rest-learn"  # POST /v1/learn, one pattern per request
    IMPORT = "rest-import"  # POST /v1/import, deterministic keys, batched by bytes

    @property
    def role(self) -> str:
        """The least Engramia role whose key may write in this mode."""
        return "editor" if self is RestMode.LEARN else "admin"


MODES: tuple[str, ...] = tuple(m.value for m in RestMode)


@dataclass
class RestOptions:
    mode: RestMode = RestMode.IMPORT
    redact: bool = True
    validate: bool = True
    timeout: float = 30.0
    requests_per_minute: float = 60.0
    concurrency: int = 1
    async_import: bool = False
    max_body_bytes: int = 1_048_576
    max_batch_records: int = 2_000
    max_retries: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_retry_after: float = 120.0
    rate_limit_budget: float = 900.0
    job_poll: float = 1.0
    job_timeout: float = 900.0
    # the server's ENGRAMIA_PROJECT_QUOTA_PCT when it is not Engramia's default (None: the default)
    quota_pct: float | None = None
    resend_rejected: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown REST mode {self.mode!r}; expected one of {MODES}")
        self.mode = RestMode(self.mode)
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.quota_pct is not None and not 0 < self.quota_pct <= 1:
            raise ValueError(f"quota_pct must be in (0, 1], not {self.quota_pct}")
        if self.max_body_bytes < 4_096:
            raise ValueError("max_body_bytes must be at least 4096")

    @property
    def body_budget(self) -> int:
        """Bytes a request body may use: the server's limit minus headroom (5%, at least 1 KiB)."""
        return self.max_body_bytes - max(1_024, self.max_body_bytes // 20)


def destination_id(server: ServerConfig) -> str:
    return f"rest:{server.url}"


def make_client(
    server: ServerConfig,
    options: RestOptions,
    label: str,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] | None = None,
) -> EngramiaClient:
    return EngramiaClient(
        server.url,
        server.api_key_env,
        label=label,
        timeout=options.timeout,
        requests_per_minute=options.requests_per_minute,
        backoff=Backoff(base=options.backoff_base, cap=options.backoff_max, max_retries=options.max_retries),
        max_retry_after=options.max_retry_after,
        rate_limit_budget=options.rate_limit_budget,
        transport=transport,
        sleep=sleep,
    )
