"""Scoring: patterns -> an eval_score each (:mod:`.scores`, :mod:`.feedback`), near-duplicates removed
within each scope (:mod:`.near_duplicates`), written as the scope's scored table (:mod:`.scored`).

Invariant: nothing here imports dagster or the load stage; scoring reads the pairing stage's batches and
the shared table layout only.
"""
