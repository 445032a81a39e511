"""The backfill's logic as plain functions over Polars frames and DuckDB, one package per stage, in the
order data flows:

    ingest   a dump's lines -> staged rows per scope, or quarantined rows with their reason;
             staged rows -> one typed message per message id (repeats counted, conflicts quarantined)
    pairing  messages -> (user, assistant) patterns, or unpaired messages with their reason
    scoring  patterns -> an eval_score each, near-duplicates dropped (each naming the pattern kept)
    load     kept patterns -> Engramia (embedded or REST), each outcome in a ledger
    quality  counts that must reconcile across the stages, and the data-quality expectations

``tables`` owns every table's path and schema, ``scopes`` the scope names, ``duck`` the DuckDB connections.
A stage reads an earlier stage's published tables and never imports a later stage; nothing here imports
dagster (``assets/`` and ``checks/`` are the Dagster wiring). ``tools`` holds the synthetic export, the
OpenAI exporter and the demo.
"""
