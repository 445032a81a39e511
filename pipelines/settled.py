"""Scopes a run can pass over: each scope's last complete run, recorded with what it was made from.

A run with nothing new used to carry every scope through its four stages again, and the load listed the
whole store and recall read every stored pattern to find that nothing had changed: work in proportion to
what was already loaded. Instead, a scope run that ended complete (every step succeeded, every check passed,
every kept pattern is in the destination) leaves a record with a fingerprint of its inputs (the run's
configuration, the dumps staged in the data folder, input files named by the options) and the run's
summary. A later run whose fingerprint is the same has nothing to do in that scope.

The record is removed when any scope run starts (the CLI's, the sensor's or one launched from the UI,
whatever its options) and by a rollback, so it never outlives the state it describes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pipelines.tables import DataLayout


def fingerprint(config: dict[str, Any], dump_ids: list[str], files: list[str | None]) -> str:
    """What a scope run was made from: its configuration, the staged dumps, and each named input file's
    size and modification time (a feedback file edited in place changes the scores)."""
    stats = []
    for name in files:
        if name is None:
            continue
        try:
            st = os.stat(name)
            stats.append([name, st.st_size, st.st_mtime_ns])
        except OSError:
            stats.append([name, None, None])
    text = json.dumps(
        {"config": config, "dumps": sorted(dump_ids), "files": stats}, sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()


def record(layout: DataLayout, scope: str, print_: str, run_id: str, summary: dict[str, Any]) -> None:
    """Record that ``run_id`` left ``scope`` complete for inputs with fingerprint ``print_``."""
    path = layout.settled(scope)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"fingerprint": print_, "run_id": run_id, "summary": summary}, default=str))
    os.replace(tmp, path)


def settled(layout: DataLayout, scope: str, print_: str) -> dict[str, Any] | None:
    """The scope's recorded run (``run_id``, ``summary``) if its inputs had this fingerprint, else None."""
    try:
        found = json.loads(layout.settled(scope).read_text())
    except (OSError, ValueError):
        return None
    return found if found.get("fingerprint") == print_ else None


def unsettle(layout: DataLayout, scope: str) -> None:
    """Forget the scope's recorded run: its state is about to change."""
    Path(layout.settled(scope)).unlink(missing_ok=True)
