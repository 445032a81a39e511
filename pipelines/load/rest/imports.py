"""``rest-import``: ``POST /v1/import`` with deterministic keys ``patterns/<pattern_id>`` (admin key).

Records are batched by bytes under the body limit (:mod:`pipelines.load.rest.batching`), optionally
with ``Prefer: respond-async`` and ``/v1/jobs/{id}`` polling. Import skips the server's validation and
redaction, so the pipeline does both before (it does in both modes).

Invariant: every body of new patterns says ``overwrite: false``, so sending a record again is harmless:
uncertain keys are looked up in ``/v1/export`` to tell ``present`` (stored by an interrupted run) from
"send", and a failed async job is simply resubmitted. Patterns whose score or text changed go in bodies
of their own with ``overwrite: true`` (a body is all-new or all-update), counted ``updated``; they get
no intent row, because rewriting a key with the same record is just as harmless: until the answer the
ledger keeps saying the old content is stored, and an interrupted update is simply made again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import polars as pl

from pipelines.load.ledger import Outcome
from pipelines.load.records import import_record, pattern_key
from pipelines.load.rest.batching import encode, import_body, pack_by_bytes
from pipelines.load.rest.books import Entry
from pipelines.load.rest.client import EngramiaClient
from pipelines.load.rest.errors import (
    AuthError,
    JobFailed,
    NotFound,
    PayloadTooLarge,
    Rejected,
    ServerUnavailable,
)
from pipelines.load.rest.options import RestMode
from pipelines.load.rest.strategy import SendStrategy

JOB_DONE = ("completed",)
JOB_FAILED = ("failed", "cancelled", "expired")

Batch = list[tuple[dict[str, Any], bytes]]


def wait_for_job(client: EngramiaClient, job_id: str, poll: float = 1.0, timeout: float = 900.0) -> dict:
    """Poll ``/v1/jobs/{id}`` until it completes; the job's ``result``."""
    deadline = time.monotonic() + timeout
    interval = poll
    while True:
        try:
            job = client.get(f"/v1/jobs/{job_id}") or {}
        except NotFound:
            raise JobFailed(f"{client.label}: job {job_id} is gone (server restarted?)") from None
        status = job.get("status")
        if status in JOB_DONE:
            return job.get("result") or {}
        if status in JOB_FAILED:
            raise JobFailed(
                f"{client.label}: job {job_id} {status}: {str(job.get('error') or '')[:300]}",
                reason=str(job.get("error") or status),
            )
        if time.monotonic() > deadline:
            raise JobFailed(f"{client.label}: job {job_id} still {status} after {timeout:.0f}s")
        client.sleep(interval)
        interval = min(interval * 1.5, 5.0)


