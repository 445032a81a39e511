"""One scope's load into a running Engramia server over ``/v1``, in either mode.

:class:`ScopeLoad` takes the same steps whatever the mode and leaves what differs to a
:class:`~pipelines.load.rest.strategy.SendStrategy` (:mod:`~pipelines.load.rest.learn`,
:mod:`~pipelines.load.rest.imports`): learn the server's version (for the record) and storage, count,
probe the key's role, plan (the shared :func:`~pipelines.load.plan.plan_load`), redact and validate,
keep of the patterns whose basis changed those whose content changed, resolve patterns an interrupted
run may have stored, check capacity, retract, send (new patterns, then changed ones), count again.

Exactly once. Before a request the ledger gets an intent row (outcome ``sending``), flushed to disk;
after the answer the outcome row, flushed again. A pattern whose last row is ``sending`` may or may not
be on the server (the client died, or the server died after storing it but before answering). Nothing
uncertain is ever sent again blindly: it is looked up on the server first, by key (import) or by task
and code (learn). Nothing is sent before the capacity check has passed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field, replace

import httpx
import polars as pl

from pipelines.load.content import with_fingerprints
from pipelines.load.ledger import Ledger, Outcome
from pipelines.load.limits import SCOPE_PATTERN_CAP, SERVER_QUOTA_PCT, split_valid
from pipelines.load.plan import LoadResult, plan_load, settle_updates, texts_to_send
from pipelines.load.redaction import redact_frame
from pipelines.load.rest.books import Entry, LoadBooks
from pipelines.load.rest.client import EngramiaClient
from pipelines.load.rest.errors import (
    AuthError,
    CapacityError,
    MissingApiKey,
    NotFound,
    Rejected,
    RestError,
    explain,
)
from pipelines.load.rest.imports import ImportStrategy
from pipelines.load.rest.learn import LearnStrategy
from pipelines.load.rest.options import RestMode, RestOptions, destination_id, make_client
from pipelines.load.rest.readback import LearnMatcher
from pipelines.load.rest.server_version import parse_server_version
from pipelines.load.rest.servers import ServerConfig
from pipelines.load.rest.strategy import SendStrategy
from pipelines.progress import open_bar
from pipelines.tables import DataLayout, parquet_files, write_parquet

STRATEGIES: dict[RestMode, type[SendStrategy]] = {
    RestMode.LEARN: LearnStrategy,
    RestMode.IMPORT: ImportStrategy,
}


@dataclass
class ScopeLoad:
    layout: DataLayout
    scope: str
    tenant_id: str
    project_id: str
    server: ServerConfig
    options: RestOptions
    client: EngramiaClient
    books: LoadBooks
    strategy: SendStrategy = field(init=False)

    @property
    def result(self) -> LoadResult:
        return self.books.result

    def run(self) -> None:
        info = self.client.version()
        version = parse_server_version(str(info.get("app_version") or ""))
        self.result.server_version = f"engramia {version.describe()} (api {info.get('api_version') or '?'})"
        self.check_storage()
        before = self.client.pattern_count()
        self.result.pattern_count_before = before
        self.strategy = STRATEGIES[self.options.mode](
            self.client,
            self.options,
            self.books,
            self.layout,
            self.tenant_id,
            self.project_id,
            last_count=before,
        )
        self.probe_permission()
        self.send_gone_again(before)
        plan = plan_load(self.layout, self.scope, self.books.ledger.in_store(), _basis(self.options))
        self.result.kept, self.result.already_loaded = plan.kept, plan.already
        to_send = texts_to_send(self.layout, self.scope, plan)
        frame = self.prepare(to_send if to_send is not None else pl.DataFrame())
        if not frame.is_empty():
            frame, unchanged = settle_updates(plan, with_fingerprints(frame))
            self.books.keep_unchanged(unchanged)
            self.books.content = {
                r["pattern_id"]: (r["fingerprint"], r["basis"])
                for r in frame.select("pattern_id", "fingerprint", "basis").iter_rows(named=True)
            }
        frame = self.resolve_uncertain(frame, before)
        n_new = frame.height - (int(frame["update"].sum()) if "update" in frame.columns else 0)
        self.check_capacity(before, n_new, plan.to_retract.height)
        self.retract(plan.to_retract)
        self.books.total = frame.height
        self.books.bar = open_bar(self.scope, frame.height) if self.books.progress is None else None
        if frame.height:
            self.books.say(
                f"{self.scope}: sending {frame.height} patterns to {self.server.url} ({self.options.mode})"
            )
        # New patterns first: an update is the one step a later run can always make again.
        if "update" in frame.columns:
            frame = frame.sort("update", maintain_order=True)
        self.strategy.send(frame.to_dicts())
        self.result.pattern_count_after = self.client.pattern_count()
        self.strategy.finish()

    def check_storage(self) -> None:
        """JSON storage is not safe with concurrent writers: against it, load one request at a time."""
        try:
            health = self.client.get("/v1/health") or {}
        except NotFound:
            return
        storage = str(health.get("storage") or "")
        if storage == "JSONStorage" and self.options.concurrency > 1:
            self.books.say(
                f"{self.scope}: the server stores patterns in JSON files, which concurrent writers corrupt; "
                f"loading with concurrency 1 instead of {self.options.concurrency}"
            )
            self.options = replace(self.options, concurrency=1)

    def send_gone_again(self, before: int) -> None:
        """When the server counts fewer patterns than the ledger says it holds, someone deleted some
        there: the keys the export no longer has are recorded gone (uncounted: this load did not remove
        them), so the plan sends those patterns again like new ones. A key that cannot export cannot
        tell which; the result's notes say so."""
        in_store = self.books.ledger.in_store()
        if before >= in_store.height:
            return
        matcher = LearnMatcher(self.client)
        if matcher.export_index() is None:
            return
        gone = in_store.filter(pl.col("key").is_not_null() & ~pl.col("key").is_in(list(matcher.records)))
        why = "key gone from the server (deleted there): sent again"
        self.books.commit(
            [
                Entry(pid, key, Outcome.RETRACTED, why, tally="uncounted")
                for pid, key in gone.select("pattern_id", "key").iter_rows()
            ]
        )
        if gone.height:
            self.books.say(f"{self.scope}: {gone.height} patterns gone from the server: sending them again")

    def probe_permission(self) -> None:
        """An empty body to the write endpoint: the role check runs before body validation, so 403
        means the key lacks the role and 422 means it has it. Nothing can be stored."""
        try:
            self.client.request("POST", self.strategy.write_path, json={})
        except Rejected:
            return

    def prepare(self, to_send: pl.DataFrame) -> pl.DataFrame:
        """Redacted, validated rows with their previous ledger state; answers the server already gave
        are not asked again."""
        if to_send.is_empty() or "task" not in to_send.columns:
            return to_send.clear() if "task" in to_send.columns else pl.DataFrame()
        state = self.books.ledger.state().select(
            "pattern_id", prev_outcome="outcome", prev_reason="reason", prev_key="key"
        )
        frame = to_send.join(state, on="pattern_id", how="left").with_columns(
            task_raw=pl.col("task"), code_raw=pl.col("code")
        )
        if self.options.redact:
            frame, counts = redact_frame(frame, ["task", "code"])
            self.result.redacted = sum(counts.values())
            self.result.redactions = json.dumps(counts, sort_keys=True)
            if self.result.redacted:
                self.books.say(
                    f"{self.scope}: redacted {self.result.redacted} items before sending: {counts}"
                )
        if self.options.validate:
            frame, invalid = split_valid(frame)
            entries = []
            for row in invalid.iter_rows(named=True):
                reason = f"pipeline: {row['invalid_reason']} (server limit)"
                if row.get("update"):
                    # the server keeps the old content, and the ledger keeps saying so
                    self.result.notes += f"{row['pattern_id']} changed but not sent again: {reason}; "
                elif row["prev_outcome"] == Outcome.REJECTED and row["prev_reason"] == reason:
                    self.result.rejected += 1
                    self.result.rejections.append({"pattern_id": row["pattern_id"], "reason": reason})
                else:
                    entries.append(
                        Entry(row["pattern_id"], self.strategy.key_for(row), Outcome.REJECTED, reason)
                    )
            if entries:
                self.books.commit(entries)
        # The pipeline's own rejections are re-validated every run (the settings may have changed).
        answered = (
            (pl.col("prev_outcome") == Outcome.NOT_STORED)
            | (
                (pl.col("prev_outcome") == Outcome.REJECTED)
                & pl.col("prev_reason").str.starts_with("server:")
            )
        ).fill_null(False)
        if not self.options.resend_rejected:
            skipped = frame.filter(answered)
            if skipped.height:
                self.result.skipped += skipped.height
                self.books.say(
                    f"{self.scope}: {skipped.height} patterns skipped: the server already answered "
                    "rejected/not_stored (resend_rejected=true sends them again)"
                )
            frame = frame.filter(~answered)
        return frame

    def resolve_uncertain(self, frame: pl.DataFrame, before: int) -> pl.DataFrame:
        """Patterns whose last ledger row is ``sending`` (and, when the server holds more patterns than
        the ledger accounts for, every pattern to send) are looked up on the server first."""
        if frame.is_empty():
            return frame
        # Patterns to update are in the store by the ledger's own word: only new ones are looked up.
        updates = frame.filter(pl.col("update"))
        frame = frame.filter(~pl.col("update"))
        uncertain = frame.filter(pl.col("prev_outcome") == Outcome.SENDING)
        unaccounted = before > self.books.ledger.in_store().height
        if frame.is_empty() or (uncertain.is_empty() and not unaccounted):
            return pl.concat([frame, updates])
        found = self.strategy.find_on_server(frame, uncertain, unaccounted)
        if found:
            self.books.commit(found)
            self.books.say(f"{self.scope}: {len(found)} patterns already on the server (not sent again)")
        done = [e.pattern_id for e in found]
        return pl.concat([frame.filter(~pl.col("pattern_id").is_in(done)), updates])

    def check_capacity(self, before: int, n_new: int, n_retract: int) -> None:
        if n_new == 0:
            return
        projected = before - n_retract + n_new
        where = f"scope {self.scope} ({self.tenant_id}/{self.project_id})"
        if projected > SCOPE_PATTERN_CAP:
            raise CapacityError(
                f"{where} would hold {projected:,} patterns ({before:,} on the server + {n_new:,} new), over "
                f"Engramia's cap of {SCOPE_PATTERN_CAP:,} per scope; split it (scope_by=assistant or tenant)"
            )
        billing = self.client.billing_status()
        if not billing or billing.get("patterns_limit") is None:
            return
        limit = int(billing["patterns_limit"])
        pct = self.options.quota_pct if self.options.quota_pct is not None else SERVER_QUOTA_PCT
        cap = int(limit * pct)
        if self.strategy.over_quota(projected, cap):
            assumed = (
                "--quota-pct (quota_pct)"
                if self.options.quota_pct is not None
                else "Engramia's default ENGRAMIA_PROJECT_QUOTA_PCT; the server does not publish its own"
            )
            raise CapacityError(
                f"{where} cannot take {n_new:,} more patterns: the project holds {before:,} and its quota "
                f"is {cap:,} ({pct:.0%} of the plan's {limit:,} patterns, the share from {assumed}; the "
                "server refuses when current + batch >= quota). Nothing was sent. If the server's "
                f"ENGRAMIA_PROJECT_QUOTA_PCT is higher than {pct:g}, pass it as --quota-pct (Dagster: "
                "quota_pct) and run again; otherwise delete patterns, raise the plan's pattern limit (or "
                "the server's ENGRAMIA_PROJECT_QUOTA_PCT), or split the scope."
            )

    def retract(self, to_retract: pl.DataFrame) -> None:
        for row in to_retract.iter_rows(named=True):
            key = row.get("key")
            if not key:
                self.result.notes += f"{row['pattern_id']} no longer kept but its learned key is unknown; "
                continue
            try:
                deleted = self.client.delete_pattern(key)
            except AuthError as exc:
                self.result.notes += (
                    f"retraction refused ({exc.status}): needs admin, or editor for own patterns; "
                )
                return
            reason = "no longer kept" if deleted else "no longer kept (already absent on the server)"
            self.books.commit([Entry(row["pattern_id"], key, Outcome.RETRACTED, reason)])
            if deleted:
                self.result.retracted += 1
                if self.strategy.last_count is not None:
                    # a learn that does not grow the count from here on replaced a near-duplicate
                    self.strategy.last_count -= 1


