"""Ingest: a dump's lines become staged rows per scope or quarantined rows, then one message per id.

Invariants: per dump, lines = staged rows + quarantined rows (:mod:`.staging`); per scope, staged rows =
messages + exact repeats + quarantined conflicts (:mod:`.messages`). Dumps are found and read in chunks by
:mod:`.dumps`, judged line by line by :mod:`.classify`, and recorded with their scopes in :mod:`.catalog`.
"""
