"""The LLM judge: a versioned rubric (``rubric_v1.txt``) asked through the official ``openai`` client
of any OpenAI-compatible endpoint, answers cached per (pattern, model, prompt version), with retries,
concurrency, cost limits and the Batch API for bulk.

Invariant: a malformed, missing or refused answer is recorded as an error and gives no score, so the
pattern falls back to the next source; nothing here raises for one pattern's failure. Nothing here
imports dagster or the load stage, and the API key only ever lives in the environment.
"""

from pipelines.scoring.judge.options import JudgeConfigError, JudgeOptions

__all__ = ["JudgeConfigError", "JudgeOptions"]
