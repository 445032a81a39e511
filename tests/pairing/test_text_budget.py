"""Threads paired in groups under a memory budget give the same patterns as pairing them at once."""

from __future__ import annotations

from pipelines.ingest.catalog import read_scopes
from pipelines.ingest.messages import stage_messages
from pipelines.ingest.staging import ingest
from pipelines.pairing.batches import current, pair_scope
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