@dataclass
class ImportStrategy(SendStrategy):
    mode: ClassVar[RestMode] = RestMode.IMPORT
    write_path: ClassVar[str] = "/v1/import"
    updates_in_place: ClassVar[bool] = True

    def key_for(self, row: dict[str, Any]) -> str | None:
        return pattern_key(row["pattern_id"])

    def find_on_server(self, frame: pl.DataFrame, uncertain: pl.DataFrame, unaccounted: bool) -> list[Entry]:
        try:
            keys = {r["key"] for r in self.client.export()}
        except AuthError:
            keys = set()
            self.books.say(
                f"{self.scope}: cannot read /v1/export with this key; uncertain patterns are re-imported "
                "(import is idempotent: overwrite=false)"
            )
        found: list[Entry] = []
        for row in frame.iter_rows(named=True):
            key = pattern_key(row["pattern_id"])
            if key in keys:
                why = (
                    "stored by an interrupted run"
                    if row["prev_outcome"] == Outcome.SENDING
                    else "key already on the server"
                )
                found.append(Entry(row["pattern_id"], key, Outcome.PRESENT, why))
        return found

    def over_quota(self, projected: int, quota: int) -> bool:
        # the server refuses an import when current + batch >= quota
        return projected >= quota

    def send(self, rows: list[dict[str, Any]]) -> None:
        fresh = [r for r in rows if not r.get("update")]
        changed = [r for r in rows if r.get("update")]
        items = self.batches(fresh) + self.batches(changed)

        def start(batch: Batch) -> None:
            if not _rewrites(batch):
                self.books.intend([r for r, _ in batch], [pattern_key(r["pattern_id"]) for r, _ in batch])

        def done(batch: Batch, outcomes: list[Entry]) -> None:
            self.books.commit(outcomes, sent=len(batch))

        self.pipelined(items, start, self.import_batch, done)

    def batches(self, rows: list[dict[str, Any]]) -> list[Batch]:
        """Rows packed into bodies by bytes; a record that fits no body is rejected (a changed one keeps
        its old content on the server, noted)."""
        encoded = [encode(import_record(row, self.tenant_id, self.project_id)) for row in rows]
        packed, oversize = pack_by_bytes(
            [len(e) for e in encoded], self.options.body_budget, self.options.max_batch_records
        )
        why = (
            "import record of {size:,} bytes does not fit a request body "
            f"(max_body_bytes {self.options.max_body_bytes:,} less headroom)"
        )
        too_big = [i for i in oversize if not rows[i].get("update")]
        if too_big:
            self.books.commit(
                [
                    Entry(
                        rows[i]["pattern_id"],
                        pattern_key(rows[i]["pattern_id"]),
                        Outcome.REJECTED,
                        "pipeline: " + why.format(size=len(encoded[i])),
                    )
                    for i in too_big
                ]
            )
        for i in oversize:
            if rows[i].get("update"):
                self.books.result.notes += (
                    f"{rows[i]['pattern_id']} changed but not rewritten: "
                    + why.format(size=len(encoded[i]))
                    + "; "
                )
        return [[(rows[i], encoded[i]) for i in batch] for batch in packed]

    def import_batch(self, batch: Batch) -> list[Entry]:
        """One body; on 413 split it in halves, on 422 bisect down to the refused record."""
        keys = [pattern_key(r["pattern_id"]) for r, _ in batch]
        rewrite = _rewrites(batch)
        try:
            imported, ambiguous = self.post_import([e for _, e in batch], overwrite=rewrite)
        except PayloadTooLarge as exc:
            if len(batch) == 1:
                why = f"server: record of {len(batch[0][1]):,} bytes over the body limit ({exc.reason})"
                return self._refused(batch[0][0], keys[0], why)
            self.books.say(f"{self.scope}: 413 for {len(batch)} records; splitting the batch")
            return self._halves(batch)
        except Rejected as exc:
            if len(batch) == 1:
                return self._refused(batch[0][0], keys[0], f"server: {exc.reason or exc}")
            return self._halves(batch)
        n = len(batch)
        if rewrite:
            # overwrite=true counts every record it wrote; the key (and pattern_count) stay as they were
            if imported != n:
                raise ServerUnavailable(
                    f"{self.client.label}: import rewrote {imported} of {n} changed records"
                )
            return [
                Entry(r["pattern_id"], k, Outcome.STORED, "updated: score or text changed", tally="updated")
                for (r, _), k in zip(batch, keys, strict=True)
            ]
        if imported == n or ambiguous:
            # all new (pre-existing keys were found before sending), or an earlier attempt of this very
            # request was applied: every key is on the server now, stored by this load
            return [Entry(r["pattern_id"], k, Outcome.STORED) for (r, _), k in zip(batch, keys, strict=True)]
        # Some keys were there already although the ledger and the export check said otherwise (another
        # writer). Which ones cannot be told afterwards: all are recorded in the store (they are), and the
        # counts say how many were new, so pattern_count still reconciles.
        note = f"import: {imported} of {n} records new in this request, {n - imported} already on the server"
        return [
            Entry(r["pattern_id"], k, Outcome.STORED, note, tally=None if i < imported else "present")
            for i, ((r, _), k) in enumerate(zip(batch, keys, strict=True))
        ]

    def _refused(self, row: dict[str, Any], key: str, reason: str) -> list[Entry]:
        if row.get("update"):
            # the server keeps the old content under the key, and the ledger keeps saying so
            self.books.result.notes += f"{row['pattern_id']} changed but not rewritten ({reason}); "
            return []
        return [Entry(row["pattern_id"], key, Outcome.REJECTED, reason)]

    def _halves(self, batch: Batch) -> list[Entry]:
        mid = len(batch) // 2
        return self.import_batch(batch[:mid]) + self.import_batch(batch[mid:])

    def post_import(self, encoded: list[bytes], overwrite: bool = False) -> tuple[int, bool]:
        body = import_body(encoded, overwrite)
        headers = {"Prefer": "respond-async"} if self.options.async_import else None
        ambiguous = False
        # A server may embed every imported task (0.7.x does: one embedding call per record, whatever
        # its version string says): give big batches time. It only lengthens the longest wait.
        timeout = max(self.options.timeout, 0.25 * len(encoded))
        for attempt in range(self.options.max_retries + 1):
            reply = self.client.request(
                "POST", self.write_path, content=body, headers=headers, timeout=timeout
            )
            ambiguous = ambiguous or reply.retried_ambiguous
            if reply.status != 202:
                return int(reply.body["imported"]), ambiguous
            try:
                result = wait_for_job(
                    self.client,
                    reply.body["job_id"],
                    poll=self.options.job_poll,
                    timeout=self.options.job_timeout,
                )
                return int(result.get("imported", 0)), ambiguous
            except JobFailed as exc:
                # a job may fail half-way: resubmit (overwrite=false makes it harmless)
                ambiguous = True
                self.books.say(
                    f"{self.scope}: {exc}; resubmitting ({attempt + 1}/{self.options.max_retries})"
                )
                self.client.sleep(self.client.backoff.delay(attempt + 1))
        raise ServerUnavailable(f"{self.client.label}: import job kept failing")


def _rewrites(batch: Batch) -> bool:
    """Whether a body rewrites changed patterns (bodies are never mixed, see ``send``)."""
    return bool(batch) and bool(batch[0][0].get("update"))
