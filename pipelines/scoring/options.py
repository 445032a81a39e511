"""How a scope is scored: the strategy, the feedback export and its rating scale, the LLM judge, the
implicit-signal rules, the curation gates and the near-duplicate threshold. Invalid combinations are
refused when the options are made, before any work.

``ScoringOptions()`` scores as the pipeline always did (neutral or feedback, no judge, no signals, no
gates); the command line and the Dagster settings turn signals and gates on by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from pipelines.scoring.gates import GateOptions
from pipelines.scoring.judge.options import JudgeOptions
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
    judge: JudgeOptions | None = None
    signals: bool = False
    # None: the rules shipped beside pipelines/scoring/signals.py.
    signal_rules: Path | None = None
    gates: GateOptions = field(default_factory=GateOptions)

    def __post_init__(self) -> None:
        if self.strategy is ScoreStrategy.FEEDBACK and self.feedback is None:
            raise ValueError("score strategy 'feedback' needs a feedback file (CSV or Parquet)")
        if self.rating_max <= self.rating_min:
            raise ValueError("rating_max must be greater than rating_min")

    @property
    def sources_active(self) -> bool:
        """Whether scoring needs the patterns' texts beyond the task (judge, signals or gates)."""
        return self.judge is not None or self.signals or bool(self.gates.enabled)

    def describe_sources(self, rules_fingerprint: str | None) -> dict[str, Any]:
        """What the score sources beyond feedback depend on (recorded with the scored table)."""
        return {
            "judge": None if self.judge is None else self.judge.describe(),
            "signals": rules_fingerprint if self.signals else None,
            "gates": self.gates.describe() if self.gates.enabled else None,
        }
