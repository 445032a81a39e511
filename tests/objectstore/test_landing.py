"""Which objects of a landing prefix are dumps, and when an object is a new delivery."""

from __future__ import annotations

import polars as pl

from pipelines.ingest.dumps import discover_dumps
from pipelines.objectstore.landing import complete_dumps, copy_to_scratch, ingested, is_temporary
from pipelines.objectstore.location import S3Location
from pipelines.objectstore.settings import S3Settings
from pipelines.objectstore.store import check_access
from pipelines.tables import MANIFEST_SCHEMA


def test_temporary_names_are_not_dumps():
    assert is_temporary(".x.ndjson") and is_temporary("a/_x.ndjson") and is_temporary("a/x.ndjson.PART")
    assert is_temporary("x.ndjson.tmp") and is_temporary("x.ndjson.partial")
    assert not is_temporary("exports/x.ndjson") and not is_temporary("x_1.ndjson.gz")


def test_a_replaced_object_is_a_new_dump(s3_env, tmp_path):
    bucket = s3_env.new_bucket()
    client = s3_env.client()
    client.put_object(Bucket=bucket, Key="in/a.ndjson", Body=b'{"x": 1}\n')
    client.put_object(Bucket=bucket, Key="in/notes.txt", Body=b"not a dump")
    store = check_access(S3Location.parse(f"s3://{bucket}/in"), S3Settings(), "--input")
    (obj,) = complete_dumps(store)
    (dump,) = discover_dumps(copy_to_scratch(store, [obj], tmp_path / "scratch"))
    assert dump.label == f"s3://{bucket}/in/a.ndjson" and dump.etag == obj.etag
    manifest = pl.DataFrame(
        [{"dump_id": dump.dump_id, "file": dump.label, "size": dump.size}], schema_overrides=MANIFEST_SCHEMA
    )
    assert ingested(store, obj, manifest)
    # The same bytes under the same key keep the ETag (and the dump); other bytes make a new delivery.
    client.put_object(Bucket=bucket, Key="in/a.ndjson", Body=b'{"x": 2}\n')
    (replaced,) = complete_dumps(store)
    assert replaced.etag != obj.etag and not ingested(store, replaced, manifest)
    (again,) = discover_dumps(copy_to_scratch(store, [replaced], tmp_path / "scratch"))
    assert again.dump_id != dump.dump_id and again.path.read_bytes() == b'{"x": 2}\n'
