"""The REST destinations: a running Engramia server, over ``/v1`` with httpx.

Two modes, one ledger per scope and server (``dest=rest:<url>``, shared by both modes so a pattern
learned once is never imported again, or the other way round):

``rest-learn``   ``POST /v1/learn``, one pattern per request (editor key). The server applies its own
                 code redaction and (0.7.x) its near-duplicate rule: ``stored: false`` is ``not_stored``.
``rest-import``  ``POST /v1/import`` with deterministic keys ``patterns/<pattern_id>`` and
                 ``overwrite: false`` (admin key), batched by bytes under the body limit, optionally
                 ``Prefer: respond-async`` with ``/v1/jobs/{id}`` polling. Import skips the server's
                 validation and redaction, so the pipeline does both first (it does in both modes).

Exactly once. Before a request the ledger gets an intent row (outcome ``sending``), flushed to disk;
after the answer the outcome row, flushed again. A pattern whose last row is ``sending`` may or may not
be on the server (the client died, or the server died after storing it but before answering). Nothing
uncertain is ever sent again blindly:

* import: keys are deterministic and ``overwrite: false`` makes a repeat harmless; uncertain keys are
  looked up in ``/v1/export`` (an import key is admin, so export is allowed) to tell ``present`` (stored
  by the interrupted run) from "send".
* learn (not idempotent on 0.6.6): the same answer-lost window exists inside a run (read timeout,
  dropped connection, 5xx) and across runs (``sending`` rows). Either way the pattern is looked up on the
  server before it is sent again: in ``/v1/export`` when the key allows it, else with ``/v1/recall``
  (a duplicate-tier match whose task equals the sent task and whose code equals the sent code, or the
  sent code after the server's own redaction). Found means stored; only "not found" is resent.

Learn does not return the key (``patterns/<sha256(task)[:8]>_<ms>``): with an export-capable key the
load reads the keys once at the end (matching task and code); otherwise the ledger keeps the pattern
without a key and :mod:`pipelines.load.rollback` finds it by recall when it is deleted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import httpx
import polars as pl

from pipelines.load.ledger import FAILED, IN_STORE, NOT_STORED, PRESENT, REJECTED, RETRACTED, STORED, Ledger
from pipelines.load.limits import IMPORT_MAX_RECORDS, SCOPE_PATTERN_CAP, split_valid
from pipelines.load.plan import LoadResult, plan_load
from pipelines.load.records import import_record, kept_patterns, learn_payload, pattern_key
from pipelines.load.redaction import redact_frame, redact_series
from pipelines.load.rest.client import (
    AmbiguousRequest,
    AuthError,
    Backoff,
    EngramiaClient,
    JobFailed,
    MissingApiKey,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    RateLimitExhausted,
    Rejected,
    RestError,
    ServerUnavailable,
)
from pipelines.load.rest.servers import ServerConfig
from pipelines.tables import DataLayout, parquet_files, write_parquet

log = logging.getLogger(__name__)

LEARN, IMPORT = "rest-learn", "rest-import"
MODES = (LEARN, IMPORT)
ROLE = {LEARN: "editor", IMPORT: "admin"}
# Intent row written (and flushed) before a request; not in IN_STORE, so the pattern stays "to send"
# until the next run has resolved it against the server.
SENDING = "sending"
DUPLICATE_SIMILARITY = 0.92
ENVELOPE_HEAD = b'{"records":['
ENVELOPE_TAIL = b'],"overwrite":false}'
# Errors after which the pattern in flight was certainly not stored.
_DEFINITE = (AuthError, QuotaExceeded, RateLimitExhausted, MissingApiKey)


@dataclass
class RestOptions:
    mode: str = IMPORT
    redact: bool = True
    validate: bool = True
    timeout: float = 30.0
    requests_per_minute: float = 60.0
    concurrency: int = 1
    async_import: bool = False
    max_body_bytes: int = 1_048_576
    max_batch_records: int = 2_000
    max_retries: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_retry_after: float = 120.0
    rate_limit_budget: float = 900.0
    job_poll: float = 1.0
    job_timeout: float = 900.0
    quota_pct: float = 0.8
    resend_rejected: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown REST mode {self.mode!r}; expected one of {MODES}")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.max_body_bytes < 4_096:
            raise ValueError("max_body_bytes must be at least 4096")

    @property
    def body_budget(self) -> int:
        """Bytes a request body may use: the server's limit minus headroom (5%, at least 1 KiB)."""
        return self.max_body_bytes - max(1_024, self.max_body_bytes // 20)


def destination_id(server: ServerConfig) -> str:
    return f"rest:{server.url}"


def make_client(
    server: ServerConfig,
    options: RestOptions,
    label: str,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> EngramiaClient:
    return EngramiaClient(
        server.url,
        server.api_key_env,
        label=label,
        timeout=options.timeout,
        requests_per_minute=options.requests_per_minute,
        backoff=Backoff(base=options.backoff_base, cap=options.backoff_max, max_retries=options.max_retries),
        max_retry_after=options.max_retry_after,
        rate_limit_budget=options.rate_limit_budget,
        transport=transport,
        sleep=sleep,
    )


def parse_version(text: str | None) -> tuple[int, int, int]:
    nums: list[int] = []
    for part in (text or "").split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        nums.append(int(digits) if digits else 0)
    return tuple(([*nums, 0, 0, 0])[:3])  # type: ignore[return-value]


def encode(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def import_body(encoded_records: list[bytes]) -> bytes:
    return ENVELOPE_HEAD + b",".join(encoded_records) + ENVELOPE_TAIL


def pack_by_bytes(sizes: list[int], budget: int, max_records: int) -> tuple[list[list[int]], list[int]]:
    """Greedy, order-keeping packing of records (by encoded size) into import bodies of at most
    ``budget`` bytes (envelope and commas included) and ``max_records`` records.

    Returns (batches of indices, indices of records that fit no body on their own)."""
    overhead = len(ENVELOPE_HEAD) + len(ENVELOPE_TAIL)
    max_records = max(1, min(max_records, IMPORT_MAX_RECORDS))
    batches: list[list[int]] = []
    oversize: list[int] = []
    current: list[int] = []
    used = overhead
    for i, size in enumerate(sizes):
        if overhead + size > budget:
            oversize.append(i)
            continue
        extra = size + (1 if current else 0)
        if current and (used + extra > budget or len(current) >= max_records):
            batches.append(current)
            current, used, extra = [], overhead, size
        current.append(i)
        used += extra
    if current:
        batches.append(current)
    return batches, oversize


# -- progress --------------------------------------------------------------------------------------


class ProgressBar(Protocol):
    def update(self, n: int = 1) -> Any: ...
    def set_postfix_str(self, s: str = "", refresh: bool = True) -> Any: ...
    def close(self) -> Any: ...


_bar_factory: Callable[[str, int | None], ProgressBar] | None = None


@contextmanager
def progress_bars(factory: Callable[[str, int | None], ProgressBar] | None) -> Iterator[None]:
    """Show a progress bar per scope load while inside (the CLI passes a tqdm factory)."""
    global _bar_factory
    previous, _bar_factory = _bar_factory, factory
    try:
        yield
    finally:
        _bar_factory = previous


def open_bar(desc: str, total: int | None) -> ProgressBar | None:
    return _bar_factory(desc, total) if _bar_factory else None


# -- matching learned patterns on the server -------------------------------------------------------


def task_hash8(task: str) -> str:
    return hashlib.sha256(task.encode()).hexdigest()[:8]


_SERVER_REDACTION: Any = None


def server_redacted_code(code: str) -> str:
    """The code as a 0.6.6 server would store it through /v1/learn (its own redaction pipeline)."""
    global _SERVER_REDACTION
    try:
        if _SERVER_REDACTION is None:
            from engramia.governance.redaction import RedactionPipeline

            _SERVER_REDACTION = RedactionPipeline.default()
        clean, _ = _SERVER_REDACTION.process({"code": code})
        return str(clean.get("code", code))
    except Exception:
        return code


def code_matches(stored: str | None, sent: str) -> bool:
    return stored is not None and (stored == sent or stored == server_redacted_code(sent))


@dataclass(frozen=True)
class Variant:
    """A (task, code) pair a pattern may have been sent as (redacted, and raw when redaction changed it)."""

    task: str
    code: str


def variants(row: dict[str, Any]) -> list[Variant]:
    out = [Variant(row["task"], row["code"])]
    raw = Variant(row.get("task_raw") or row["task"], row.get("code_raw") or row["code"])
    if raw != out[0]:
        out.append(raw)
    return out


def sent_texts(
    layout: DataLayout, scope: str, pattern_ids: list[str], redact: bool
) -> dict[str, dict[str, Any]]:
    """Task and code of patterns as a load sends them (redacted when ``redact``; raw kept as
    ``task_raw``/``code_raw``), from every staged batch so that superseded patterns are found too."""
    files = parquet_files(layout.patterns(scope))
    if not files or not pattern_ids:
        return {}
    df = (
        pl.scan_parquet(files)
        .filter(pl.col("pattern_id").is_in(pattern_ids))
        .select("pattern_id", "task", "code")
        .unique("pattern_id", keep="last")
        .collect()
        .with_columns(task_raw=pl.col("task"), code_raw=pl.col("code"))
    )
    if redact:
        df, _ = redact_frame(df, ["task", "code"])
    return {r["pattern_id"]: r for r in df.iter_rows(named=True)}


class LearnMatcher:
    """Finds learned patterns on the server by task and code: ``/v1/export`` when the key may export
    (read-only, one call for many patterns), else ``/v1/recall`` per pattern (note: a recall bumps the
    returned patterns' reuse_count and score on the server)."""

    def __init__(self, client: EngramiaClient) -> None:
        self.client = client
        self.can_export: bool | None = None
        self._index: dict[str, list[tuple[str, str | None, float]]] | None = None

    def export_index(self, refresh: bool = False) -> dict[str, list[tuple[str, str | None, float]]] | None:
        if self.can_export is False:
            return None
        if self._index is not None and not refresh:
            return self._index
        try:
            records = self.client.export()
        except AuthError:
            self.can_export = False
            return None
        self.can_export = True
        index: dict[str, list[tuple[str, str | None, float]]] = {}
        for rec in records:
            data = rec.get("data") or {}
            design = data.get("design") or {}
            index.setdefault(str(data.get("task")), []).append(
                (rec["key"], design.get("code"), float(data.get("timestamp") or 0))
            )
        self._index = index
        return index

    def find(self, row: dict[str, Any], claimed: set[str], refresh: bool = True) -> str | None:
        index = self.export_index(refresh=refresh)
        if index is not None:
            return self.find_in_index(index, row, claimed)
        return self.find_by_recall(row, claimed)

    @staticmethod
    def find_in_index(index: dict, row: dict[str, Any], claimed: set[str]) -> str | None:
        for v in variants(row):
            hits = [
                (ts, key)
                for key, code, ts in index.get(v.task, [])
                if key not in claimed and code_matches(code, v.code)
            ]
            if hits:
                # The newest one: an identical pattern stored earlier by someone else stays theirs.
                return max(hits)[1]
        return None

    def find_by_recall(self, row: dict[str, Any], claimed: set[str]) -> str | None:
        for v in variants(row):
            try:
                body = self.client.recall(v.task, limit=50)
            except Rejected:  # e.g. a task over the server's limit: it cannot have been stored either
                continue
            for m in body.get("matches") or []:
                pattern = m.get("pattern") or {}
                similar = (
                    m.get("reuse_tier") == "duplicate"
                    or float(m.get("similarity") or 0) >= DUPLICATE_SIMILARITY
                )
                key = m.get("pattern_key")
                if (
                    similar
                    and key not in claimed
                    and pattern.get("task") == v.task
                    and code_matches(pattern.get("code"), v.code)
                ):
                    return key
        return None


# -- one scope -------------------------------------------------------------------------------------


@dataclass
class _Outcome:
    pattern_id: str
    key: str | None
    outcome: str
    reason: str | None = None
    # the LoadResult counter to add to when it is not the outcome's own (e.g. a 0.7.x learn that
    # replaced a near-duplicate is in the store, but did not add to pattern_count)
    tally: str | None = None


@dataclass
class _ScopeLoad:
    layout: DataLayout
    scope: str
    tenant_id: str
    project_id: str
    server: ServerConfig
    options: RestOptions
    client: EngramiaClient
    ledger: Ledger
    result: LoadResult
    say: Callable[[str], None]
    progress: Callable[[int], None] | None = None
    version: tuple[int, int, int] = (0, 0, 0)
    total: int = 0
    bar: ProgressBar | None = None
    started: float = field(default_factory=time.perf_counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _last_log: float = field(default_factory=time.monotonic)
    _last_count: int | None = None

    # ledger and counters (thread-safe; every call flushes)

    def commit(self, outcomes: list[_Outcome], sent: int = 0) -> None:
        with self._lock:
            for o in outcomes:
                self.ledger.record(o.pattern_id, o.key, o.outcome, o.reason)
                if o.tally:
                    setattr(self.result, o.tally, getattr(self.result, o.tally) + 1)
                elif o.outcome == STORED:
                    self.result.stored += 1
                elif o.outcome == PRESENT:
                    self.result.present += 1
                elif o.outcome == REJECTED:
                    self.result.rejected += 1
                    self.result.rejections.append({"pattern_id": o.pattern_id, "reason": o.reason})
                elif o.outcome == NOT_STORED:
                    self.result.not_stored += 1
                elif o.outcome == FAILED:
                    self.result.failed += 1
            self.result.sent += sent
            self.ledger.flush()
        if sent:
            self.tick(sent)

    def intend(self, rows: list[dict[str, Any]], keys: list[str | None]) -> None:
        with self._lock:
            for row, key in zip(rows, keys, strict=True):
                reason = f"{self.options.mode}; task sha8 {task_hash8(row['task'])}"
                self.ledger.record(row["pattern_id"], key, SENDING, reason)
            self.ledger.flush()

    def tick(self, n: int) -> None:
        if self.progress:
            self.progress(n)
        if self.bar:
            self.bar.update(n)
            self.bar.set_postfix_str(self.status(short=True), refresh=False)
        if time.monotonic() - self._last_log >= 10:
            self._last_log = time.monotonic()
            self.say(f"{self.scope}: {self.status()}")

    def status(self, short: bool = False) -> str:
        r = self.result
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        if short:
            return f"stored {r.stored} skipped {r.skipped} rejected {r.rejected}"
        return (
            f"sent {r.sent}/{self.total}, stored {r.stored}, present {r.present}, skipped {r.skipped}, "
            f"rejected {r.rejected}, not_stored {r.not_stored}, {r.sent / elapsed:.1f} patterns/s"
        )

    # steps

    def run(self) -> None:
        info = self.client.version()
        app_version = str(info.get("app_version") or "?")
        self.version = parse_version(app_version)
        self.result.server_version = f"engramia {app_version} (api {info.get('api_version') or '?'})"
        self.check_storage()
        before = self.client.pattern_count()
        self.result.pattern_count_before = before
        self._last_count = before
        self.probe_permission()
        plan = plan_load(self.layout, self.scope, self.ledger)
        self.result.kept, self.result.already_loaded = plan.kept, plan.already
        frame = self.prepare(plan.to_send)
        frame = self.resolve_uncertain(frame, before)
        self.check_capacity(before, frame.height, plan.to_retract.height)
        self.retract(plan.to_retract)
        self.total = frame.height
        self.bar = open_bar(self.scope, self.total) if self.progress is None else None
        if self.total:
            self.say(
                f"{self.scope}: sending {self.total} patterns to {self.server.url} ({self.options.mode})"
            )
        rows = frame.to_dicts()
        if self.options.mode == LEARN:
            self.send_learn(rows)
        else:
            self.send_import(rows)
        self.result.pattern_count_after = self.client.pattern_count()
        if self.options.mode == LEARN:
            self.capture_learn_keys()

    def check_storage(self) -> None:
        """JSON storage is not safe with concurrent writers: against it, load one request at a time."""
        try:
            health = self.client.get("/v1/health") or {}
        except NotFound:
            return
        storage = str(health.get("storage") or "")
        if storage == "JSONStorage" and self.options.concurrency > 1:
            self.say(
                f"{self.scope}: the server stores patterns in JSON files, which concurrent writers corrupt; "
                f"loading with concurrency 1 instead of {self.options.concurrency}"
            )
            self.options = replace(self.options, concurrency=1)

    def probe_permission(self) -> None:
        """An empty body to the write endpoint: the role check runs before body validation, so 403
        means the key lacks the role and 422 means it has it. Nothing can be stored."""
        path = "/v1/learn" if self.options.mode == LEARN else "/v1/import"
        try:
            self.client.request("POST", path, json={})
        except Rejected:
            return

    def prepare(self, to_send: pl.DataFrame) -> pl.DataFrame:
        if to_send.is_empty() or "task" not in to_send.columns:
            return to_send.clear() if "task" in to_send.columns else pl.DataFrame()
        state = self.ledger.state().select(
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
                self.say(f"{self.scope}: redacted {self.result.redacted} items before sending: {counts}")
        if self.options.validate:
            frame, invalid = split_valid(frame)
            outcomes = []
            for row in invalid.iter_rows(named=True):
                reason = f"pipeline: {row['invalid_reason']} (server limit)"
                if row["prev_outcome"] == REJECTED and row["prev_reason"] == reason:
                    self.result.rejected += 1
                    self.result.rejections.append({"pattern_id": row["pattern_id"], "reason": reason})
                else:
                    outcomes.append(_Outcome(row["pattern_id"], self.key_for(row), REJECTED, reason))
            if outcomes:
                self.commit(outcomes)
        # answers the server gave (its 422s, 0.7.x stored:false) are not asked again; the pipeline's own
        # rejections are re-validated every run (the settings may have changed)
        answered = (
            (pl.col("prev_outcome") == NOT_STORED)
            | ((pl.col("prev_outcome") == REJECTED) & pl.col("prev_reason").str.starts_with("server:"))
        ).fill_null(False)
        if not self.options.resend_rejected:
            skipped = frame.filter(answered)
            if skipped.height:
                self.result.skipped += skipped.height
                self.say(
                    f"{self.scope}: {skipped.height} patterns skipped: the server already answered "
                    "rejected/not_stored (resend_rejected=true sends them again)"
                )
            frame = frame.filter(~answered)
        return frame

    def key_for(self, row: dict[str, Any]) -> str | None:
        return pattern_key(row["pattern_id"]) if self.options.mode == IMPORT else None

    def claimed_keys(self) -> set[str]:
        state = self.ledger.in_store()
        return {k for k in state["key"].to_list() if k}

    def resolve_uncertain(self, frame: pl.DataFrame, before: int) -> pl.DataFrame:
        """Patterns whose last ledger row is ``sending`` (and, when the server holds more patterns than
        the ledger accounts for, every pattern to send) are looked up on the server first."""
        if frame.is_empty():
            return frame
        uncertain = frame.filter(pl.col("prev_outcome") == SENDING)
        unaccounted = before > self.ledger.in_store().height
        if uncertain.is_empty() and not unaccounted:
            return frame
        found: list[_Outcome] = []
        if self.options.mode == IMPORT:
            try:
                keys = {r["key"] for r in self.client.export()}
            except AuthError:
                keys = set()
                self.say(
                    f"{self.scope}: cannot read /v1/export with this key; uncertain patterns are re-imported "
                    "(import is idempotent: overwrite=false)"
                )
            for row in frame.iter_rows(named=True):
                key = pattern_key(row["pattern_id"])
                if key in keys:
                    why = (
                        "stored by an interrupted run"
                        if row["prev_outcome"] == SENDING
                        else "key already on the server"
                    )
                    found.append(_Outcome(row["pattern_id"], key, PRESENT, why))
        else:
            matcher = LearnMatcher(self.client)
            index = matcher.export_index()
            candidates = frame if (index is not None and unaccounted) else uncertain
            claimed = self.claimed_keys()
            for row in candidates.iter_rows(named=True):
                if index is not None:
                    key = matcher.find_in_index(index, row, claimed)
                else:
                    key = matcher.find_by_recall(row, claimed)
                if key:
                    claimed.add(key)
                    why = (
                        "stored by an interrupted run"
                        if row["prev_outcome"] == SENDING
                        else "same task and code on the server"
                    )
                    found.append(_Outcome(row["pattern_id"], key, PRESENT, f"{why}; key found on the server"))
        if found:
            self.commit(found)
            self.say(f"{self.scope}: {len(found)} patterns already on the server (not sent again)")
        done = [o.pattern_id for o in found]
        return frame.filter(~pl.col("pattern_id").is_in(done))

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
        cap = int(limit * self.options.quota_pct)
        # The server refuses when current + batch >= cap (import); learn checks current >= cap first.
        too_many = projected >= cap if self.options.mode == IMPORT else projected > cap
        if too_many:
            raise CapacityError(
                f"{where} cannot take {n_new:,} more patterns: the project holds {before:,} and its quota "
                f"is {cap:,} ({self.options.quota_pct:.0%} of the plan's {limit:,}; the server refuses when "
                "current + batch >= quota). Nothing was sent. Delete patterns, raise the plan's pattern "
                "limit (or ENGRAMIA_PROJECT_QUOTA_PCT on a self-hosted server), or split the scope."
            )

    def retract(self, to_retract: pl.DataFrame) -> None:
        if to_retract.is_empty():
            return
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
            self.commit([_Outcome(row["pattern_id"], key, RETRACTED, reason)])
            if deleted:
                self.result.retracted += 1

    # learn

    def send_learn(self, rows: list[dict[str, Any]]) -> None:
        budget = self.options.body_budget
        matcher = LearnMatcher(self.client)
        sendable = []
        for row in rows:
            body = encode(learn_payload(row))
            if len(body) > budget:
                self.commit(
                    [
                        _Outcome(
                            row["pattern_id"],
                            None,
                            REJECTED,
                            f"pipeline: learn body of {len(body):,} bytes is over the body limit "
                            f"({self.options.max_body_bytes:,} bytes less headroom)",
                        )
                    ]
                )
                continue
            sendable.append((row, body))

        def start(item: tuple[dict, bytes]) -> None:
            self.intend([item[0]], [None])

        def work(item: tuple[dict, bytes]) -> list[_Outcome]:
            return [self.learn_one(item[0], item[1], matcher)]

        def done(item: tuple[dict, bytes], outcomes: list[_Outcome]) -> None:
            self.commit(outcomes, sent=1)

        self.pipelined(sendable, start, work, done)

    def learn_one(self, row: dict[str, Any], body: bytes, matcher: LearnMatcher) -> _Outcome:
        pid = row["pattern_id"]
        stored_reason = f"learn; key prefix patterns/{task_hash8(row['task'])}_"
        attempts = 0
        while True:
            try:
                reply = self.client.request("POST", "/v1/learn", content=body, idempotent=False)
            except AmbiguousRequest as exc:
                self.say(f"{self.scope}: {pid}: {exc}; checking the server before sending it again")
                if exc.reason == "timeout":
                    # a slow server may still store it: give the request time to finish before looking
                    time.sleep(self.options.timeout)
                key = matcher.find(row, self.claimed_keys())
                if key:
                    return _Outcome(pid, key, STORED, f"{stored_reason}; answer lost, found on the server")
                attempts += 1
                if attempts > self.options.max_retries:
                    raise ServerUnavailable(f"{exc}; not stored after {attempts} attempts") from None
                time.sleep(self.client.backoff.delay(attempts))
                continue
            except Rejected as exc:
                return _Outcome(pid, None, REJECTED, f"server: {exc.reason or exc}")
            except PayloadTooLarge as exc:
                return _Outcome(pid, None, REJECTED, f"server: body over the limit ({exc.reason or exc})")
            answer = reply.body if isinstance(reply.body, dict) else {}
            if answer.get("stored", True) is False:
                return _Outcome(
                    pid,
                    None,
                    NOT_STORED,
                    "server: an existing near-duplicate has an equal or higher score (0.7.x)",
                )
            count = answer.get("pattern_count")
            if (
                self.version >= (0, 7, 0)
                and self.options.concurrency == 1
                and isinstance(count, int)
                and self._last_count is not None
                and count <= self._last_count
            ):
                self._last_count = count
                return _Outcome(
                    pid, None, STORED, f"{stored_reason}; replaced a near-duplicate (0.7.x)", tally="replaced"
                )
            if isinstance(count, int):
                self._last_count = count
            return _Outcome(pid, None, STORED, stored_reason)

    def capture_learn_keys(self) -> None:
        """Learn does not return the key: read the keys of every learned pattern the ledger holds without
        one (this run's and earlier runs') from /v1/export, when the key may export (admin)."""
        missing = self.ledger.in_store().filter(pl.col("key").is_null())
        if missing.is_empty():
            return
        matcher = LearnMatcher(self.client)
        index = matcher.export_index()
        if index is None:
            self.result.notes += (
                f"{missing.height} learned keys unknown (the key cannot export); "
                "rollback finds them by recall; "
            )
            return
        texts = sent_texts(self.layout, self.scope, missing["pattern_id"].to_list(), self.options.redact)
        claimed = self.claimed_keys()
        found = []
        for row in missing.iter_rows(named=True):
            text = texts.get(row["pattern_id"])
            key = matcher.find_in_index(index, text, claimed) if text else None
            if key:
                claimed.add(key)
                reason = f"{row['reason'] or row['outcome']}; key from /v1/export"
                found.append(_Outcome(row["pattern_id"], key, row["outcome"], reason))
        if found:
            with self._lock:
                for o in found:
                    self.ledger.record(o.pattern_id, o.key, o.outcome, o.reason)
                self.ledger.flush()

    # import

    def send_import(self, rows: list[dict[str, Any]]) -> None:
        encoded = [encode(import_record(row, self.tenant_id, self.project_id)) for row in rows]
        batches, oversize = pack_by_bytes(
            [len(e) for e in encoded], self.options.body_budget, self.options.max_batch_records
        )
        if oversize:
            self.commit(
                [
                    _Outcome(
                        rows[i]["pattern_id"],
                        pattern_key(rows[i]["pattern_id"]),
                        REJECTED,
                        f"pipeline: import record of {len(encoded[i]):,} bytes does not fit a request body "
                        f"(max_body_bytes {self.options.max_body_bytes:,} less headroom)",
                    )
                    for i in oversize
                ]
            )
        items = [[(rows[i], encoded[i]) for i in batch] for batch in batches]

        def start(batch: list[tuple[dict, bytes]]) -> None:
            self.intend([r for r, _ in batch], [pattern_key(r["pattern_id"]) for r, _ in batch])

        def work(batch: list[tuple[dict, bytes]]) -> list[_Outcome]:
            return self.import_batch(batch)

        def done(batch: list[tuple[dict, bytes]], outcomes: list[_Outcome]) -> None:
            self.commit(outcomes, sent=len(batch))

        self.pipelined(items, start, work, done)

    def import_batch(self, batch: list[tuple[dict, bytes]]) -> list[_Outcome]:
        """One body; on 413 split it in halves, on 422 bisect down to the refused record."""
        keys = [pattern_key(r["pattern_id"]) for r, _ in batch]
        try:
            imported, ambiguous = self.post_import([e for _, e in batch])
        except PayloadTooLarge as exc:
            if len(batch) == 1:
                return [
                    _Outcome(
                        batch[0][0]["pattern_id"],
                        keys[0],
                        REJECTED,
                        f"server: record of {len(batch[0][1]):,} bytes over the body limit ({exc.reason})",
                    )
                ]
            self.say(f"{self.scope}: 413 for {len(batch)} records; splitting the batch")
            return self._halves(batch)
        except Rejected as exc:
            if len(batch) == 1:
                return [
                    _Outcome(batch[0][0]["pattern_id"], keys[0], REJECTED, f"server: {exc.reason or exc}")
                ]
            return self._halves(batch)
        n = len(batch)
        if imported == n or ambiguous:
            # all new (pre-existing keys were found before sending), or an earlier attempt of this very
            # request was applied: every key is on the server now, stored by this load
            return [_Outcome(r["pattern_id"], k, STORED) for (r, _), k in zip(batch, keys, strict=True)]
        # Some keys were there already although the ledger and the export check said otherwise (another
        # writer). Which ones cannot be told afterwards: all are recorded in the store (they are), and the
        # counts say how many were new, so pattern_count still reconciles.
        note = f"import: {imported} of {n} records new in this request, {n - imported} already on the server"
        return [
            _Outcome(r["pattern_id"], k, STORED, note, tally=None if i < imported else "present")
            for i, ((r, _), k) in enumerate(zip(batch, keys, strict=True))
        ]

    def _halves(self, batch: list[tuple[dict, bytes]]) -> list[_Outcome]:
        mid = len(batch) // 2
        return self.import_batch(batch[:mid]) + self.import_batch(batch[mid:])

    def post_import(self, encoded: list[bytes]) -> tuple[int, bool]:
        body = import_body(encoded)
        headers = {"Prefer": "respond-async"} if self.options.async_import else None
        ambiguous = False
        # 0.7.x embeds every imported task (one embedding call per record): give big batches time
        timeout = self.options.timeout
        if self.version >= (0, 7, 0):
            timeout = max(timeout, 0.25 * len(encoded))
        for attempt in range(self.options.max_retries + 1):
            reply = self.client.request("POST", "/v1/import", content=body, headers=headers, timeout=timeout)
            ambiguous = ambiguous or reply.retried_ambiguous
            if reply.status != 202:
                return int(reply.body["imported"]), ambiguous
            job_id = reply.body["job_id"]
            try:
                result = self.client.wait_for_job(
                    job_id, poll=self.options.job_poll, timeout=self.options.job_timeout
                )
                return int(result.get("imported", 0)), ambiguous
            except JobFailed as exc:
                # a job may fail half-way: resubmit (overwrite=false makes it harmless)
                ambiguous = True
                self.say(f"{self.scope}: {exc}; resubmitting ({attempt + 1}/{self.options.max_retries})")
                time.sleep(self.client.backoff.delay(attempt + 1))
        raise ServerUnavailable(f"{self.client.label}: import job kept failing")

    # concurrency

    def pipelined(
        self,
        items: list[Any],
        start: Callable[[Any], None],
        work: Callable[[Any], list[_Outcome]],
        done: Callable[[Any, list[_Outcome]], None],
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
        with ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="engramia-load") as pool:
            inflight: dict[Future, Any] = {}

            def submit() -> None:
                item = next(pending, None)
                if item is not None:
                    start(item)
                    inflight[pool.submit(work, item)] = item

            for _ in range(self.options.concurrency):
                submit()
            while inflight:
                finished, _ = wait(inflight, return_when=FIRST_COMPLETED)
                for fut in finished:
                    item = inflight.pop(fut)
                    try:
                        done(item, fut.result())
                    except Exception as exc:
                        self.fail(item, exc)
                        error = error or exc
                    if error is None:
                        submit()
        if error is not None:
            raise error

    def fail(self, item: Any, exc: BaseException) -> None:
        """A request that certainly stored nothing is recorded ``failed``; an uncertain one keeps its
        ``sending`` row for the next run to resolve."""
        if not isinstance(exc, _DEFINITE):
            return
        rows = [r for r, _ in item] if isinstance(item, list) else [item[0]]
        self.commit(
            [
                _Outcome(r["pattern_id"], self.key_for(r), FAILED, f"{type(exc).__name__}: not stored")
                for r in rows
            ]
        )


class CapacityError(RestError):
    """The load cannot fit the scope's quota or cap; raised before anything is sent."""


def explain(
    exc: BaseException, scope: str, tenant_id: str, project_id: str, server: ServerConfig, mode: str
) -> str:
    where = f"scope {scope} ({tenant_id}/{project_id}) at {server.url}"
    role = ROLE.get(mode, "editor")
    env = f"${server.api_key_env}"
    if isinstance(exc, AuthError):
        why = exc.reason or exc.error_code
        if exc.status == 401:
            return (
                f"{where}: the server did not accept the API key in {env} (HTTP 401: {why}). Put a valid "
                f"key for this scope's project in {env}; {mode} needs a key with the '{role}' role. "
                "Nothing was stored."
            )
        return (
            f"{where}: the API key in {env} lacks the permission (HTTP 403: {why}). {mode} needs a key "
            f"with the '{role}' role (or higher). Nothing was stored by this request."
        )
    if isinstance(exc, QuotaExceeded):
        return (
            f"{where}: the server's pattern quota is full (429 QUOTA_EXCEEDED: {exc.reason}). Sending "
            "stopped. Delete patterns in this project, raise the plan's pattern limit (self-hosted: "
            "ENGRAMIA_PROJECT_QUOTA_PCT), or split the scope, then re-run: stored patterns are in the "
            "ledger and are not sent again."
        )
    if isinstance(exc, CapacityError | MissingApiKey):
        return f"{where}: {exc}"
    if isinstance(exc, RateLimitExhausted):
        return f"{where}: {exc}. Re-run to resume."
    if isinstance(exc, ServerUnavailable | AmbiguousRequest):
        return (
            f"{where}: {exc}. Re-run to resume: stored patterns are in the ledger, and patterns whose "
            "answer was lost are looked up on the server before anything is sent again."
        )
    return f"{where}: {type(exc).__name__}: {exc}"


def compact_ledger(ledger: Ledger) -> None:
    """Fold this load's many small ledger files (one per flush) into one."""
    files = [p for p in parquet_files(ledger.folder) if p.name.startswith(f"run={ledger.run_id}-")]
    if len(files) <= 1:
        return
    rows = pl.concat([pl.read_parquet(p) for p in files], how="vertical_relaxed")
    write_parquet(rows, ledger.folder / f"run={ledger.run_id}-compact-{time.monotonic_ns()}.parquet")
    for p in files:
        p.unlink(missing_ok=True)


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
    result = LoadResult(scope=scope, destination=options.mode, tenant_id=tenant_id, project_id=project_id)
    ledger = Ledger(layout, scope, destination_id(server))
    client = make_client(server, options, f"{scope} -> {server.url}", transport=transport)
    job = _ScopeLoad(
        layout, scope, tenant_id, project_id, server, options, client, ledger, result, say, progress
    )
    try:
        job.run()
    except RestError as exc:
        result.error = explain(exc, scope, tenant_id, project_id, server, options.mode)
        say(result.error)
        if result.pattern_count_after is None and not isinstance(exc, MissingApiKey):
            with suppress(RestError):
                result.pattern_count_after = client.pattern_count()
    finally:
        try:
            ledger.flush()
            compact_ledger(ledger)
        finally:
            if job.bar is not None:
                job.bar.close()
            client.close()
    result.ledger_in_store = ledger.in_store().height
    result.requests = client.stats.requests
    result.rate_limited = client.stats.rate_limited
    result.seconds = time.perf_counter() - started
    if result.pattern_count_after is not None and result.ledger_in_store > result.pattern_count_after:
        result.notes += (
            f"ledger says {result.ledger_in_store} patterns are in the store but the server counts "
            f"{result.pattern_count_after} (deleted on the server?); "
        )
    counts = f"pattern_count {result.pattern_count_before} -> {result.pattern_count_after}"
    say(f"{scope}: {job.status()}; {counts}")
    return result


# -- reading back ----------------------------------------------------------------------------------


def pattern_count_rest(server: ServerConfig, options: RestOptions, label: str = "") -> int:
    with make_client(server, options, label or server.url) as client:
        return client.pattern_count()


def recall_check_rest(
    layout: DataLayout,
    scope: str,
    server: ServerConfig,
    options: RestOptions,
    tasks: pl.Series,
    keys: pl.Series,
    transport: httpx.BaseTransport | None = None,
) -> list[dict]:
    """Recall each task as it was sent and report whether ITS pattern came back as a duplicate-tier match
    (recall pads results with unrelated matches at similarity 0; on the server each returned pattern's
    reuse_count and score go up, so keep the sample small)."""
    state = {
        r["pattern_id"]: r
        for r in Ledger(layout, scope, destination_id(server)).state().iter_rows(named=True)
    }
    kept = kept_patterns(layout, scope)
    ids = [k.removeprefix("patterns/") for k in keys.to_list()]
    codes: dict[str, str] = {}
    if kept is not None and ids:
        df = kept.filter(pl.col("pattern_id").is_in(ids)).select("pattern_id", "code").collect()
        if options.redact:
            df = df.with_columns(code=redact_series(df["code"]))
        codes = dict(df.iter_rows())
    sent_tasks = redact_series(tasks) if options.redact else tasks
    out = []
    with make_client(server, options, f"{scope} -> {server.url}", transport=transport) as client:
        for task, pid, key in zip(sent_tasks.to_list(), ids, keys.to_list(), strict=True):
            row = state.get(pid)
            if row is None or row["outcome"] not in IN_STORE:
                out.append(
                    {
                        "key": key,
                        "found": False,
                        "similarity": None,
                        "reuse_tier": None,
                        "note": f"not loaded ({row['outcome'] if row else 'never sent'})",
                    }
                )
                continue
            expected = row["key"]
            hit = None
            for m in client.recall(task, limit=5).get("matches") or []:
                pattern = m.get("pattern") or {}
                if expected:
                    right = m.get("pattern_key") == expected
                else:
                    right = pattern.get("task") == task and code_matches(
                        pattern.get("code"), codes.get(pid, "")
                    )
                if right:
                    hit = m
                    break
            similarity = None if hit is None else float(hit.get("similarity") or 0)
            out.append(
                {
                    "key": expected or key,
                    "found": hit is not None
                    and (hit.get("reuse_tier") == "duplicate" or similarity >= DUPLICATE_SIMILARITY),
                    "similarity": similarity,
                    "reuse_tier": None if hit is None else hit.get("reuse_tier"),
                }
            )
    return out
