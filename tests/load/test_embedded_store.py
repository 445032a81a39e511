"""The embedded store's fast paths give exactly what JSONStorage gives: same bytes, same paths, same
keys listed, same patterns read back (no timings here)."""

from __future__ import annotations

import json
import random

from engramia.providers.json_storage import JSONStorage
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.ingest.catalog import read_scopes, scope_names
from pipelines.load.embedded import load_embedded
from pipelines.load.records import import_record, kept_patterns
from pipelines.load.store import FastJSONStorage, dumps_indent2, engramia_scope, open_memory
from pipelines.runner import backfill
from pipelines.tables import DataLayout
from pipelines.tools.synth import SynthSpec, generate

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
                # The string mapping of a write, plain keys joined as strings, is the same file.
                try:
                    written = ("ok", fast._key_to_file(key))
                except ValueError as exc:
                    written = ("error", str(exc))
                expected = outcomes[1] if outcomes[1][0] == "error" else ("ok", str(fast._key_to_path(key)))
                assert written == expected, key
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
