"""Runs whose process is gone: closed as failed, with the write slots they held given back.

A run the CLI executes in one of its processes is tagged with that process (``PROCESS_TAG``). Where the
process dies in the middle of a run (killed after an interrupt it did not stop for, killed by the system for
memory), nothing writes the run's end: Dagster would show it running for ever, the sensor would hold its
scope back as under way, and the write slot of its destination's pool (:mod:`assets.pools`) would stay
taken, every later load waiting for it without end. Dagster's daemon gives back the slots of runs that
have ended; the CLI runs without one, so the project does it itself: the CLI closes its own abandoned runs
when it starts and after its workers have stopped, and a load waiting for a slot frees those of holders
that have ended or were abandoned.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import dagster as dg

PROCESS_TAG = "assistants_backfill/process"
_RUNNING = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def process_tags(run_id: str) -> dict[str, str]:
    """The tag of run ``run_id`` executed in this process: machine, process id, the process's start (a
    process id is reused once its process has gone) and the run's id (a run re-executed from the UI
    carries its parent's tags, and is not run by that process)."""
    pid = os.getpid()
    return {PROCESS_TAG: f"{socket.gethostname()}:{pid}:{_started(pid)}:{run_id}"}


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name; None where there is no such process
    (or no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rpartition(")")[2].split()
    except OSError:
        return None


def _started(pid: int) -> str:
    fields = _stat(pid)
    return fields[19] if fields else "?"  # starttime, in clock ticks since boot


def _alive(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _stat(pid)
    if fields is None:
        return True  # no /proc: the process id answering is all there is to go by
    # A child that has died but is not reaped yet still answers; another process may have the id now.
    return fields[0] != "Z" and (started == "?" or fields[19] == started)


def abandoned(run: dg.DagsterRun) -> bool:
    """Running by its record, tagged with a process of this machine that no longer exists. A run of
    another machine, or one launched without the tag (the UI's, the sensor's), is never judged here."""
    if run.status not in _RUNNING:
        return False
    host, pid, started, run_id = [*run.tags.get(PROCESS_TAG, "").split(":"), "", "", "", ""][:4]
    ours = host == socket.gethostname() and run_id == run.run_id and pid.isdigit()
    return ours and not _alive(int(pid), started)


def close_run(instance: dg.DagsterInstance, run: dg.DagsterRun) -> None:
    """Record an abandoned run as failed, naming its process, and give back every write slot the run
    holds (those of a run that has ended too)."""
    if not run.is_finished:
        why = f"the process running it ({run.tags.get(PROCESS_TAG)}) ended before the run did"
        instance.report_run_failed(run, message=why)
    if instance.event_log_storage.supports_global_concurrency_limits:
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)


def close_abandoned_runs(instance: dg.DagsterInstance, say: Callable[[str], None] | None = None) -> list[str]:
    """Close every abandoned run of the instance (see :func:`abandoned`); the ids of those closed."""
    closed = [run for run in instance.get_runs(dg.RunsFilter(statuses=_RUNNING)) if abandoned(run)]
    for run in closed:
        close_run(instance, run)
        if say is not None:
            say(f"run {run.run_id} was left running by a process that no longer exists "
                f"({run.tags[PROCESS_TAG]}): recorded as failed, its write slots given back")  # fmt: skip
    return [run.run_id for run in closed]


def close_abandoned_runs_after(instance: dg.DagsterInstance, say: Callable[[str], None]) -> None:
    """:func:`close_abandoned_runs` once a command's workers have stopped. A storage that cannot be read
    then (a full disk) is told in one line and left to the next command's sweep at its start: it never
    takes the place of the command's own outcome."""
    try:
        close_abandoned_runs(instance, say)
    except Exception as exc:
        say(f"warning: runs a stopped worker left running were not looked for: {type(exc).__name__}: {exc}")


def free_slots_of_ended_holders(
    instance: dg.DagsterInstance, pool: str, say: Callable[[str], None] | None = None
) -> list[str]:
    """Give back the slots of ``pool`` held by runs that have ended or were abandoned; the ids of those
    runs. A holder with no run record (a claim made outside a run) is left alone."""
    holders = {s.run_id for s in instance.event_log_storage.get_concurrency_info(pool).claimed_slots}
    runs = [instance.get_run_by_id(run_id) for run_id in sorted(holders)]
    ended = [run for run in runs if run is not None and (run.is_finished or abandoned(run))]
    for run in ended:
        state = run.status.value if run.is_finished else "abandoned by its process"
        close_run(instance, run)
        if say is not None:
            say(f"freed the slot of {pool} held by run {run.run_id} ({state}), which had not given it back")
    return [run.run_id for run in ended]
