"""Loading over Engramia's REST API: learn and import are two strategies (:mod:`.learn`, :mod:`.imports`)
behind one interface (:mod:`.strategy`), driven per scope by :mod:`.scope_load`. The client
(:mod:`.client`) owns retries, backoff and rate limits; :mod:`.readback` finds what a server holds.
"""
