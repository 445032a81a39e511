"""Threads paired in groups under a memory budget give the same patterns as pairing them at once."""

from __future__ import annotations

from pipelines.ingest.catalog import read_scopes
from pipelines.ingest.messages import stage_messages
from pipelines.ingest.staging import ingest
from pipelines.pairing.batches import (
    DEFAULT_TEXT_BUDGET,
    MIN_GROUP_CHARS,
    SPLIT_GROUPS,
    current,
    group_chars,
    pair_scope,
)
from pipelines.pairing.pairs import PairingOptions
from pipelines.scopes import ScopeMapping
from pipelines.tables import DataLayout
from pipelines.tools.synth import SynthSpec, generate


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


def test_a_scope_under_the_budget_is_split_into_a_few_groups_of_a_floor_size():
    # Small scopes are paired at once; larger ones in up to SPLIT_GROUPS groups, never below the floor.
    assert group_chars(MIN_GROUP_CHARS, DEFAULT_TEXT_BUDGET) == MIN_GROUP_CHARS
    assert group_chars(100 * 2**20, DEFAULT_TEXT_BUDGET) == MIN_GROUP_CHARS
    assert group_chars(SPLIT_GROUPS * 20 * 2**20, DEFAULT_TEXT_BUDGET) == 20 * 2**20
    # The budget stays the ceiling, for any scope and for a budget below the floor.
    assert group_chars(10**12, DEFAULT_TEXT_BUDGET) == DEFAULT_TEXT_BUDGET
    assert group_chars(10**6, 20_000) == 20_000
