"""Quality and the operator's view: counts that must add up across the stages (:mod:`.reconcile`), the
Great Expectations suites on the staged tables (:mod:`.expectations`), what a data folder holds
(:mod:`.status`) and what a run would do before it does it (:mod:`.run_plan`, from the pending dumps
of :mod:`.pending` and the destination's :mod:`.capacity`). Figures are recomputed from the files, never
taken from a stage's own report, and nothing here writes.
"""
