"""Load: a scope's kept patterns go to Engramia, embedded (:mod:`.embedded`, storage in :mod:`.store`) or
over REST (:mod:`.rest`).

Invariant: every kept pattern ends loaded, already present, skipped as a near-duplicate, or rejected with
the server's reason, and the ledger (:mod:`.ledger`) records each outcome so nothing is sent twice. Both
destinations plan from the same ledger (:mod:`.plan`) and build the same records under one key
(:mod:`.records`); :mod:`.rollback` deletes exactly what was loaded.
"""
