"""A loaded pattern whose score (a new feedback file) or text (other truncation limits) changed is
rewritten in place, in the embedded store and on REAL Engramia servers over rest-import and rest-learn:
counted ``updated``, never stored, ``pattern_count`` unchanged, read back by the count check, and a
run after it updates nothing. Ledgers written before fingerprints were kept are adopted, not rewritten."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import polars as pl
import pytest

from checks.loading import pattern_count_reconciles
from pipelines.load.embedded import destination_id as embedded_destination
from pipelines.load.embedded import load_embedded
from pipelines.load.ledger import Ledger, Outcome
from pipelines.load.plan import LoadResult
from pipelines.load.records import kept_patterns
from pipelines.load.redaction import redact_frame
from pipelines.load.rest.options import RestMode, destination_id
from pipelines.load.rest.readback import code_matches
from pipelines.load.rest.servers import ServerConfig
from pipelines.load.store import engramia_scope, open_memory
from pipelines.load.verify import verify_updates_embedded, verify_updates_rest
from pipelines.pairing.batches import pair_scope
from pipelines.pairing.pairs import PairingOptions
from pipelines.scoring.options import ScoreStrategy, ScoringOptions
from pipelines.scoring.scores import score_scope
from pipelines.tables import DataLayout, parquet_files
from tests.support.rest_load import SCOPE, ledger_state, load, opts

# thread_abc holds two kept patterns of the sample, thread_sql one: three scores change.
FEEDBACK = "thread_id,feedback\nthread_abc,negative\nthread_sql,positive\n"
TASK_MAX_CHARS = 30

Content = dict[str, tuple[str, str, float]]  # pattern_id -> (task, code, score)


def feedback_options(layout: DataLayout) -> ScoringOptions:
    path = layout.root / "feedback.csv"
    path.write_text(FEEDBACK)
    return ScoringOptions(ScoreStrategy.FEEDBACK, path)


def expected(layout: DataLayout, redact: bool) -> Content:
    """The kept patterns as a load sends them."""
    kept = kept_patterns(layout, SCOPE).collect()
    if redact:
        kept = redact_frame(kept, ["task", "code"])[0]
    return {r["pattern_id"]: (r["task"], r["code"], r["eval_score"]) for r in kept.iter_rows(named=True)}


def changed(before: Content, after: Content) -> int:
    return sum(before[p] != after[p] for p in after)


def held_by_key(records: list[dict]) -> dict[str, tuple[str, str, float]]:
    return {
        r["key"]: (r["data"]["task"], r["data"]["design"]["code"], float(r["data"]["success_score"]))
        for r in records
    }


def assert_holds(held: dict[str, tuple[str, str, float]], keys: dict[str, str], want: Content) -> None:
    """Every kept pattern's key holds its current task, code (or the server's redaction of it) and score."""
    for pid, (task, code, score) in want.items():
        got = held[keys[pid]]
        assert got[0] == task and got[2] == score and code_matches(got[1], code), pid


def scenario(
    layout: DataLayout,
    run: Callable[[], LoadResult],
    held: Callable[[], dict[str, tuple[str, str, float]]],
    keys: Callable[[], dict[str, str]],
    verify: Callable[[LoadResult], list[dict]],
    redact: bool,
) -> None:
    first = run()
    assert first.error is None and first.stored == first.kept == 10 and first.updated == 0
    count = first.pattern_count_after

    # A new feedback file: three patterns score 3.0 or 7.0 instead of 5.0.
    before = expected(layout, redact)
    scoring = feedback_options(layout)
    score_scope(layout, SCOPE, scoring)
    after = expected(layout, redact)
    assert changed(before, after) == 3
    second = run()
    assert second.error is None, second.error
    assert (second.updated, second.stored, second.retracted, second.present) == (3, 0, 0, 0)
    assert second.pattern_count_before == second.pattern_count_after == count and second.reconciles
    assert_holds(held(), keys(), after)
    reads = verify(second)
    assert len(reads) == 3 and all(r["held"] for r in reads), reads
    assert pattern_count_reconciles(second.as_dict(), count, 10, reads).passed
    third = run()
    assert (third.updated, third.sent, third.stored) == (0, 0, 0) and third.pattern_count_after == count

    # Shorter task truncation: the same ids, other texts.
    pair_scope(layout, SCOPE, PairingOptions(task_max_chars=TASK_MAX_CHARS))
    score_scope(layout, SCOPE, scoring)
    truncated = expected(layout, redact)
    assert set(truncated) == set(after)
    n_texts = changed(after, truncated)
    assert n_texts == 7
    fourth = run()
    assert fourth.error is None, fourth.error
    assert (fourth.updated, fourth.stored, fourth.retracted) == (n_texts, 0, 0)
    assert fourth.pattern_count_after == count and fourth.reconciles
    assert_holds(held(), keys(), truncated)
    assert all(r["held"] for r in verify(fourth))
    fifth = run()
    assert (fifth.updated, fifth.sent, fifth.stored) == (0, 0, 0) and fifth.pattern_count_after == count


def test_embedded_rewrites_changed_patterns_under_their_key(staged, tmp_path):
    layout, store = staged("single"), tmp_path / "store"
    dest = embedded_destination(store)

    def held() -> dict[str, tuple[str, str, float]]:
        with engramia_scope("default", "default"):
            return held_by_key(open_memory(store).export())

    def keys() -> dict[str, str]:
        return dict(Ledger(layout, SCOPE, dest).in_store().select("pattern_id", "key").iter_rows())

    def verify(result: LoadResult) -> list[dict]:
        return verify_updates_embedded(layout, SCOPE, store, dest, "default", "default", result.updates)

    scenario(
        layout, lambda: load_embedded(layout, SCOPE, "default", "default", store), held, keys, verify, False
    )


@pytest.mark.server
@pytest.mark.parametrize("mode", [RestMode.IMPORT, RestMode.LEARN])
def test_rest_rewrites_changed_patterns(mode, engramia_server, staged, api_key_env):
    layout, env = staged("single"), api_key_env(engramia_server)
    options = opts(mode)
    server = ServerConfig(engramia_server.url, env)

    def run() -> LoadResult:
        return load(layout, engramia_server, env, options)

    def keys() -> dict[str, str]:
        state = ledger_state(layout, engramia_server).filter(pl.col("outcome").is_in(["stored", "present"]))
        return dict(state.select("pattern_id", "key").iter_rows())

    def verify(result: LoadResult) -> list[dict]:
        return verify_updates_rest(layout, SCOPE, server, options, result.updates)

    scenario(layout, run, lambda: held_by_key(engramia_server.export()), keys, verify, True)
    # learn: every update deleted its old key and learned again; the ledger names the new keys
    state = ledger_state(layout, engramia_server)
    assert state["key"].null_count() == 0 and state["fingerprint"].null_count() == 0


class SpyTransport(httpx.HTTPTransport):
    """A real transport that keeps every import body it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/import":
            self.bodies.append(request.read())
        return super().handle_request(request)


