"""Asset checks: what each check computes and how it reports.

Every check recomputes its figures from the files or from Engramia, never from the asset's own report,
and publishes them as metadata. The assets declare these checks (``check_specs``) and evaluate them in
their own step, so figures several checks share are computed once and a failed blocking check stops
the scope before anything downstream runs. Nothing here imports ``assets``: the wiring depends on the
checks, never the other way round.
"""
