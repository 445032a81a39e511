"""The recall spot check: Engramia's own recall, through a storage that reads each pattern file once per
check and leaves the store as it found it."""

from __future__ import annotations

import engramia
import polars as pl
from engramia.providers.json_storage import JSONStorage

from pipelines.load.spot_check import ReadOnlyJSONStorage, recall_check
from pipelines.load.store import engramia_scope, open_memory

TASKS = [f"parse the {word} file and report its {other} fields" for word in "abcdefgh" for other in "xyz"]


def _store(tmp_path):
    store = tmp_path / "store"
    memory = open_memory(store)
    with engramia_scope("t", "p"):
        for i, task in enumerate(TASKS):
            memory.learn(task=task, code=f"code {i}", eval_score=5.0)
        by_task = {memory.storage.load(k)["task"]: k for k in memory.storage.list_keys("patterns/")}
    return store, [by_task[task] for task in TASKS]


def test_recall_through_the_read_only_storage_matches_engramias_own(tmp_path):
    store, _ = _store(tmp_path)
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


def test_a_check_reads_each_pattern_once_whatever_the_sample(tmp_path, monkeypatch):
    store, keys = _store(tmp_path)
    reads: list[str] = []
    original = JSONStorage.load

    def counted(self, key):
        reads.append(key)
        return original(self, key)

    monkeypatch.setattr(JSONStorage, "load", counted)
    sample = [0, 5, 11]
    hits = recall_check(
        store, "t", "p", pl.Series([TASKS[i] for i in sample]), pl.Series([keys[i] for i in sample])
    )
    assert [h["found"] for h in hits] == [True, True, True]
    # Three recalls over 24 patterns: each pattern file read once, not three times.
    patterns = [k for k in reads if k.startswith("patterns/")]
    assert sorted(patterns) == sorted(keys)


def test_a_missing_pattern_is_not_found(tmp_path):
    store, keys = _store(tmp_path)
    victim = keys[3]
    for path in store.rglob(f"{victim.split('/')[-1]}.json"):
        path.unlink()
    [hit] = recall_check(store, "t", "p", pl.Series([TASKS[3]]), pl.Series([victim]))
    assert hit["found"] is False