def compact_ledger(ledger: Ledger) -> None:
    """Fold this load's many small ledger files (one per flush) into one."""
    files = [p for p in parquet_files(ledger.folder) if p.name.startswith(f"run={ledger.run_id}-")]
    if len(files) <= 1:
        return
    rows = pl.concat([pl.read_parquet(p) for p in files], how="vertical_relaxed")
    write_parquet(rows, ledger.folder / f"run={ledger.run_id}-compact-{time.monotonic_ns()}.parquet")
    for p in files:
        p.unlink(missing_ok=True)


def _basis(options: RestOptions) -> str:
    """The plan's basis names the redaction: turning it on or off changes what is sent."""
    return "redacted" if options.redact else "as-is"


def load_rest(
    layout: DataLayout,
    scope: str,
    tenant_id: str,
    project_id: str,
    server: ServerConfig,
    options: RestOptions,
    *,
    progress: Callable[[int], None] | None = None,
    log: Callable[[str], None] | None = None,
    transport: httpx.BaseTransport | None = None,
) -> LoadResult:
    """Load one scope's kept patterns into ``server``; errors end the scope and are in ``result.error``."""
    started = time.perf_counter()
    say = log or (lambda msg: None)
    result = LoadResult(
        scope=scope, destination=options.mode.value, tenant_id=tenant_id, project_id=project_id
    )
    ledger = Ledger(layout, scope, destination_id(server))
    result.ledger_run_id = ledger.run_id
    client = make_client(server, options, f"{scope} -> {server.url}", transport=transport)
    books = LoadBooks(ledger, result, scope, options.mode.value, say, progress)
    job = ScopeLoad(layout, scope, tenant_id, project_id, server, options, client, books)
    try:
        job.run()
    except RestError as exc:
        result.error = explain(exc, scope, tenant_id, project_id, server, options.mode, options.mode.role)
        say(result.error)
        if result.pattern_count_after is None and not isinstance(exc, MissingApiKey):
            with suppress(RestError):
                result.pattern_count_after = client.pattern_count()
    finally:
        try:
            ledger.flush()
            compact_ledger(ledger)
        finally:
            if books.bar is not None:
                books.bar.close()
            client.close()
    if result.error is not None and not result.kept:
        # Stopped before its plan (a server that does not answer, a refused key): what it would have
        # sent is counted, so its figures still add up to what the scope kept.
        plan = plan_load(layout, scope, ledger.in_store(), _basis(options))
        result.kept, result.already_loaded = plan.kept, plan.already
    result.settle_unsent()
    result.ledger_in_store = ledger.in_store().height
    result.requests = client.stats.requests
    result.rate_limited = client.stats.rate_limited
    result.seconds = time.perf_counter() - started
    if result.pattern_count_after is not None and result.ledger_in_store > result.pattern_count_after:
        result.notes += (
            f"ledger says {result.ledger_in_store} patterns are in the store but the server counts "
            f"{result.pattern_count_after} (deleted on the server? a key that may export finds them and "
            "the next load sends them again); "
        )
    counts = f"pattern_count {result.pattern_count_before} -> {result.pattern_count_after}"
    say(f"{scope}: {books.status()}; {counts}")
    return result
