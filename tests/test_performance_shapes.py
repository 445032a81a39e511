"""The fast and memory-bounded code paths give exactly what the simple ones give (no timings here)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from engramia.providers.json_storage import JSONStorage
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.ingest.catalog import read_scopes, scope_names
from pipelines.ingest.messages import stage_messages
from pipelines.ingest.staging import ingest
from pipelines.load.embedded import load_embedded
from pipelines.load.records import import_record, kept_patterns
from pipelines.load.store import FastJSONStorage, dumps_indent2, engramia_scope, open_memory
from pipelines.pairing.batches import current, pair_scope
from pipelines.pairing.pairs import PairingOptions
from pipelines.runner import backfill
from pipelines.scopes import ScopeMapping
from pipelines.scoring.near_duplicates import near_duplicates
from pipelines.scoring.near_duplicates import stored as stored_sets
from pipelines.scoring.near_duplicates.cache import DedupCache
from pipelines.scoring.near_duplicates.tokens import token_pairs
from pipelines.tables import DataLayout
from pipelines.tools.synth import SynthSpec, generate
from tests.conftest import msg, write_ndjson

# ------------------------------------------------------------------------------------------------
# Embedded store: same bytes, same paths, same patterns read back
# ------------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"])),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
@settings(max_examples=300, deadline=None)
def test_dumps_indent2_is_json_dumps(value):
    assert dumps_indent2(value) == json.dumps(value, indent=2, ensure_ascii=False)


def test_dumps_indent2_hands_the_unusual_to_json():
    odd = {"t": (1, "x"), "s": "\ud800", "n": float("nan"), 1: "int key"}
    assert dumps_indent2(odd) == json.dumps(odd, indent=2, ensure_ascii=False)


def test_fast_storage_maps_keys_and_writes_files_like_jsonstorage(tmp_path):
    plain, fast = JSONStorage(tmp_path / "a"), FastJSONStorage(tmp_path / "b")
    rng = random.Random(0)
    pieces = ["a", ".", "..", "/", "\\", "x.y", "", "...", "é", "patterns", " ", ".json"]
    record = {"task": "t\u2028é", "design": {"code": "c\n", "ids": ["m1"], "n": 1.5, "b": True, "z": None}}
    for scope in [("default", "default"), ("acme", "asst 1"), ("t/x", "p")]:
        with engramia_scope(*scope):
            for _ in range(2000):
                key = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 5)))
                outcomes = []
                for storage in (plain, fast):
                    try:
                        outcomes.append(("ok", storage._key_to_path(key).relative_to(storage._root_resolved)))
                    except ValueError as exc:
                        outcomes.append(("error", str(exc)))
                assert outcomes[0] == outcomes[1], key
            plain.save("patterns/oai_1", record)
            fast.save("patterns/oai_1", record)
            fast.save("patterns/oai_1", record)  # an overwrite goes through the .bak step too
            a = plain._key_to_path("patterns/oai_1").read_bytes()
            b = fast._key_to_path("patterns/oai_1").read_bytes()
            assert a == b
            assert fast.list_keys("patterns/") == plain.list_keys("patterns/") == ["patterns/oai_1"]


def test_loaded_patterns_read_back_as_their_import_records(tmp_path):
    spec = SynthSpec(messages=600, assistants=2, seed=5)
    source = generate(spec, tmp_path / "in" / "d.ndjson")[0]
    layout = DataLayout.at(tmp_path / "data")
    backfill(layout, source, load=False)
    loaded = 0
    for scope in read_scopes(layout)["scope"]:
        tenant_id, project_id = scope_names(layout, scope)
        result = load_embedded(layout, scope, tenant_id, project_id)
        assert result.reconciles and result.stored == result.kept
        kept = kept_patterns(layout, scope)
        if kept is None:  # a scope named only by broken lines
            continue
        memory = open_memory(layout.engramia)
        plain = JSONStorage(layout.engramia)
        with engramia_scope(tenant_id, project_id):
            for row in kept.collect().iter_rows(named=True):
                loaded += 1
                record = import_record(row, tenant_id, project_id)
                assert plain.load(record["key"]) == record["data"]
                assert memory.storage.load(record["key"]) == record["data"]
    assert loaded > 100


# ------------------------------------------------------------------------------------------------
# Ingest: chunking never changes what is staged or quarantined
# ------------------------------------------------------------------------------------------------


def _staged(layout: DataLayout) -> tuple[pl.DataFrame, pl.DataFrame]:
    raw = pl.read_parquet(layout.raw() / "**" / "*.parquet", hive_partitioning=True).sort("line_no")
    quarantine = pl.read_parquet(layout.quarantine() / "*.parquet").sort("line_no")
    return raw.drop("dump"), quarantine


def test_chunk_size_does_not_change_the_result(tmp_path):
    rows: list[dict | str] = []
    rng = random.Random(4)
    for i in range(400):
        rows.append(
            msg(f"t{i // 5}", f"m{i}", rng.choice(["user", "assistant"]), "x " * rng.randint(0, 40), i)
        )
    rows[10], rows[50], rows[51], rows[200] = "{broken", "", "   ", '["not", "an object"]'
    path = write_ndjson(tmp_path / "in" / "d.ndjson", rows)
    with path.open("ab") as f:
        f.write(
            b'{"thread_id": "t", "text": "\xff"}\r\n'
            + json.dumps(msg("t9", "m9", "user", "crlf", 1)).encode()
            + b"\r\n"
        )
    outcomes = []
    for chunk in (997, 64 * 1024, 24 * 1024 * 1024):
        layout = DataLayout.at(tmp_path / f"c{chunk}")
        [result] = ingest(layout, path.parent, ScopeMapping(), chunk_bytes=chunk)
        outcomes.append((result.lines, result.staged, result.quarantined, result.reasons, *_staged(layout)))
    for other in outcomes[1:]:
        assert other[:4] == outcomes[0][:4]
        assert other[4].equals(outcomes[0][4]) and other[5].equals(outcomes[0][5])


def test_staged_file_becomes_the_messages_file_when_nothing_repeats(tmp_path, landing, dump):
    dump("a.ndjson", [msg("t", "m1", "user", "q", 0), msg("t", "m2", "assistant", "a", 1)])
    dump("b.ndjson", [msg("t", "m2", "assistant", "a", 1), msg("t", "m3", "user", "again", 2)])
    layout = DataLayout.at(tmp_path / "data")
    ingest(layout, landing, ScopeMapping())
    [scope] = read_scopes(layout)["scope"]
    first, second = stage_messages(layout, scope)
    assert (first.messages, first.repeats) == (2, 0) and (second.messages, second.repeats) == (1, 1)
    files = sorted(layout.messages(scope).glob("*.parquet"))
    staged = {
        p.parent.parent.name.removeprefix("dump="): p for p in layout.raw().glob("dump=*/scope=*/*.parquet")
    }
    adopted = files[0].stat().st_ino == staged[files[0].stem.removeprefix("dump=")].stat().st_ino
    assert adopted  # the dump without repeats shares its staged file
    assert pl.read_parquet(files[1])["message_id"].to_list() == ["m3"]


# ------------------------------------------------------------------------------------------------
# Pairing: threads paired in groups under a memory budget give the same patterns
# ------------------------------------------------------------------------------------------------


def test_pairing_in_groups_matches_pairing_at_once(tmp_path):
    spec = SynthSpec(messages=3000, assistants=1, seed=9, bad_line_rate=0)
    source = generate(spec, tmp_path / "in" / "d.ndjson")[0]
    results = []
    for budget in (10**12, 20_000):
        layout = DataLayout.at(tmp_path / f"b{budget}")
        ingest(layout, source, ScopeMapping())
        [scope] = read_scopes(layout)["scope"]
        stage_messages(layout, scope)
        pair_scope(layout, scope, PairingOptions(), text_budget=budget)
        patterns = current(layout, "patterns", scope).collect().sort("pattern_id")
        unpaired = current(layout, "unpaired", scope).collect().sort("message_id")
        results.append((patterns, unpaired))
    assert results[0][0].height > 300
    assert results[0][0].equals(results[1][0]) and results[0][1].equals(results[1][1])


# ------------------------------------------------------------------------------------------------
# Incremental near-duplicate removal equals a full recompute
# ------------------------------------------------------------------------------------------------

_WORDS = [
    *["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta"],
    *["theta", "iota", "kappa", "lam", "mu", "nu", "xi"],
    "Ünï",
    "İx",
    "straße",
    "A\tb",
]
_SCHEMA = {
    "pattern_id": pl.String,
    "task": pl.String,
    "eval_score": pl.Float64,
    "created_at": pl.Datetime("us", "UTC"),
}


def _pattern(rng: random.Random, i: int, pool: dict) -> dict:
    if pool and rng.random() < 0.4:
        task = rng.choice(list(pool.values()))["task"]
    else:
        words = [rng.choice(_WORDS[: rng.randint(3, len(_WORDS))]) for _ in range(rng.randint(0, 12))]
        task = rng.choice([" ", "  ", "\n", " \x1f"]).join(words)
        task = task.upper() if rng.random() < 0.1 else task
    if task is not None and rng.random() < 0.3:
        task = f"{task} {rng.choice(_WORDS)}"
    return {
        "pattern_id": f"p{i:05d}",
        "task": None if rng.random() < 0.02 else task,
        "eval_score": rng.choice([5.0, 5.0, 3.0, 7.0, float("nan")]),
        "created_at": datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randint(0, 50)),
    }


@pytest.mark.parametrize("seed", range(40))
def test_cached_near_duplicates_equal_a_full_recompute(tmp_path, seed):
    rng = random.Random(seed)
    threshold = rng.choice([0.92, 0.5, 0.75, 1.0, 0.3])
    counter = iter(range(10**6))
    pool: dict[int, dict] = {}
    for _ in range(rng.randint(5, 80)):
        i = next(counter)
        pool[i] = _pattern(rng, i, pool)
    cache = DedupCache(tmp_path / "cache")
    for step in range(6):
        frame = pl.DataFrame(list(pool.values()), schema=_SCHEMA)
        context = "ctx" if step < 4 else "new options"  # a context change starts afresh
        if seed % 2:
            # Tasks read on demand from a Parquet file in another order, as score_scope does.
            frame.select("pattern_id", "task").sample(fraction=1.0, shuffle=True, seed=step).write_parquet(
                tmp_path / "tasks.parquet"
            )
            tasks = pl.scan_parquet(tmp_path / "tasks.parquet")
            decided = cache.near_duplicates(frame.drop("task"), threshold, context, tasks=tasks)
        else:
            decided = cache.near_duplicates(frame, threshold, context)
        assert decided.equals(near_duplicates(frame, threshold)), step
        for _ in range(rng.randint(0, 10)):
            i = next(counter)
            pool[i] = _pattern(rng, i, pool)
        for key in rng.sample(list(pool), min(len(pool) - 1, rng.randint(0, 5))):
            del pool[key]
        for key in rng.sample(list(pool), min(len(pool), rng.randint(0, 3))):
            pool[key]["eval_score"] = rng.choice([1.0, 9.0, 5.0])
        for key in rng.sample(list(pool), min(len(pool), rng.randint(0, 2))):
            # A turn that grows: its pattern goes, a new id comes with a longer task.
            old, i = pool.pop(key), next(counter)
            pool[i] = {**old, "pattern_id": f"p{i:05d}", "task": f"{old['task'] or ''} {rng.choice(_WORDS)}"}


def test_cache_appends_sets_keeps_gone_rows_and_compacts(tmp_path):
    rng = random.Random(7)
    pool = {i: _pattern(rng, i, {}) for i in range(40)}
    folder = tmp_path / "cache"
    cache = DedupCache(folder)

    def run() -> pl.DataFrame:
        frame = pl.DataFrame(list(pool.values()), schema=_SCHEMA)
        decided = cache.near_duplicates(frame, 0.75, "c")
        assert decided.equals(near_duplicates(frame, 0.75))
        return pl.read_parquet(folder / "state.parquet")

    state = run()
    stored = (folder / "ranks.i32").read_bytes()
    assert state.height == 40 and state["live"].all()
    assert len(stored) == 4 * state["size"].sum()

    for i in range(40, 45):
        pool[i] = _pattern(rng, i, pool)
    state = run()
    ranks = (folder / "ranks.i32").read_bytes()
    assert ranks.startswith(stored) and len(ranks) == 4 * state["size"].sum()  # appended, not rewritten
    assert state.height == 45 and state["live"].all()

    removed = {key: pool.pop(key) for key in (3, 7, 11)}
    state = run()
    assert (folder / "ranks.i32").read_bytes() == ranks  # a pattern gone keeps its set...
    assert state.height == 45 and state.filter(~pl.col("live"))["pattern_id"].sort().to_list() == [
        "p00003",
        "p00007",
        "p00011",
    ]
    pool[7] = removed[7]  # ...and one that comes back gets a row of its own
    state = run()
    assert state.height == 46 and state.filter(pl.col("pattern_id") == "p00007")["live"].to_list() == [
        False,
        True,
    ]

    for key in range(12, 24):
        del pool[key]
    state = run()  # more than a quarter gone: both files are written afresh without them
    assert state.height == len(pool) and state["live"].all()
    assert (folder / "ranks.i32").stat().st_size == 4 * state["size"].sum()

    # A set file cut short (a crash while appending) is no cache at all: the next call starts afresh.
    with open(folder / "ranks.i32", "r+b") as f:
        f.truncate(8)
    assert not cache.holds(0.75, "c")
    pool[99] = _pattern(rng, 99, pool)
    run()
    assert cache.holds(0.75, "c")


def test_cache_grouping_survives_hash_collisions(tmp_path, monkeypatch):
    # Every set hashes to the same value: grouping must fall back on comparing the sets themselves.
    monkeypatch.setattr(stored_sets, "_MIX", (np.uint64(0), np.uint64(0)))
    rng = random.Random(1)
    pool = {i: _pattern(rng, i, {}) for i in range(60)}
    cache = DedupCache(tmp_path / "cache")
    frame = pl.DataFrame(list(pool.values()), schema=_SCHEMA)
    cache.near_duplicates(frame, 0.75, "c")
    more = pl.DataFrame([_pattern(rng, i, pool) for i in range(60, 90)], schema=_SCHEMA)
    both = pl.concat([frame, more])
    assert cache.near_duplicates(both, 0.75, "c").equals(near_duplicates(both, 0.75))


def test_tokens_match_python_split_on_ascii_whitespace():
    tasks = pl.Series(["A\tb\nc\x0bd\x0ce\rf\x1cg\x1dh\x1ei\x1fj k  l", "", None, "Ünï İx", "x\u00a0y"])
    rows, codes, tokens = token_pairs(tasks)
    got: dict[int, set[str]] = {}
    for row, code in zip(rows.tolist(), codes.tolist(), strict=True):
        got.setdefault(row, set()).add(tokens[code])
    for row, task in enumerate(tasks.to_list()):
        assert got.get(row, set()) == set((task or "").lower().split()), task


@pytest.mark.parametrize("options_change", [False, True])
def test_scored_patterns_stay_exact_across_incremental_runs(tmp_path, options_change):
    spec = SynthSpec(messages=4000, assistants=2, dumps=3, seed=13, near_duplicate_rate=0.4)
    dumps = generate(spec, tmp_path / "dumps")
    layout = DataLayout.at(tmp_path / "data")
    landing = tmp_path / "landing"
    landing.mkdir()
    for i, path in enumerate(dumps):
        (landing / path.name).symlink_to(path)
        # With options_change, the first batch is paired with short tasks: the same pattern ids then
        # stand in two batches with different tasks, and only the later one is current.
        short = options_change and i == 0
        options = PairingOptions(task_max_chars=25) if short else PairingOptions()
        backfill(layout, landing, pairing=options, load=False)
        for scope in read_scopes(layout)["scope"]:
            patterns = current(layout, "patterns", scope)
            if patterns is None:
                continue
            scored = pl.read_parquet(layout.scored(scope) / "scored.parquet")
            expected = near_duplicates(
                patterns.select("pattern_id", "task", "created_at")
                .with_columns(eval_score=pl.lit(5.0))
                .collect()
            )
            got = scored.select("pattern_id", "kept", "duplicate_of", "similarity").sort("pattern_id")
            assert got.equals(expected.sort("pattern_id")), (path.name, scope)


def test_cache_is_exact_for_very_long_tasks(tmp_path):
    # Thousands of tokens per task: size bounds must not overflow 64-bit arithmetic.
    words = [f"w{i}" for i in range(6000)]
    base = datetime(2025, 1, 1, tzinfo=UTC)
    rows = [
        {"pattern_id": "a", "task": " ".join(words[:3000]), "eval_score": 5.0, "created_at": base},
        {"pattern_id": "b", "task": " ".join(words[1:3001]), "eval_score": 5.0, "created_at": base},
        {"pattern_id": "c", "task": " ".join(words[3000:]), "eval_score": 5.0, "created_at": base},
    ]
    cache = DedupCache(tmp_path / "cache")
    first = pl.DataFrame(rows[:1] + rows[2:], schema=_SCHEMA)
    cache.near_duplicates(first, 0.92, "c")
    both = pl.DataFrame(rows, schema=_SCHEMA)
    got = cache.near_duplicates(both, 0.92, "c")
    assert got.equals(near_duplicates(both, 0.92))
    assert got.filter(pl.col("pattern_id") == "b")["duplicate_of"].item() == "a"


def test_fast_storage_lists_keys_like_jsonstorage(tmp_path):
    plain, fast = JSONStorage(tmp_path), FastJSONStorage(tmp_path)
    for scope in [("default", "default"), ("acme", "p")]:
        with engramia_scope(*scope):
            root = plain._effective_root()
            names = [
                "patterns/oai_1.json",
                "patterns/a.b.json",
                "patterns/_hidden.json",
                "patterns/.json",
                "patterns/.x.json",
                "patterns/x.JSON",
                "patterns/x.json.tmp",
                "patterns/x.bak",
                "patterns/deep/er/k.json",
                "patterns/back\\slash.json",
                "evals/e.json",
                "_embeddings.json",
                "patterns/..json",
                "patterns/dir.json/inner.json",
                "patterns/ünï.json",
                "patterns\\at-root.json",
                "patterns\\sub/k.json",
                "pat/p.json",
            ]
            for name in names:
                path = root / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("{}")
            (root / "patterns" / "link.json").symlink_to(root / "patterns" / "deep")
            (root / "patterns" / "linkdir").symlink_to(root / "patterns" / "deep")
            for prefix in (
                "",
                "patterns/",
                "patterns/deep",
                "patterns/deep/",
                "pat",
                "patterns/s",
                "evals/",
                "nothing/",
            ):
                assert fast.list_keys(prefix) == plain.list_keys(prefix), prefix
            assert fast.count_patterns() == plain.count_patterns()


def test_transform_never_imports_pandas_engramia_or_arrow_compute(tmp_path):
    """Importing pandas costs about a second, engramia a third of one and pyarrow.compute a tenth: a
    transform-only run needs none of them (pyarrow reaches for pandas from innocent-looking calls such as
    ``Schema.empty_table``, and for pyarrow.compute from ``Table.take`` and ``Table.cast``)."""
    import subprocess
    import sys

    source = tmp_path / "landing"
    generate(SynthSpec(messages=400, assistants=3, seed=5, bad_line_rate=0.02), source / "d.ndjson")
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from pipelines.tables import DataLayout\n"
        "from pipelines.runner import backfill\n"
        f"run = backfill(DataLayout.at({str(tmp_path / 'data')!r}), Path({str(source)!r}), load=False)\n"
        "assert sum(s.scoring.patterns for s in run.scopes.values()) > 0\n"
        "print(sorted(m for m in ('pandas', 'engramia', 'pyarrow.compute') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr
