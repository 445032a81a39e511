"""The one interface both REST modes implement, and what they share: sending with requests in flight.

A :class:`SendStrategy` is everything a mode does differently (the key it knows before sending, how it
finds patterns an interrupted run may have stored, how the server counts its quota, how it sends);
:mod:`pipelines.load.rest.scope_load` drives either one through the same steps.

Invariants: an intent row is written before each request is started and the outcome as soon as its
answer is in; after an error nothing more is started; a request that certainly stored nothing is
recorded ``failed``, an uncertain one keeps its ``sending`` row for the next run to resolve. Rows with
``update`` set rewrite a pattern the server holds whose score or text changed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, ClassVar

import polars as pl

from pipelines.load.ledger import Outcome
from pipelines.load.rest.books import Entry, LoadBooks
from pipelines.load.rest.client import EngramiaClient
from pipelines.load.rest.errors import DEFINITE
from pipelines.load.rest.options import RestMode, RestOptions
from pipelines.tables import DataLayout

_POLL_SECONDS = 0.2


@dataclass
class SendStrategy(ABC):
    mode: ClassVar[RestMode]
    write_path: ClassVar[str]  # the endpoint the mode writes to (its role is probed there)
    # Whether a failed update leaves the old pattern in the store (rewritten in place under its key)
    # rather than gone (deleted before it is sent again).
    updates_in_place: ClassVar[bool]

    client: EngramiaClient
    options: RestOptions
    books: LoadBooks
    layout: DataLayout
    tenant_id: str
    project_id: str
    # the server's pattern count as last seen (before the load, then from learn answers)
    last_count: int | None = None

    @property
    def scope(self) -> str:
        return self.books.scope

    @abstractmethod
    def key_for(self, row: dict[str, Any]) -> str | None:
        """The key a pattern will have on the server, when the mode knows it before sending."""

    @abstractmethod
    def find_on_server(self, frame: pl.DataFrame, uncertain: pl.DataFrame, unaccounted: bool) -> list[Entry]:
        """Patterns of ``frame`` already on the server: at least those of ``uncertain`` (last row
        ``sending``), all of them when the server holds patterns the ledger does not account for."""

    @abstractmethod
    def over_quota(self, projected: int, quota: int) -> bool:
        """Whether the server would refuse a load that brings the project to ``projected`` patterns."""

    @abstractmethod
    def send(self, rows: list[dict[str, Any]]) -> None:
        """Send the rows, committing each outcome as its answer comes in."""

    def finish(self) -> None:  # noqa: B027 (a step only some modes need)
        """Work after everything is sent and counted."""

    def pipelined(
        self,
        items: list[Any],
        start: Callable[[Any], None],
        work: Callable[[Any], list[Entry]],
        done: Callable[[Any, list[Entry]], None],
    ) -> None:
        """Up to ``concurrency`` requests in flight; intents are written before each is started and
        outcomes as each completes. On an error the rest is not started and the error is raised."""
        if self.options.concurrency == 1:
            for item in items:
                start(item)
                try:
                    outcomes = work(item)
                except Exception as exc:
                    self.fail(item, exc)
                    raise
                done(item, outcomes)
            return
        pending = iter(items)
        error: BaseException | None = None
        pool = ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="engramia-load")
        try:
            inflight: dict[Future, Any] = {}

            def submit() -> None:
                item = next(pending, None)
                if item is not None:
                    start(item)
                    inflight[pool.submit(work, item)] = item

            for _ in range(self.options.concurrency):
                submit()
            while inflight:
                # A timeout, so that a Ctrl-C the kernel handed to another thread (any thread may take a
                # process's SIGINT) is raised here within a moment rather than when a request finishes.
                finished, _ = wait(inflight, timeout=_POLL_SECONDS, return_when=FIRST_COMPLETED)
                for fut in finished:
                    item = inflight.pop(fut)
                    try:
                        done(item, fut.result())
                    except Exception as exc:
                        self.fail(item, exc)
                        error = error or exc
                    if error is None:
                        submit()
        except BaseException:
            # Ctrl-C: shutting the pool down the usual way would wait for workers sleeping out a
            # Retry-After or a backoff. Their requests keep their ``sending`` rows for the next run.
            self.client.stop()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        if error is not None:
            raise error

    def fail(self, item: Any, exc: BaseException) -> None:
        if not isinstance(exc, DEFINITE):
            return
        # an item is one (row, body) or a batch of them
        rows = [r for r, _ in item] if isinstance(item, list) else [item[0]]
        if self.updates_in_place:
            # the store still holds the old content and the ledger says so: the next run updates again
            rows = [r for r in rows if not r.get("update")]
        self.books.commit(
            [
                Entry(r["pattern_id"], self.key_for(r), Outcome.FAILED, f"{type(exc).__name__}: not stored")
                for r in rows
            ]
        )
