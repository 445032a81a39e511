"""How a scope is scored: the strategy, the feedback export and its rating scale, the near-duplicate
threshold. Invalid combinations are refused when the options are made, before any work."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pipelines.scoring.near_duplicates import JACCARD_THRESHOLD


class ScoreStrategy(StrEnum):
    NEUTRAL = "neutral"
    FEEDBACK = "feedback"


@dataclass(frozen=True)
class ScoringOptions:
    strategy: ScoreStrategy = ScoreStrategy.NEUTRAL
    feedback: Path | None = None
    rating_min: float = 1.0
    rating_max: float = 5.0
    threshold: float = JACCARD_THRESHOLD

    def __post_init__(self) -> None:
        if self.strategy is ScoreStrategy.FEEDBACK and self.feedback is None:
            raise ValueError("score strategy 'feedback' needs a feedback file (CSV or Parquet)")
        if self.rating_max <= self.rating_min:
            raise ValueError("rating_max must be greater than rating_min")
