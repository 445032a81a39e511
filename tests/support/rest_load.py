"""Loading the staged sample's one scope into a REST destination, and reading back what the server
and the ledger hold."""

from __future__ import annotations

import polars as pl

from pipelines.load.ledger import Ledger
from pipelines.load.records import kept_patterns
from pipelines.load.redaction import redact_frame
from pipelines.load.rest.options import RestOptions, destination_id
from pipelines.load.rest.scope_load import load_rest
from pipelines.load.rest.servers import ServerConfig
from pipelines.load.store import engramia_scope, open_memory
from pipelines.tables import DataLayout
from tests.support.engramia_server import EngramiaServer

SCOPE = "default__default"


def opts(mode: str, **kw) -> RestOptions:
    base = dict(requests_per_minute=0, backoff_base=0.05, backoff_max=0.2, max_retries=2, timeout=10)
    base.update(kw)
    return RestOptions(mode=mode, **base)


def load(layout: DataLayout, server: EngramiaServer, env: str, options: RestOptions, **kw):
    return load_rest(layout, SCOPE, "default", "default", ServerConfig(server.url, env), options, **kw)


def stored(server: EngramiaServer) -> list[dict]:
    """What the server's storage holds, read from its files (works whatever the key's role)."""
    memory = open_memory(server.data_path)
    with engramia_scope("default", "default"):
        return memory.export()


def expected(layout: DataLayout) -> pl.DataFrame:
    """The kept patterns as the pipeline sends them (redacted)."""
    kept = kept_patterns(layout, SCOPE).collect()
    return redact_frame(kept)[0]


def ledger_state(layout: DataLayout, server: EngramiaServer) -> pl.DataFrame:
    return Ledger(layout, SCOPE, destination_id(ServerConfig(server.url, "UNUSED"))).state()