@pytest.mark.server
def test_import_sends_new_and_changed_patterns_in_bodies_of_their_own(engramia_server, staged, api_key_env):
    layout, env = staged("single"), api_key_env(engramia_server)
    options = opts(RestMode.IMPORT)
    load(layout, engramia_server, env, options)
    # One pattern the scores do not touch is gone from the server and retracted in the ledger (new
    # again), while three scores change: one run sends one new pattern and rewrites three.
    state = ledger_state(layout, engramia_server)
    gone = state.filter(pl.col("pattern_id") == min(set(state["pattern_id"]) - abc_sql(layout))).row(
        0, named=True
    )
    httpx.delete(
        f"{engramia_server.url}/v1/patterns/{gone['key']}",
        headers={"Authorization": f"Bearer {engramia_server.api_key}"},
    ).raise_for_status()
    ledger = Ledger(layout, SCOPE, destination_id(ServerConfig(engramia_server.url, "UNUSED")))
    ledger.record(gone["pattern_id"], gone["key"], Outcome.RETRACTED, "deleted by the test")
    ledger.flush()
    score_scope(layout, SCOPE, feedback_options(layout))
    spy = SpyTransport()
    result = load(layout, engramia_server, env, options, transport=spy)
    assert (result.stored, result.updated) == (1, 3) and result.reconciles, result
    writes = [json.loads(b) for b in spy.bodies if b != b"{}"]
    assert sorted((w["overwrite"], len(w["records"])) for w in writes) == [(False, 1), (True, 3)]


def abc_sql(layout: DataLayout) -> set[str]:
    """The kept patterns of the two threads the feedback file scores."""
    kept = kept_patterns(layout, SCOPE).filter(pl.col("thread_id").is_in(["thread_abc", "thread_sql"]))
    return set(kept.select("pattern_id").collect()["pattern_id"])


def test_a_ledger_without_fingerprints_is_adopted_not_rewritten(staged, tmp_path):
    layout, store = staged("single"), tmp_path / "store"
    first = load_embedded(layout, SCOPE, "default", "default", store)
    assert first.stored == 10
    # Rewrite the ledger as older code wrote it: no fingerprint, no basis.
    folder = Ledger(layout, SCOPE, embedded_destination(store)).folder
    for path in parquet_files(folder):
        pl.read_parquet(path).drop("fingerprint", "basis").write_parquet(path)
    mtimes = {p: p.stat().st_mtime_ns for p in Path(store).rglob("*.json")}
    again = load_embedded(layout, SCOPE, "default", "default", store)
    assert (again.updated, again.stored, again.sent) == (0, 0, 0) and "10 fingerprints adopted" in again.notes
    assert {p: p.stat().st_mtime_ns for p in Path(store).rglob("*.json")} == mtimes
    # From then on changes are found as usual.
    score_scope(layout, SCOPE, feedback_options(layout))
    assert load_embedded(layout, SCOPE, "default", "default", store).updated == 3


def test_the_count_check_fails_when_an_updated_pattern_does_not_hold_its_new_content(staged, tmp_path):
    layout, store = staged("single"), tmp_path / "store"
    load_embedded(layout, SCOPE, "default", "default", store)
    score_scope(layout, SCOPE, feedback_options(layout))
    result = load_embedded(layout, SCOPE, "default", "default", store)
    dest = embedded_destination(store)
    memory = open_memory(store)
    with engramia_scope("default", "default"):
        key = result.updates[0]["key"]
        data = memory.storage.load(key)
        memory.storage.save(key, {**data, "success_score": 5.0})  # the old score, as if never rewritten
    reads = verify_updates_embedded(layout, SCOPE, store, dest, "default", "default", result.updates)
    assert [r["held"] for r in reads].count(False) == 1
    check = pattern_count_reconciles(result.as_dict(), result.pattern_count_after, 10, reads)
    assert not check.passed and check.metadata["updated"].value == 3
