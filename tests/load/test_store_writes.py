"""The embedded store's write lock: loads in different processes write one at a time."""

from __future__ import annotations

import multiprocessing
import threading
import time

from pipelines.load.store import store_writes


def _hold(store, held, release) -> None:
    with store_writes(store):
        held.set()
        release.wait(10)


def test_a_second_writer_waits_for_the_first(tmp_path):
    store = tmp_path / "store"
    ctx = multiprocessing.get_context("spawn")
    held, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(store, held, release))
    holder.start()
    assert held.wait(30)
    started = time.monotonic()
    release_at = started + 1.0

    def release_later() -> None:
        time.sleep(max(0.0, release_at - time.monotonic()))
        release.set()

    threading.Thread(target=release_later).start()
    with store_writes(store):
        waited = time.monotonic() - started
    holder.join(10)
    assert waited >= 0.9  # it got the lock only once the other process let go
    assert not any(p.suffix == ".json" for p in store.iterdir())  # the lock file is not a key
