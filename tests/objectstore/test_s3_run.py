"""``run`` with ``--input s3://`` and ``--data-dir s3://`` against a real S3-compatible server.

The same dumps give the same tables and the same loaded store as a run on local folders; a second run,
on another working copy (another machine), ingests only the new object; analysts' views answer over the
bucket; wrong credentials or a missing bucket stop the run before any work with one line.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from pipelines.objectstore.lease import LEASE_KEY
from pipelines.objectstore.settings import S3Settings
from pipelines.objectstore.warehouse import connect
from tests.conftest import SAMPLE, msg, write_ndjson
from tests.objectstore.support import TABLES, embedded_store, local_table, pulled, s3_table, upload
from tests.support.cli import cli
from tests.support.s3_server import S3Server


def _run(capfd: pytest.CaptureFixture[str], source: str, data: str, work: Path | None, code: int = 0) -> dict:
    extra = ["--work-dir", str(work)] if work else []
    return cli(capfd, "run", "--input", source, "--data-dir", data, *extra, code=code)


def _landing(server: S3Server, bucket: str) -> str:
    for dump in sorted(SAMPLE.glob("*.ndjson")):
        upload(server, bucket, f"landing/{dump.name}", dump)
    return f"s3://{bucket}/landing"


def _new_dump(folder: Path) -> Path:
    return write_ndjson(
        folder / "assistants-export-2026-09-01.ndjson",
        [
            msg("thread_new", "m_new_1", "user", "Write a SQL query for monthly revenue", 0, "asst_analyst"),
            msg(
                "thread_new", "m_new_2", "assistant", "SELECT date_trunc('month', at) ...", 5, "asst_analyst"
            ),
        ],
    )


def test_s3_run_equals_local_run_and_takes_only_new_objects(s3_env, capfd, tmp_path):
    bucket = s3_env.new_bucket()
    source, data = _landing(s3_env, bucket), f"s3://{bucket}/data"
    settings = S3Settings()

    local_in = tmp_path / "local-in"
    local_in.mkdir()
    for dump in SAMPLE.glob("*.ndjson"):
        (local_in / dump.name).write_bytes(dump.read_bytes())
    remote = _run(capfd, source, data, tmp_path / "work-a")
    local = _run(capfd, str(local_in), str(tmp_path / "local"), None)
    assert remote["ok"] and local["ok"]
    assert remote["data_dir"] == data
    assert remote["this_run"]["dumps"] == local["this_run"]["dumps"] == 2
    assert {f["file"] for f in remote["this_run"]["files"]} == {
        f"{source}/{d.name}" for d in SAMPLE.glob("*.ndjson")
    }
    for name in TABLES:
        assert s3_table(data, name, settings).equals(local_table(tmp_path / "local", name)), name
    # The store published to the bucket, pulled by a machine that never ran anything, is the local one.
    elsewhere = pulled(data, settings, tmp_path / "elsewhere")
    assert embedded_store(elsewhere) == embedded_store(tmp_path / "local")
    assert not s3_env.client().list_objects_v2(Bucket=bucket, Prefix=f"data/{LEASE_KEY}").get("KeyCount")

    # A new object, and a run from another working copy: only the new dump is read.
    upload(s3_env, bucket, "landing/assistants-export-2026-09-01.ndjson", _new_dump(local_in))
    second = _run(capfd, source, data, tmp_path / "work-b")
    assert second["ok"] and second["this_run"]["dumps"] == 1
    assert [f["file"] for f in second["this_run"]["files"]] == [
        f"{source}/assistants-export-2026-09-01.ndjson"
    ]
    third = _run(capfd, source, data, tmp_path / "work-a")
    assert third["ok"] and third.get("this_run", {}).get("dumps", 0) == 0

    # The same two runs on local folders give the same tables and store.
    again = _run(capfd, str(local_in), str(tmp_path / "local"), None)
    assert again["ok"] and again["this_run"]["dumps"] == 1
    for name in TABLES:
        assert s3_table(data, name, settings).equals(local_table(tmp_path / "local", name)), name
    elsewhere = pulled(data, settings, tmp_path / "elsewhere")
    assert embedded_store(elsewhere) == embedded_store(tmp_path / "local")


def test_warehouse_views_answer_over_the_bucket(s3_env, capfd, tmp_path):
    bucket = s3_env.new_bucket()
    data = f"s3://{bucket}/data"
    _run(capfd, _landing(s3_env, bucket), data, tmp_path / "work")
    _run(capfd, str(SAMPLE), str(tmp_path / "local"), None)
    con = connect(data, S3Settings())
    local = duckdb.connect(str(tmp_path / "local" / "warehouse.duckdb"), read_only=True)
    query = "SELECT scope, count(*) AS n FROM kept_patterns GROUP BY scope ORDER BY scope"
    assert con.execute(query).fetchall() == local.execute(query).fetchall()
    assert con.execute("SELECT count(*) FROM manifest").fetchall() == [(2,)]
    assert (
        con.execute("SELECT count(*) FROM ledger").fetchall()
        == local.execute("SELECT count(*) FROM ledger").fetchall()
    )


def test_wrong_secret_or_missing_bucket_stops_before_any_work(s3_env, capfd, tmp_path, monkeypatch):
    bucket = s3_env.new_bucket()
    source = _landing(s3_env, bucket)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-0123456789")
    out = _run(capfd, source, f"s3://{bucket}/data", tmp_path / "work", code=2)
    (failure,) = out["failures"]
    assert failure.startswith(f"--data-dir s3://{bucket}/data: ")
    assert "refused the credentials" in failure and "AWS_SECRET_ACCESS_KEY" in failure
    assert "not-the-secret" not in out["_stderr"] + failure
    assert not (tmp_path / "work").exists()

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_env.secret)
    out = _run(capfd, source, "s3://no-such-bucket-here/data", tmp_path / "work", code=2)
    assert out["failures"] == [
        f"--data-dir s3://no-such-bucket-here/data: the bucket does not exist at {s3_env.endpoint}: "
        "create it, or fix the bucket name"
    ]
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    out = _run(capfd, source, str(tmp_path / "local"), None, code=2)
    assert "set AWS_ACCESS_KEY_ID" in out["failures"][0] and out["failures"][0].startswith(
        f"--input {source}"
    )


def test_a_second_writer_is_refused_while_the_lease_is_held(s3_env, capfd, tmp_path):
    bucket = s3_env.new_bucket()
    s3_env.client().put_object(Bucket=bucket, Key=f"data/{LEASE_KEY}", Body=b'{"host": "pod-7", "pid": 1}')
    out = _run(capfd, _landing(s3_env, bucket), f"s3://{bucket}/data", tmp_path / "work", code=75)
    assert "host pod-7" in out["failures"][0]
    keys = [o["Key"] for o in s3_env.client().list_objects_v2(Bucket=bucket, Prefix="data/")["Contents"]]
    assert keys == [f"data/{LEASE_KEY}"]


def test_a_run_whose_publishing_fails_reports_once_and_fails(s3_env, capfd, tmp_path, monkeypatch):
    import assets.cli.remote as remote

    bucket = s3_env.new_bucket()
    source, data = _landing(s3_env, bucket), f"s3://{bucket}/data"
    run_in_copy = remote._run_in_copy

    def and_then_the_bucket_goes(*args, **kwargs):
        code = run_in_copy(*args, **kwargs)
        client = s3_env.client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=item["Key"])
        client.delete_bucket(Bucket=bucket)
        return code

    monkeypatch.setattr(remote, "_run_in_copy", and_then_the_bucket_goes)
    out = _run(capfd, source, data, tmp_path / "work", code=1)  # stdout is one JSON object
    assert out["ok"] is False and out["exit_code"] == 1
    assert out["scopes"], "the run's own report, not a second one"
    assert out["failures"][-1].startswith(f"--data-dir {data}: publishing the run failed (")


def test_a_refused_option_costs_no_lease_and_no_download(s3_env, capfd, tmp_path):
    bucket = s3_env.new_bucket()
    source, data = _landing(s3_env, bucket), f"s3://{bucket}/data"
    assert _run(capfd, source, data, tmp_path / "work")["ok"]
    work = tmp_path / "second-machine"
    extra = ["--work-dir", str(work), "--task-max-chars", "0"]
    out = cli(capfd, "run", "--input", source, "--data-dir", data, *extra, code=2)
    assert len(out["failures"]) == 1 and out["failures"][0].startswith("--task-max-chars 0")
    assert "working copy" not in out["_stderr"] and "published" not in out["_stderr"]
    # The lease would be released again at the end either way: no working copy is what shows none was taken.
    assert not work.exists()
