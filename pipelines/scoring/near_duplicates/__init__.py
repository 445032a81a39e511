"""Exact near-duplicate removal of pattern tasks (word Jaccard) within one scope.

Contract (see :func:`near_duplicates`): results are identical to the brute-force greedy reference
:func:`near_duplicates_reference` on every input, including the floating-point boundary of the threshold,
whether computed in one go (:mod:`.exact`) or brought up to date from a per-scope cache (:mod:`.cache`).

Modules, in the order the work happens:

- :mod:`.frames`: the input columns and the output schema, shared by everything below.
- :mod:`.tokens`: the one tokeniser, equal to Python's ``str.lower().split()``.
- :mod:`.sets`: token sets ranked rarest first in CSR layout, exact intersections, identical sets
  collapsed onto their highest-priority member.
- :mod:`.pairs`: candidate pairs by prefix filtering, narrowed by size, position and token-bitmap bounds
  that all use the largest double *below* the threshold, so they are conservative.
- :mod:`.keep`: the greedy keep rule over blocks in priority order, verified exactly.
- :mod:`.exact`: the public entry points of the one-go engine.
- :mod:`.stored`, :mod:`.graph`, :mod:`.incremental`, :mod:`.cache`: the incremental engine, which
  decides again only the groups of near-duplicates that changed since the last run.
- :mod:`.arrays`: the array helpers both engines share (chunking, CSR, distinct values, bitmaps).
- :mod:`.reference`: the brute-force reference (tests and benchmarks only).

The cache is imported from :mod:`.cache` itself, so that the one-go engine's users load no table I/O.

Measured numbers and the effect of each optimisation are recorded in ``benchmarks/bench_dedup.py``.
"""

from pipelines.scoring.near_duplicates.exact import (
    TokenSets,
    near_duplicates,
    near_duplicates_of_sets,
    near_duplicates_with_tokens,
)
from pipelines.scoring.near_duplicates.frames import JACCARD_THRESHOLD
from pipelines.scoring.near_duplicates.reference import near_duplicates_reference

__all__ = [
    "JACCARD_THRESHOLD",
    "TokenSets",
    "near_duplicates",
    "near_duplicates_of_sets",
    "near_duplicates_reference",
    "near_duplicates_with_tokens",
]
