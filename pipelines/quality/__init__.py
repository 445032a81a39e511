"""Quality: counts that must add up across the stages (:mod:`.reconcile`) and the Great Expectations
suites on the staged tables (:mod:`.expectations`). Figures are recomputed from the files, never taken
from a stage's own report.
"""
