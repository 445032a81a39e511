"""How the LLM judge is reached and bounded: model, endpoint, the NAME of the key's environment
variable, concurrency, retries, and the cost limits. The key itself is never part of the options."""

from __future__ import annotations

import os
from dataclasses import dataclass

OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"


class JudgeConfigError(ValueError):
    """The judge cannot be used as configured: one line per problem, each naming what to fix."""

    def __init__(self, *problems: str) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class JudgeOptions:
    model: str
    base_url: str = OPENAI_BASE_URL
    api_key_env: str = DEFAULT_KEY_ENV
    concurrency: int = 8
    timeout: float = 60.0
    max_retries: int = 5
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0
    max_retry_after: float = 120.0
    # Stop judging (the rest fall back to the next source) before either limit would be passed.
    max_patterns: int | None = None
    max_cost: float | None = None
    # USD per million tokens, for the plan's estimate and the cost limit (0: cost unknown).
    price_in: float = 0.0
    price_out: float = 0.0
    batch: bool = False
    batch_poll_seconds: float = 10.0
    batch_timeout: float = 24 * 3600.0

    def __post_init__(self) -> None:
        problems = []
        if not self.model.strip():
            problems.append("--llm-judge: give a model name")
        if self.concurrency < 1:
            problems.append(f"--llm-concurrency {self.concurrency}: must be at least 1")
        if self.max_patterns is not None and self.max_patterns < 0:
            problems.append(f"--llm-max-patterns {self.max_patterns}: must be 0 or more")
        if self.max_cost is not None and self.max_cost < 0:
            problems.append(f"--llm-max-cost {self.max_cost}: must be 0 or more")
        if self.price_in < 0 or self.price_out < 0:
            problems.append("--llm-price-per-mtok-in/out: prices cannot be negative")
        if problems:
            raise JudgeConfigError(*problems)

    def api_key(self) -> str:
        """The key, read only when a request is about to be made."""
        key = os.environ.get(self.api_key_env, "")
        if not key:
            raise JudgeConfigError(
                f"--llm-api-key-env {self.api_key_env}: the environment variable is not set (export the key "
                "there; it is never taken from the command line)"
            )
        return key

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.price_in + tokens_out * self.price_out) / 1_000_000

    def describe(self) -> dict[str, str]:
        """What a judged score depends on (recorded with the scored table; the key is not part of it)."""
        from pipelines.scoring.judge.prompt import PROMPT_VERSION

        return {"model": self.model, "prompt_version": PROMPT_VERSION}
