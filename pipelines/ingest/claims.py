"""Which run ingests which dump when several ingest runs share one data directory.

Invariants: a dump is staged by one run at a time (the run that holds its claim) and reaches the manifest
once; the manifest and the scope catalog are read, extended and written under one lock, so a concurrent
writer's row is never lost; a dump's ``seq`` (the order its rows take against other dumps' rows) is given
once, in name order among the dumps seen together, whichever run then stages it, so concurrent runs stage
exactly the rows a single run would.

Claims and the lock are ``flock`` locks on files under ``staged/_claims/``: the kernel releases them when
the holder exits, so a crashed run leaves nothing to clean up and its dump is claimed by the next run. They
hold across processes on one host and on a shared POSIX file system that honours ``flock`` (local disks,
a Kubernetes ReadWriteMany volume on NFSv4 or CephFS).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from pipelines.tables import DataLayout, write_parquet

_ORDER_SCHEMA = {"dump_id": pl.String, "seq": pl.Int64}


def _claims_dir(layout: DataLayout) -> Path:
    path = layout.staged / "_claims"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _lock(path: Path, blocking: bool) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _release(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


@contextmanager
def catalog_lock(layout: DataLayout) -> Iterator[None]:
    """Held while the manifest, the scope catalog, the dump order or the warehouse views are rewritten."""
    fd = _lock(_claims_dir(layout) / "catalog.lock", blocking=True)
    assert fd is not None
    try:
        yield
    finally:
        _release(fd)


@contextmanager
def claim(layout: DataLayout, dump_id: str) -> Iterator[bool]:
    """Yields True while this process holds the dump's claim, False when another process holds it."""
    fd = _lock(_claims_dir(layout) / f"dump={dump_id}.lock", blocking=False)
    try:
        yield fd is not None
    finally:
        if fd is not None:
            _release(fd)


def _order_path(layout: DataLayout) -> Path:
    return layout.staged / "_manifest" / "dump_order.parquet"


def dump_seqs(layout: DataLayout, dump_ids: list[str], done_seq: int) -> dict[str, int]:
    """The seq of each of ``dump_ids`` (given in name order): the one given before, else the next after
    every seq given so far and ``done_seq`` (the manifest's highest). Call under :func:`catalog_lock`."""
    path = _order_path(layout)
    order = pl.read_parquet(path) if path.exists() else pl.DataFrame(schema=_ORDER_SCHEMA)
    known = dict(zip(order["dump_id"].to_list(), order["seq"].to_list(), strict=True))
    new = [d for d in dump_ids if d not in known]
    if new:
        top = max(done_seq, int(order["seq"].max() or 0))
        known.update({d: top + i for i, d in enumerate(new, start=1)})
        write_parquet(
            pl.DataFrame({"dump_id": list(known), "seq": list(known.values())}, _ORDER_SCHEMA), path
        )
    return {d: known[d] for d in dump_ids}
