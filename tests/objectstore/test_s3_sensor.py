"""The landing sensor on an ``s3://`` prefix, and the ingest run it asks for, against a real S3 server.

Only complete objects are taken: an upload still in progress (multipart, not completed) is not listed by
S3 at all, and temporary or hidden names are skipped; the run a request starts stages that one object
and publishes its manifest to the bucket.
"""

from __future__ import annotations

import json

import dagster as dg
import polars as pl

from assets.destination import EngramiaDestination
from assets.ingest import DUMP_TAG, raw_thread_exports
from assets.jobs import ALL_ASSETS, DATA_DIR_TAG, SCOPE_TAG
from assets.resources import BackfillSettings
from pipelines.objectstore.settings import S3Settings
from tests.conftest import SAMPLE, msg
from tests.objectstore.support import upload
from tests.support.graph import tick

FIRST = sorted(SAMPLE.glob("*.ndjson"))[0]


def _ingest(settings: BackfillSettings, instance: dg.DagsterInstance, tags: dict[str, str]) -> None:
    result = dg.materialize(
        ALL_ASSETS,
        selection=dg.AssetSelection.assets(raw_thread_exports),
        resources={"settings": settings, "engramia": EngramiaDestination()},
        instance=instance,
        tags=tags,
    )
    assert result.success


def test_sensor_takes_complete_objects_only(s3_env, tmp_path):
    bucket = s3_env.new_bucket()
    client = s3_env.client()
    upload(s3_env, bucket, f"data/landing/{FIRST.name}", FIRST)
    for temporary in (".hidden.ndjson", "_copying.ndjson", "export.ndjson.part", "export.ndjson.tmp"):
        client.put_object(Bucket=bucket, Key=f"data/landing/{temporary}", Body=FIRST.read_bytes())
    line = json.dumps(msg("t_big", "m_big", "user", "Plot revenue by month please", 0)) + "\n"
    upload_id = client.create_multipart_upload(Bucket=bucket, Key="data/landing/big.ndjson")["UploadId"]
    part = client.upload_part(
        Bucket=bucket, Key="data/landing/big.ndjson", UploadId=upload_id, PartNumber=1, Body=line.encode()
    )
    settings = BackfillSettings(data_dir=f"s3://{bucket}/data", work_dir=str(tmp_path / "work"))
    instance = dg.DagsterInstance.ephemeral()

    (request,) = tick(instance, settings).run_requests
    url = f"s3://{bucket}/data/landing/{FIRST.name}"
    assert request.run_key.startswith(f"ingest:{url}:")
    assert request.tags[DATA_DIR_TAG] == f"s3://{bucket}/data" and DUMP_TAG in request.tags

    _ingest(settings, instance, request.tags)
    manifest = pl.read_parquet(
        f"s3://{bucket}/data/staged/_manifest/dumps.parquet",
        storage_options=S3Settings().polars_storage_options(),
    )
    assert manifest["file"].to_list() == [url]
    assert manifest["dump_id"].to_list() == [request.tags[DUMP_TAG]]

    # Staged: the next tick asks for nothing more to ingest, and for one run per scope instead.
    requests = tick(instance, settings).run_requests
    assert requests and all(r.tags.get(SCOPE_TAG) and r.tags[DATA_DIR_TAG] for r in requests)

    # The multipart upload completes: now it is an object, and a dump.
    client.complete_multipart_upload(
        Bucket=bucket,
        Key="data/landing/big.ndjson",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
    )
    ingests = [r for r in tick(instance, settings).run_requests if r.run_key.startswith("ingest:")]
    assert [r.run_key.rsplit(":", 1)[0] for r in ingests] == [f"ingest:s3://{bucket}/data/landing/big.ndjson"]
