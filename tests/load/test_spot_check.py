"""The embedded spot check: the patterns a load stored, read back by key through a read-only storage (its
cost is the sample, never the scope), and that storage's recall, which matches Engramia's own and leaves the
store as it found it."""

from __future__ import annotations

import engramia
from engramia.providers.json_storage import JSONStorage

from pipelines.load.embedded import destination_id, load_embedded
from pipelines.load.spot_check import READ_BACK_SAMPLE, spot_check_embedded
from pipelines.load.store import ReadOnlyJSONStorage, engramia_scope, open_memory
from pipelines.runner import backfill
from tests.conftest import msg, write_ndjson

TASKS = [f"parse the {word} file and report its {other} fields" for word in "abcdefgh" for other in "xyz"]


def _store(tmp_path):
    store = tmp_path / "store"
    memory = open_memory(store)
    with engramia_scope("t", "p"):
        for i, task in enumerate(TASKS):
            memory.learn(task=task, code=f"code {i}", eval_score=5.0)
    return store


def test_recall_through_the_read_only_storage_matches_engramias_own(tmp_path):
    store = _store(tmp_path)
    before = {p: p.read_bytes() for p in store.rglob("*.json")}
    plain = engramia.Memory(embeddings=None, storage=JSONStorage(path=str(store)))
    cached = engramia.Memory(embeddings=None, storage=ReadOnlyJSONStorage(store))
    with engramia_scope("t", "p"):
        for task in [*TASKS[:6], "report the fields of a file"]:
            ours = cached.recall(task, limit=5, deduplicate=False)
            # Engramia's own storage writes on recall (it rewards what it returns): compare first.
            theirs = plain.recall(task, limit=5, deduplicate=False)
            assert [(m.pattern_key, m.similarity, m.reuse_tier) for m in ours] == [
                (m.pattern_key, m.similarity, m.reuse_tier) for m in theirs
            ]
            for p, data in before.items():  # put back what Engramia's own recall rewrote
                p.write_bytes(data)
    assert {p: p.read_bytes() for p in store.rglob("*.json")} == before
    assert cached.storage.dropped_writes > 0


def _loaded(tmp_path, layout, pairs: int):
    rows = []
    for i in range(pairs):
        rows += [
            msg(f"t{i}", f"m{i}a", "user", f"question number {i} about parsing file {i}", 2 * i),
            msg(f"t{i}", f"m{i}b", "assistant", f"answer {i}: read it line by line", 2 * i + 1),
        ]
    write_ndjson(tmp_path / "in" / "d.ndjson", rows)
    run = backfill(layout, tmp_path / "in", load=False)
    [scope] = run.scopes
    result = load_embedded(layout, scope, "default", "asst_1")
    assert result.stored == pairs
    return scope, result


def test_the_check_reads_only_its_sample_of_what_the_load_stored(tmp_path, layout, monkeypatch):
    scope, result = _loaded(tmp_path, layout, 60)
    reads: list[str] = []
    listings: list[str] = []
    load, list_keys = JSONStorage.load, JSONStorage.list_keys
    monkeypatch.setattr(JSONStorage, "load", lambda self, key: reads.append(key) or load(self, key))
    monkeypatch.setattr(
        JSONStorage, "list_keys", lambda self, prefix="": listings.append(prefix) or list_keys(self, prefix)
    )
    before = {p: p.read_bytes() for p in layout.engramia.rglob("*.json")}
    dest = destination_id(layout.engramia)
    method, hits = spot_check_embedded(
        layout, scope, layout.engramia, dest, "default", "asst_1", result.ledger_run_id
    )
    assert method == "read back by key" and len(hits) == READ_BACK_SAMPLE
    assert all(h["found"] for h in hits)
    # One file read per sampled pattern, spread over the load; the scope is never listed.
    assert sorted(reads) == sorted(h["key"] for h in hits) and not listings
    assert len({h["pattern_id"] for h in hits}) == READ_BACK_SAMPLE
    assert {p: p.read_bytes() for p in layout.engramia.rglob("*.json")} == before


def test_a_missing_or_changed_pattern_is_not_found_and_a_load_that_stored_nothing_checks_what_is_held(
    tmp_path, layout
):
    scope, result = _loaded(tmp_path, layout, 5)
    dest = destination_id(layout.engramia)
    memory = open_memory(layout.engramia)
    with engramia_scope("default", "asst_1"):
        keys = sorted(memory.storage.list_keys("patterns/"))
        changed = memory.storage.load(keys[1])
        changed["design"]["code"] = "something else entirely"
        memory.storage.save(keys[1], changed)
        memory.storage.delete(keys[3])
    _, hits = spot_check_embedded(
        layout, scope, layout.engramia, dest, "default", "asst_1", result.ledger_run_id
    )
    assert sorted(h["key"] for h in hits if not h["found"]) == [keys[1], keys[3]]
    # A later load that stores nothing still reads back what the ledger says the store holds.
    method, again = spot_check_embedded(
        layout, scope, layout.engramia, dest, "default", "asst_1", "another-run"
    )
    assert method == "read back by key (held before)"
    assert sorted(h["key"] for h in again if not h["found"]) == [keys[1], keys[3]]
