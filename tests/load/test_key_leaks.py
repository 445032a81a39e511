"""An API key never leaks: not to stdout or stderr (read after EVERY call, in-process and from the
installed command in a subprocess), not to log records, not to Dagster's event log or run records, and
not to any file of the data folder (Parquet content included, so the ledger too).

Each scan is shown able to see a key where one is, so its silence means something."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from assets.cli.instance import open_instance
from tests.support.cli import Console, cli, run
from tests.support.engramia_server import SAMPLE, EngramiaServer

pytestmark = pytest.mark.server
COMMAND = Path(sys.executable).with_name("assistants-backfill")


def files_containing(root: Path, needle: str) -> list[str]:
    """Every file under ``root`` whose bytes contain ``needle``, or whose Parquet content does
    (Parquet pages are compressed, so raw bytes alone would prove nothing)."""
    hits = []
    raw = needle.encode()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if raw in data:
            hits.append(str(path))
        elif path.suffix == ".parquet" or path.name.endswith(".parquet.tmp"):
            frame = pl.read_parquet(path)
            if needle in json.dumps(frame.to_dicts(), default=str, ensure_ascii=False):
                hits.append(str(path))
    return hits


def dagster_records(instance: dg.DagsterInstance) -> list[str]:
    """Every run of the instance (config and tags) and every event of its event log, serialised."""
    out = []
    for record in instance.get_runs():
        out.append(dg.serialize_value(record))
        out += [dg.serialize_value(entry) for entry in instance.all_logs(record.run_id)]
    return out


def assert_nowhere(keys: list[str], data: Path, printed: list[str], caplog: pytest.LogCaptureFixture) -> None:
    with open_instance(data) as instance:
        events = dagster_records(instance)
    assert len(events) > 20  # the runs and their events were read
    for key in keys:
        assert files_containing(data, key) == [], key
        assert not [text for text in printed if key in text]
        assert not [text for text in events if key in text]
        assert key not in caplog.text
        assert not [r for r in caplog.records if key in r.getMessage()]


def test_the_scans_see_a_key_where_there_is_one(tmp_path):
    key = "ebk_canary_" + "5" * 32
    pl.DataFrame({"x": [f"header Bearer {key}"] * 50}).write_parquet(
        tmp_path / "c.parquet", compression="zstd"
    )
    assert files_containing(tmp_path, key) == [str(tmp_path / "c.parquet")]
    with dg.instance_for_test() as instance:

        @dg.asset
        def noisy(context) -> None:  # a string annotation is not a context type to Dagster
            context.log.info(f"using {key}")

        dg.materialize([noisy], instance=instance)
        assert any(key in text for text in dagster_records(instance))


def test_api_keys_never_reach_files_logs_events_or_the_console(
    engramia_server: EngramiaServer, api_key_env, capfd, caplog, tmp_path, monkeypatch
):
    caplog.set_level(logging.DEBUG)
    console = Console(capfd)
    data = tmp_path / "data"
    monkeypatch.setenv("DAGSTER_HOME", str(data / "dagster_home"))
    wrong = "ebk_wrong_" + "7" * 32
    right = engramia_server.api_key
    rest = ("--scope-by", "single", "--destination", "rest-import", "--engramia-url", engramia_server.url)

    # a wrong key: a clear error naming the scope and the role, and the key nowhere
    summary = run(
        console, data, *rest, "--api-key-env", api_key_env(engramia_server, wrong), "--debug", code=1
    )
    error = summary["failed_scopes"]["default__default"]
    assert "HTTP 401" in error and "'admin' role" in error and "default__default" in error
    assert engramia_server.pattern_count() == 0

    env = api_key_env(engramia_server)
    summary = run(console, data, *rest, "--api-key-env", env, "--verbose", "--debug")
    assert summary["failed_checks"] == {} and summary["scopes"]["default__default"]["loaded"] == 10
    target = ("--data-dir", str(data), "--scope", "default__default", "--engramia-url", engramia_server.url)
    cli(console, "rollback", *target, "--api-key-env", env, "--dry-run")
    assert cli(console, "rollback", *target, "--api-key-env", env)["deleted"] == 10
    cli(console, "status", "--data-dir", str(data))

    assert len(console.printed) == 10 and all(isinstance(t, str) for t in console.printed)
    assert any("default__default" in text for text in console.printed)  # the calls did print
    assert (data / "staged" / "ledger").is_dir() and (data / "dagster_home").is_dir()
    assert_nowhere([right, wrong], data, console.printed, caplog)


def test_the_installed_command_prints_no_key(engramia_server, tmp_path, caplog):
    """The command in a process of its own (a wrong key over import, the right one over learn):
    whatever reaches its file descriptors is read."""
    data = tmp_path / "data"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(data / "dagster_home"),
        "LEAK_TEST_GOOD_KEY": engramia_server.api_key,
        "LEAK_TEST_BAD_KEY": "ebk_wrong_" + "3" * 32,
    }
    base = [str(COMMAND), "run", "--input", str(SAMPLE), "--data-dir", str(data), "--scope-by", "single"]
    printed = []
    for mode, key_env, code in (
        ("rest-import", "LEAK_TEST_BAD_KEY", 1),
        ("rest-learn", "LEAK_TEST_GOOD_KEY", 0),
    ):
        rest = ["--destination", mode, "--engramia-url", engramia_server.url, "--requests-per-minute", "0"]
        done = subprocess.run(
            [*base, *rest, "--api-key-env", key_env, "--verbose", "--debug"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == code, done.stdout + done.stderr
        printed += [done.stdout, done.stderr]
    assert "default__default" in printed[1] + printed[3]
    assert engramia_server.pattern_count() == 10
    assert_nowhere([env["LEAK_TEST_GOOD_KEY"], env["LEAK_TEST_BAD_KEY"]], data, printed, caplog)


def test_the_object_storage_secret_never_leaks(s3_server, tmp_path, caplog):
    """The command with s3:// locations, the keys under variable names of its own: a wrong secret (one
    line, exit 2), then the right one; neither secret is printed, written to the working copy, its
    Dagster records, or any object of the bucket."""
    bucket = s3_server.new_bucket()
    for dump in sorted(SAMPLE.glob("*.ndjson")):
        s3_server.client().upload_file(str(dump), bucket, f"landing/{dump.name}")
    work = tmp_path / "work"
    wrong = "wrongS3secret" + "9" * 27
    env = {**os.environ, "LEAK_S3_ID": s3_server.key_id, "LEAK_S3_SECRET": wrong}
    base = [str(COMMAND), "run", "--input", f"s3://{bucket}/landing", "--data-dir", f"s3://{bucket}/data"]
    s3 = ["--s3-endpoint-url", s3_server.endpoint, "--s3-key-id-env", "LEAK_S3_ID"]
    s3 += ["--s3-secret-env", "LEAK_S3_SECRET", "--work-dir", str(work), "--verbose", "--debug"]
    printed = []
    for secret, code in ((wrong, 2), (s3_server.secret, 0)):
        done = subprocess.run(
            [*base, *s3], env={**env, "LEAK_S3_SECRET": secret}, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == code, done.stdout + done.stderr
        printed += [done.stdout, done.stderr]
    assert "refused the credentials" in printed[1] and "LEAK_S3_SECRET" in printed[1]
    bucket_copy = tmp_path / "bucket"
    client = s3_server.client()
    for obj in client.list_objects_v2(Bucket=bucket)["Contents"]:
        target = bucket_copy / obj["Key"]
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, obj["Key"], str(target))
    assert (bucket_copy / "data" / "staged" / "_manifest" / "dumps.parquet").is_file()
    with open_instance(work / "data") as instance:
        events = dagster_records(instance)
    assert len(events) > 20
    for secret in (wrong, s3_server.secret):
        assert not [text for text in printed if secret in text]
        assert files_containing(work, secret) == [] and files_containing(bucket_copy, secret) == []
        assert not [text for text in events if secret in text]
        assert secret not in caplog.text
