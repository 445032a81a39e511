"""Whole backfills through pipelines.runner: scored patterns stay exact across incremental runs, and a
transform-only run imports none of the heavy libraries it does not need."""

from __future__ import annotations

import polars as pl
import pytest

from pipelines.ingest.catalog import read_scopes
from pipelines.pairing.batches import current
from pipelines.pairing.pairs import PairingOptions
from pipelines.runner import backfill
from pipelines.scoring.near_duplicates import near_duplicates
from pipelines.tables import DataLayout
from pipelines.tools.synth import SynthSpec, generate


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
