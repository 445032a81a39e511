"""``rest-learn``: ``POST /v1/learn``, one pattern per request (editor key).

The server applies its own code redaction and (0.7.x) its near-duplicate rule: ``stored: false`` is
``not_stored``. Learn is not idempotent on 0.6.6 and does not return the key it stored the pattern
under (``patterns/<sha256(task)[:8]>_<ms>``).

Invariant: a pattern whose answer was lost, in this run (read timeout, dropped connection, 5xx) or an
earlier one (``sending`` rows), is looked up on the server (:class:`LearnMatcher`) before it is sent
again; only "not found" is resent. With an export-capable key the keys are read once at the end;
otherwise the ledger keeps the pattern without a key and rollback finds it by recall.

A pattern whose score or text changed cannot be rewritten under its key (learn picks the key): its old
key is deleted (``DELETE /v1/patterns/{key}``, recorded ``retracted`` before anything else is sent) and it
is learned again like a new pattern, counted ``updated`` once stored. If the new learn is refused the old
one is gone all the same, so it counts as retracted and ``pattern_count`` still reconciles.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import polars as pl

from pipelines.load.ledger import Outcome
from pipelines.load.records import KEY_PREFIX, learn_payload
from pipelines.load.rest.batching import encode
from pipelines.load.rest.books import Entry
from pipelines.load.rest.errors import (
    AmbiguousRequest,
    AuthError,
    PayloadTooLarge,
    Rejected,
    ServerUnavailable,
)
from pipelines.load.rest.options import RestMode
from pipelines.load.rest.readback import LearnMatcher, NearDuplicates, sent_texts, task_hash8
from pipelines.load.rest.strategy import SendStrategy

LearnItem = tuple[dict[str, Any], bytes]

# Ledger reasons rollback reads: a learn that overwrote another pattern under its key, and a pattern
# found on the server (same task and code) that this pipeline did not send.
REPLACED_REASON = "replaced a near-duplicate"
FOUND_REASON = "same task and code on the server"
NOT_STORED_REASON = "server: an existing near-duplicate has an equal or higher score (0.7.x)"


@dataclass
class LearnStrategy(SendStrategy):
    mode: ClassVar[RestMode] = RestMode.LEARN
    write_path: ClassVar[str] = "/v1/learn"
    updates_in_place: ClassVar[bool] = False
    # key -> record the server held before this load sent anything (None: the key cannot export)
    before: dict[str, dict[str, Any]] | None = None
    # (pattern id, task as sent) of the learns answered ``stored: false`` in this load
    not_stored: list[tuple[str, str]] = field(default_factory=list)

    def key_for(self, row: dict[str, Any]) -> str | None:
        return None

    def find_on_server(self, frame: pl.DataFrame, uncertain: pl.DataFrame, unaccounted: bool) -> list[Entry]:
        matcher = LearnMatcher(self.client)
        index = matcher.export_index()
        candidates = frame if (index is not None and unaccounted) else uncertain
        claimed = self.books.claimed_keys()
        found: list[Entry] = []
        for row in candidates.iter_rows(named=True):
            if index is not None:
                key = matcher.find_in_index(index, row, claimed)
            else:
                key = matcher.find_by_recall(row, claimed)
            if key:
                claimed.add(key)
                why = (
                    "stored by an interrupted run" if row["prev_outcome"] == Outcome.SENDING else FOUND_REASON
                )
                found.append(
                    Entry(row["pattern_id"], key, Outcome.PRESENT, f"{why}; key found on the server")
                )
        return found

    def over_quota(self, projected: int, quota: int) -> bool:
        # learn checks current >= quota before storing one more
        return projected > quota

    def send(self, rows: list[dict[str, Any]]) -> None:
        budget = self.options.body_budget
        matcher = LearnMatcher(self.client)
        if rows and self.options.concurrency == 1 and matcher.export_index(refresh=True) is not None:
            # What the server holds before anything is sent: a learn that replaces a weaker
            # near-duplicate overwrites it under its key, and rollback restores it from here.
            self.before = dict(matcher.records)
        sendable: list[LearnItem] = []
        for row in rows:
            body = encode(learn_payload(row))
            if len(body) > budget and row.get("update"):
                self.books.result.notes += (
                    f"{row['pattern_id']} changed but its learn body is over the limit; "
                )
                continue
            if len(body) > budget:
                self.books.commit(
                    [
                        Entry(
                            row["pattern_id"],
                            None,
                            Outcome.REJECTED,
                            f"pipeline: learn body of {len(body):,} bytes is over the body limit "
                            f"({self.options.max_body_bytes:,} bytes less headroom)",
                        )
                    ]
                )
                continue
            sendable.append((row, body))

        def start(item: LearnItem) -> None:
            # an update's intent is written in work(), once its old key is gone
            if not item[0].get("update"):
                self.books.intend([item[0]], [None])

        def work(item: LearnItem) -> list[Entry]:
            if item[0].get("update"):
                return self.update_one(item[0], item[1], matcher)
            return [self.learn_one(item[0], item[1], matcher)]

        def done(item: LearnItem, outcomes: list[Entry]) -> None:
            self.books.commit(outcomes, sent=1 if outcomes else 0)

        self.pipelined(sendable, start, work, done)

    def update_one(self, row: dict[str, Any], body: bytes, matcher: LearnMatcher) -> list[Entry]:
        """Delete the pattern's old key, then learn it again (see the module docstring)."""
        pid, old_key = row["pattern_id"], row.get("prev_key")
        if not old_key:
            self.books.result.notes += (
                f"{pid} changed but its learned key is unknown (the key cannot export): not relearned; "
            )
            return []
        try:
            deleted = self.client.delete_pattern(old_key)
        except AuthError as exc:
            self.books.result.notes += f"{pid} changed but deleting {old_key} was refused ({exc.status}); "
            return []
        if deleted and self.last_count is not None:
            self.last_count -= 1  # so that the learn's own count is not read as replacing a near-duplicate
        why = "updated: score or text changed; old key deleted before learning again"
        self.books.commit([Entry(pid, old_key, Outcome.RETRACTED, why)])
        self.books.intend([row], [None])
        entry = self.learn_one(row, body, matcher)
        if entry.outcome == Outcome.STORED and entry.tally is None:
            return [replace(entry, tally="updated")]
        if deleted:
            # the old pattern is gone and the new one is not there: pattern_count fell by one
            self.books.result.retracted += 1
        # planned as already loaded, it now ends under the new outcome (so kept still adds up)
        self.books.result.already_loaded -= 1
        return [entry]

    def learn_one(self, row: dict[str, Any], body: bytes, matcher: LearnMatcher) -> Entry:
        pid = row["pattern_id"]
        stored_reason = f"learn; key prefix {KEY_PREFIX}{task_hash8(row['task'])}_"
        attempts = 0
        while True:
            try:
                reply = self.client.request("POST", self.write_path, content=body, idempotent=False)
            except AmbiguousRequest as exc:
                self.books.say(f"{self.scope}: {pid}: {exc}; checking the server before sending it again")
                if exc.reason == "timeout":
                    # a slow server may still store it: give the request time to finish before looking
                    self.client.sleep(self.options.timeout)
                key = matcher.find(row, self.books.claimed_keys())
                if key:
                    return Entry(
                        pid, key, Outcome.STORED, f"{stored_reason}; answer lost, found on the server"
                    )
                attempts += 1
                if attempts > self.options.max_retries:
                    raise ServerUnavailable(f"{exc}; not stored after {attempts} attempts") from None
                self.client.sleep(self.client.backoff.delay(attempts))
                continue
            except Rejected as exc:
                return Entry(pid, None, Outcome.REJECTED, f"server: {exc.reason or exc}")
            except PayloadTooLarge as exc:
                return Entry(
                    pid, None, Outcome.REJECTED, f"server: body over the limit ({exc.reason or exc})"
                )
            entry = self.answered(pid, reply.body, stored_reason)
            if entry.outcome == Outcome.NOT_STORED:
                self.not_stored.append((pid, row["task"]))
            return entry

    def answered(self, pid: str, body: Any, stored_reason: str) -> Entry:
        answer = body if isinstance(body, dict) else {}
        if answer.get("stored", True) is False:
            return Entry(
                pid,
                None,
                Outcome.NOT_STORED,
                NOT_STORED_REASON,
            )
        count = answer.get("pattern_count")
        # Whatever the version string: a stored learn that did not grow the count overwrote a weaker
        # near-duplicate under its old key (0.7.x's rule; one request at a time, so the count is ours).
        if (
            self.options.concurrency == 1
            and isinstance(count, int)
            and self.last_count is not None
            and count <= self.last_count
        ):
            self.last_count = count
            return Entry(
                pid,
                None,
                Outcome.STORED,
                f"{stored_reason}; {REPLACED_REASON}",
                tally="replaced",
                replaced=True,
            )
        if isinstance(count, int):
            self.last_count = count
        return Entry(pid, None, Outcome.STORED, stored_reason)

    def finish(self) -> None:
        matcher = LearnMatcher(self.client)
        self._learned_keys(matcher)
        if self.not_stored:
            self._name_the_kept(matcher)

    def _learned_keys(self, matcher: LearnMatcher) -> None:
        """Learn does not return the key: read the keys of every learned pattern the ledger holds without
        one (this run's and earlier runs') from /v1/export, when the key may export (admin)."""
        missing = self.books.ledger.in_store().filter(pl.col("key").is_null())
        if missing.is_empty():
            return
        index = matcher.export_index()
        if index is None:
            self.books.result.notes += (
                f"{missing.height} learned keys unknown (the key cannot export); "
                "rollback finds them by recall; "
            )
            return
        texts = sent_texts(self.layout, self.scope, missing["pattern_id"].to_list(), self.options.redact)
        claimed = self.books.claimed_keys()
        found: list[Entry] = []
        for row in missing.iter_rows(named=True):
            text = texts.get(row["pattern_id"])
            key = matcher.find_in_index(index, text, claimed) if text else None
            if key:
                claimed.add(key)
                reason = f"{row['reason'] or row['outcome']}; key from /v1/export"
                replaced = bool(row.get("replaced"))
                previous = (self.before or {}).get(key) if replaced else None
                found.append(
                    Entry(
                        row["pattern_id"],
                        key,
                        Outcome(row["outcome"]),
                        reason,
                        fingerprint=row["fingerprint"],
                        basis=row["basis"],
                        replaced=replaced,
                        previous=json.dumps(previous) if previous else None,  # in the server's key order
                    )
                )
        if found:
            self.books.rekey(found)

    def _name_the_kept(self, matcher: LearnMatcher) -> None:
        """Each ``stored: false`` learn's ledger row names the near-duplicate the server kept instead,
        and whose it is: a pattern of this project, or one stored by someone else."""
        if matcher.export_index() is None:
            self.books.result.notes += (
                f"{len(self.not_stored)} not stored: the near-duplicates kept instead are unknown "
                "(the key cannot export); "
            )
            return
        ours = dict(
            self.books.ledger.in_store()
            .filter(pl.col("key").is_not_null())
            .select("key", "pattern_id")
            .iter_rows()
        )
        server = NearDuplicates(matcher.records)
        named = []
        for pid, task in self.not_stored:
            kept = server.kept_for(task)
            if kept is None:
                why = "no near-duplicate of its task in the export read after the load"
            else:
                owner = "not loaded from here"
                if kept[0] in ours:
                    owner = f"pattern {ours[kept[0]]} of this project"
                why = f"kept instead: {kept[0]} ({owner}; word Jaccard {kept[1]:.2f})"
            named.append(Entry(pid, None, Outcome.NOT_STORED, f"{NOT_STORED_REASON}; {why}"))
        self.books.rekey(named)
