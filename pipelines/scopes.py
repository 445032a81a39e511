"""Where each thread lands in Engramia: the scope mapping and the partition keys derived from it.

Engramia scopes are ``(tenant_id, project_id)`` pairs, and over REST a scope is fixed by the API key, so
the mapping decides both where patterns go and which key must be used to write them.

Invariant: scope keys are made here only (:func:`scope_key`), so the staged folders, the scope catalog
and the Dagster partitions all name a scope alike; :func:`sanitize_key` never gives two different names
one key (a hash of the original is appended whenever cleaning changed anything).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import duckdb


class ScopeBy(StrEnum):
    ASSISTANT = "assistant"  # one project per assistant_id (default)
    TENANT = "tenant"  # one project per tenant, from a thread_id -> tenant_id map
    SINGLE = "single"  # everything in one project


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_MAX_KEY = 100


def sanitize_key(raw: str) -> str:
    """A partition key safe for Dagster, hive paths and file names.

    Characters outside ``[A-Za-z0-9_.-]`` become ``_`` and long names are cut; whenever anything had to
    change, a short hash of the original is appended so that two different names never share a key.
    """
    clean = _UNSAFE.sub("_", raw).strip(".") or "_"
    if clean != raw or len(clean) > _MAX_KEY:
        clean = f"{clean[:80]}-{hashlib.sha256(raw.encode()).hexdigest()[:8]}"
    return clean


def scope_key(tenant_id: str, project_id: str) -> str:
    return sanitize_key(f"{tenant_id}__{project_id}")


@dataclass(frozen=True)
class ScopeMapping:
    """How threads map to ``(tenant_id, project_id)``.

    ``tenant`` and ``project`` are the fixed names used where the mode does not derive them:
    the tenant for ``assistant`` and ``single``, the project for ``tenant`` and ``single``.
    """

    scope_by: ScopeBy = ScopeBy.ASSISTANT
    tenant: str = "default"
    project: str = "default"
    tenant_map: Path | None = None

    def __post_init__(self) -> None:
        if self.scope_by is ScopeBy.TENANT and self.tenant_map is None:
            raise ValueError(
                "scope_by=tenant needs a tenant map (a CSV or Parquet file: thread_id,tenant_id)"
            )
        if self.tenant_map is not None and not Path(self.tenant_map).is_file():
            raise FileNotFoundError(f"tenant map not found: {self.tenant_map}")

    def describe(self) -> str:
        return f"scope_by={self.scope_by.value} tenant={self.tenant} project={self.project}"

    def sql_columns(self) -> tuple[str, str]:
        """SQL expressions for ``tenant_id`` and ``project_id`` over a row with ``assistant_id``
        and (for tenant mode) ``map_tenant`` from the joined tenant map."""
        lit_t = _sql_literal(self.tenant)
        lit_p = _sql_literal(self.project)
        match self.scope_by:
            case ScopeBy.ASSISTANT:
                return lit_t, "assistant_id"
            case ScopeBy.TENANT:
                return "map_tenant", lit_p
            case ScopeBy.SINGLE:
                return lit_t, lit_p


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def load_tenant_map(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Load ``thread_id -> tenant_id`` into the table ``tenant_map``; a thread mapped to two tenants
    is a configuration error, reported with the thread id."""
    src = str(path)
    reader = "read_parquet" if src.endswith(".parquet") else "read_csv"
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE tenant_map_raw AS SELECT CAST(thread_id AS VARCHAR) AS thread_id, "
        f"CAST(tenant_id AS VARCHAR) AS tenant_id FROM {reader}(?)",
        [src],
    )
    bad = con.execute(
        "SELECT thread_id, list(DISTINCT tenant_id) FROM tenant_map_raw GROUP BY thread_id "
        "HAVING count(DISTINCT tenant_id) > 1 LIMIT 3"
    ).fetchall()
    if bad:
        shown = "; ".join(f"{t} -> {sorted(v)}" for t, v in bad)
        raise ValueError(f"{path}: threads mapped to more than one tenant: {shown}")
    con.execute(
        "CREATE OR REPLACE TEMP TABLE tenant_map AS SELECT DISTINCT thread_id, tenant_id FROM tenant_map_raw "
        "WHERE thread_id IS NOT NULL AND tenant_id IS NOT NULL AND trim(tenant_id) <> ''"
    )
