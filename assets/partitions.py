"""The scope partitions: one dynamic partition per Engramia (tenant, project) that a dump produced.

Partitions are registered in one place, by the ingest asset, from the scope catalog it has just
written; the sensor, the CLI and the UI then only ever launch runs for keys that exist. A key typed by
hand into the launchpad that no dump produced is refused by :func:`require_scope` before any step
writes anything.
"""

import dagster as dg

from pipelines.ingest.catalog import read_scopes, scope_names
from pipelines.tables import DataLayout

SCOPES = dg.DynamicPartitionsDefinition(name="scopes")


def register_scopes(instance: dg.DagsterInstance, scopes: list[str]) -> list[str]:
    """Add the scopes that are not partitions yet; returns those added."""
    known = set(instance.get_dynamic_partitions(SCOPES.name))
    new = sorted(set(scopes) - known)
    if new:
        instance.add_dynamic_partitions(SCOPES.name, new)
    return new


def require_scope(layout: DataLayout, scope: str) -> tuple[str, str]:
    """The scope's (tenant_id, project_id), or a failure that names the known scopes."""
    known = read_scopes(layout)["scope"].to_list()
    if scope not in known:
        listed = ", ".join(sorted(known)) or "none yet: run the ingest first"
        raise dg.Failure(
            description=f"scope {scope!r} was produced by no dump in {layout.root} (known scopes: {listed})",
            allow_retries=False,
        )
    return scope_names(layout, scope)
