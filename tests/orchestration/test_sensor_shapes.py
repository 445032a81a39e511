"""Every saved shape runs through the door ops use: the landing sensor sees the files, asks for an ingest,
then for a run per scope, and the scope runs pass every check and pair what the guide's NDJSON pairs."""

from __future__ import annotations

import pytest

from assets.jobs import ingest_job, scope_job
from assets.partitions import SCOPES
from assets.resources import BackfillSettings
from pipelines.tables import DataLayout
from pipelines.tools import shapes
from tests.ingest.chat_support import guide_pairs, pairs_per_thread
from tests.support.graph import checks, ingest, scope_run, tick


@pytest.mark.parametrize("shape", ["chatgpt-zip", "chat-completions", "sharegpt", "compressed"])
def test_a_shape_goes_from_the_landing_folder_to_the_store(tmp_path, instance, shape):
    layout = DataLayout.at(tmp_path / "data")
    landing = tmp_path / "landing"
    files = shapes.write_shape(shape, landing)
    assert files
    settings = BackfillSettings(data_dir=str(layout.root), landing=str(landing), settle_seconds=0)

    requests = tick(instance, settings).run_requests
    assert requests and {r.job_name for r in requests} == {ingest_job.name}
    ingested = ingest(layout, landing, instance)
    assert ingested.success and checks(ingested) == {"dump_lines_reconcile": True}

    requests = tick(instance, settings).run_requests
    assert requests and {r.job_name for r in requests} == {scope_job.name}
    assert sorted(r.partition_key for r in requests) == sorted(instance.get_dynamic_partitions(SCOPES.name))
    for r in requests:
        result = scope_run(layout, landing, instance, r.partition_key)
        assert result.success and all(checks(result).values()), (shape, r.partition_key, checks(result))
        load = result.asset_materializations_for_node("engramia_scopes")[0].metadata
        assert load["stored"].value == load["pattern_count_after"].value - load["pattern_count_before"].value

    assert pairs_per_thread(layout) == guide_pairs(tmp_path / "guide")
