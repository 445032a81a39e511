"""Where the benchmarks read and write: the repository they measure, their work folder and the report."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "work"
# Folders of earlier runs wait here until the last row is done (see ``inputs.fresh``).
TRASH = WORK / "trash"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
QUICK_RESULTS = WORK / "RESULTS-quick.md"
