"""The options a data folder was built with, and what a new run would change about them.

Staged tables depend on the scope mapping (which scope a thread belongs to) and on the pairing options
(mode and truncation limits). A run with other values does not fail: the mapping is refused by ingest,
and other pairing options re-pair every thread and retract the loaded patterns that no longer exist.
Both are worth one clear line before any work, which :func:`option_changes` provides. Read-only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pipelines.ingest.catalog import read_manifest, read_scopes
from pipelines.pairing.pairs import PairingOptions
from pipelines.scopes import ScopeMapping
from pipelines.tables import DataLayout

# The key of each recorded value (as ``describe()`` writes them) and the option that sets it.
_MAPPING_OPTIONS = {"scope_by": "--scope-by", "tenant": "--tenant", "project": "--project"}
_PAIRING_OPTIONS = {
    "mode": "--pairing",
    "task_max": "--task-max-chars",
    "code_max": "--code-max-chars",
    "context": "--task-context",
}


@dataclass(frozen=True)
class OptionChange:
    option: str
    was: str
    now: str
    # A scope mapping cannot change within one data folder at all; pairing options can, at a cost.
    allowed_with_flag: bool


def _fields(described: str) -> dict[str, str]:
    return dict(token.split("=", 1) for token in described.split() if "=" in token)


def _changes(recorded: set[str], current: str, options: dict[str, str], allowed: bool) -> list[OptionChange]:
    # A value ``describe()`` leaves out is the option's "none" (e.g. no task context).
    now = _fields(current)
    out: list[OptionChange] = []
    for key, option in options.items():
        was = sorted({_fields(r).get(key, "none") for r in recorded} - {now.get(key, "none")})
        if was:
            out.append(OptionChange(option, ", ".join(was), now.get(key, "none"), allowed))
    return out


def recorded_pairings(layout: DataLayout) -> set[str]:
    pairings = set()
    for scope in read_scopes(layout)["scope"].to_list():
        path = layout.state(scope)
        if path.exists() and (pairing := json.loads(path.read_text()).get("pairing")):
            pairings.add(pairing)
    return pairings


def option_changes(layout: DataLayout, mapping: ScopeMapping, pairing: PairingOptions) -> list[OptionChange]:
    """Every option whose value differs from what the data folder's staged tables were built with."""
    manifest = read_manifest(layout)
    mappings = set(manifest["mapping"].drop_nulls().unique().to_list()) if manifest.height else set()
    return [
        *_changes(mappings, mapping.describe(), _MAPPING_OPTIONS, allowed=False),
        *_changes(recorded_pairings(layout), pairing.describe(), _PAIRING_OPTIONS, allowed=True),
    ]
