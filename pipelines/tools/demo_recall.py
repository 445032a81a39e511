"""Show that every scope of the embedded store answers recall: the last step of ``make demo``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipelines.ingest.catalog import read_scopes
from pipelines.load.records import kept_patterns
from pipelines.load.store import engramia_scope, read_only_memory
from pipelines.tables import DataLayout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--store", type=Path, help="embedded store (default <data-dir>/engramia)")
    args = parser.parse_args(argv)
    layout = DataLayout.at(args.data_dir)
    # Read-only: recall would otherwise bump the score of every pattern it returns.
    memory = read_only_memory(args.store or layout.engramia)
    missing = 0
    for scope, tenant_id, project_id in read_scopes(layout).iter_rows():
        kept = kept_patterns(layout, scope)
        if kept is None:
            continue
        sample = kept.select("task", "key").head(1).collect()
        if sample.is_empty():
            continue
        task, key = sample.row(0)
        with engramia_scope(tenant_id, project_id):
            matches = memory.recall(task, limit=3, deduplicate=False)
            count = memory.metrics.pattern_count
        hit = next((m for m in matches if m.pattern_key == key), None)
        status = f"found ({hit.reuse_tier}, similarity {hit.similarity:.2f})" if hit else "NOT FOUND"
        missing += hit is None
        print(f"{tenant_id}/{project_id}: {count} patterns; recall({task[:50]!r}) -> {status}")
    print(f"Engramia store: {(args.store or layout.engramia)}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
