"""Write slots per destination: how many scope runs may write into one Engramia destination at once.

Each destination (an embedded store, a REST server) has a Dagster pool of its own, named
``engramia_writes/<destination>``, in the instance's concurrency storage: SQLite on one machine, Postgres
for a deployment whose runs go to many pods, so the limit holds wherever the runs execute. The load step
claims a slot of its destination's pool around its writes and waits while none is free; the UI's
*Concurrency* page lists the pools with the runs holding them, and an operator changes a limit with
``dagster instance concurrency set engramia_writes/<destination> N``. Scopes bound for different
destinations load side by side.

The pools are claimed from the step rather than declared on the asset (``pool=``) because the destination
is run configuration, and an asset's pool is fixed when the code is loaded. A slot is claimed under the
run's id and the step's key. Dagster's daemon frees the slots of a run that has ended; without one (the
CLI), a load waiting for a slot gives back those held by runs that ended, or whose process died, without
freeing theirs (:mod:`assets.abandoned_runs`).

A pool is made once, at the destination's ``writers`` (one for the embedded store and JSON-backed servers):
two processes making it at once could each add its slots, so it is made under the data directory's catalog
lock, and the sensor makes it before it requests a scope run. A limit set by hand is left as it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from dagster._core.storage.event_log.base import EventLogStorage

from assets.abandoned_runs import free_slots_of_ended_holders
from assets.destination import EngramiaDestination
from pipelines.ingest.claims import catalog_lock
from pipelines.load.rest.servers import ServerConfigError
from pipelines.tables import DataLayout

POOL_PREFIX = "engramia_writes"
# How often a waiting load asks for a slot again when nobody on this machine says one was freed (holders
# elsewhere: runs on other pods of a Postgres instance). Asking is not free: a queued claim and the look
# at the queue cost ~20 ms of SQLite, which a waiting load spent ten times a second while the holder and
# the other scope's transform needed both cores.
POLL_SECONDS = 0.25
# A load that frees its slot says so in a file of the instance's folder; loads waiting on this machine
# look at it this often and ask for the slot at once (a look is one stat). The next load used to start
# 0.11-0.23 s after the last one ended, twelve times in a 1M-message run.
WATCH_SECONDS = 0.01
# How long a claim waits before checking that the slot is still its own (see _claim): far longer than
# the gap between another claimant's read and write of the same row (milliseconds, in one transaction),
# and short, as every load waits it once while holding the slot.
CLAIM_SETTLE_SECONDS = 0.05
# How often a waiting load checks whether the runs holding the slots still exist.
HOLDERS_SECONDS = 1.0
# The run's log marks when a load held its slot, so the run history shows who wrote when.
SLOT_TAKEN = "took a write slot of"
SLOT_FREED = "freed the write slot of"


def destination_pool(destination: str) -> str:
    """The pool of a destination id (``embedded:/path/to/store``, ``rest:https://host``): readable, and
    unique through a digest of the whole id."""
    kind, _, where = destination.partition(":")
    tail = re.sub(r"[^A-Za-z0-9._-]+", "-", where.split("://")[-1]).strip("-")[-40:]
    digest = hashlib.sha256(destination.encode()).hexdigest()[:8]
    return f"{POOL_PREFIX}/{kind}-{tail}-{digest}"


def ensure_destination_pool(
    instance: dg.DagsterInstance, layout: DataLayout, pool: str, writers: int
) -> None:
    """Make ``pool`` with ``writers`` slots unless it exists (a limit set by hand is kept)."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return
    with catalog_lock(layout):
        if pool not in storage.get_concurrency_keys():
            storage.set_concurrency_slots(pool, writers)


def make_write_pool(
    instance: dg.DagsterInstance, layout: DataLayout, engramia: EngramiaDestination, scope: str
) -> str | None:
    """The pool of the scope's destination, made at ``engramia.writers`` slots when new; None when the
    destination's configuration is wrong (the load itself reports that)."""
    try:
        pool = destination_pool(engramia.describe(layout, scope))
    except (ServerConfigError, ValueError):
        return None
    ensure_destination_pool(instance, layout, pool, engramia.writers)
    return pool


@contextmanager
def destination_slot(
    instance: dg.DagsterInstance,
    pool: str,
    run_id: str,
    step_key: str,
    log: Callable[[str], None] | None = None,
    poll_seconds: float = POLL_SECONDS,
) -> Iterator[None]:
    """Hold one slot of ``pool`` for the step ``step_key`` of run ``run_id``, waiting until one is free."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        yield
        return
    freed = _freed_signal(instance, pool)
    waited_since: float | None = None
    looked_at_holders = 0.0
    claimed = False
    try:
        while True:
            # Read before claiming: a slot freed between a refused claim and this read is not missed.
            last_freed = _modified(freed)
            if _claim(storage, pool, run_id, step_key):
                break
            if waited_since is None:
                waited_since = time.monotonic()
                _say(log, f"waiting for a write slot of {pool}: every slot is held by another run")
            if time.monotonic() - looked_at_holders >= HOLDERS_SECONDS:
                # A holder whose process died would hold its slot for ever (no daemon frees it here).
                free_slots_of_ended_holders(instance, pool, log)
                looked_at_holders = time.monotonic()
            _wait_for_freed(freed, last_freed, poll_seconds)
        claimed = True
        waited = f" after {time.monotonic() - waited_since:.1f} s" if waited_since is not None else ""
        _say(log, f"{SLOT_TAKEN} {pool}{waited}")
        yield
    finally:
        # Also withdraws a claim still waiting in the queue (Ctrl-C while waiting).
        storage.free_concurrency_slot_for_step(run_id, step_key)
        if claimed:
            _tell_freed(freed)
            _say(log, f"{SLOT_FREED} {pool}")


def _freed_signal(instance: dg.DagsterInstance, pool: str) -> Path:
    """The file a load touches when it frees a slot of ``pool``: in the instance's folder, which every run
    of this instance on this machine shares."""
    name = hashlib.sha256(pool.encode()).hexdigest()[:16]
    return Path(instance.root_directory) / "write_slots" / name


def _modified(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def _tell_freed(path: Path) -> None:
    # Only a hint for the waiting loads (they also ask on their own): a folder it cannot write is no error.
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def _wait_for_freed(path: Path, last_freed: int | None, seconds: float) -> None:
    """Sleep up to ``seconds``, less when a load on this machine frees a slot meanwhile."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(WATCH_SECONDS, left))
        if _modified(path) != last_freed:
            return


def _claim(storage: EventLogStorage, pool: str, run_id: str, step_key: str) -> bool:
    """Claim a slot and make sure it is ours. Dagster's claim picks a free slot row and then writes its
    run into that row without asking again whether the row is still free: two processes claiming at the
    same moment can both be told they hold the one slot, the later write winning the row (seen on the
    Postgres instance with two loads claiming at once). So a claim counts only if, a moment later, the row
    still names this step; the other claimant then waits for the slot like any other."""
    status = storage.claim_concurrency_slot(pool, run_id, step_key)
    if not status.is_claimed:
        if not status.is_assigned:
            _wake_queue(storage, pool)
        return False
    time.sleep(CLAIM_SETTLE_SECONDS)
    holders = storage.get_concurrency_info(pool).claimed_slots
    return any(slot.run_id == run_id and slot.step_key == step_key for slot in holders)


def _wake_queue(storage: EventLogStorage, pool: str) -> None:
    """Hand a free slot to the queue's first step when no holder is left to do it. Dagster queues a claim
    unassigned when it counts no free slot, and a holder freeing its slot assigns the next queued step; a
    holder that frees between a newcomer's count and its insert finds nobody queued, and the newcomer then
    waits without end (seen with two loads into one store). Dagster's own rule for a free slot (more slots
    than assigned steps) decides it here; the step assigned is the queue's first, not necessarily this one."""
    info = storage.get_concurrency_info(pool)
    if info.assigned_step_count < info.slot_count:
        storage.assign_pending_steps([pool])


def _say(log: Callable[[str], None] | None, line: str) -> None:
    if log is not None:
        log(line)
