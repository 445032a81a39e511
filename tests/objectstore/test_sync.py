"""The working copy's two directions against a real S3 server: publish puts the manifest last and removes
what the run removed; pull drops what was never published; one of two concurrent writers gets the lease."""

from __future__ import annotations

import threading
from pathlib import Path

from pipelines.objectstore.lease import LeaseHeld, writer_lease
from pipelines.objectstore.location import S3Location
from pipelines.objectstore.settings import S3Settings
from pipelines.objectstore.store import ObjectStore, check_access
from pipelines.objectstore.sync import publish, pull


def _store(server, prefix: str = "data") -> ObjectStore:
    bucket = server.new_bucket()
    return check_access(S3Location.parse(f"s3://{bucket}/{prefix}"), S3Settings(), "--data-dir")


def _write(root: Path, relative: str, text: str) -> None:
    (root / relative).parent.mkdir(parents=True, exist_ok=True)
    (root / relative).write_text(text)


def test_publish_puts_the_manifest_last_and_leaves_local_files_out(s3_env, tmp_path):
    store = _store(s3_env)
    work = tmp_path / "copy"
    _write(work, "staged/_manifest/dumps.parquet", "m")
    _write(work, "staged/raw/dump=a/scope=s/part.parquet", "r")
    _write(work, "staged/_settled/scope=s.json", "{}")
    for local in ("dagster_home/runs.db", "staged/_claims/catalog.lock", "warehouse.duckdb", "x/.f.tmp"):
        _write(work, local, "local")
    sent = publish(store, work)
    assert sent.published[-1] == "staged/_manifest/dumps.parquet"
    assert sorted(sent.published) == sorted(
        [
            "staged/_manifest/dumps.parquet",
            "staged/raw/dump=a/scope=s/part.parquet",
            "staged/_settled/scope=s.json",
        ]
    )
    # Unchanged files are not sent again; a removed one is deleted from the bucket.
    (work / "staged/_settled/scope=s.json").unlink()
    again = publish(store, work)
    assert again.uploaded == 0 and again.deleted == 1
    assert sorted(o.relative for o in store.list()) == [
        "staged/_manifest/dumps.parquet",
        "staged/raw/dump=a/scope=s/part.parquet",
    ]


def test_pull_downloads_what_changed_and_drops_what_was_never_published(s3_env, tmp_path):
    store = _store(s3_env)
    first, second = tmp_path / "one", tmp_path / "two"
    _write(first, "staged/a.parquet", "a1")
    publish(store, first)
    assert pull(store, second).downloaded == 1 and (second / "staged/a.parquet").read_text() == "a1"
    _write(first, "staged/a.parquet", "a2-changed")
    publish(store, first)
    _write(second, "staged/unpublished.parquet", "left over by a run that stopped")
    figures = pull(store, second)
    assert figures.downloaded == 1 and figures.removed_locally == 1
    assert (second / "staged/a.parquet").read_text() == "a2-changed"
    assert not (second / "staged/unpublished.parquet").exists()
    assert pull(store, second).downloaded == 0


def test_of_two_concurrent_writers_one_gets_the_lease(s3_env):
    store = _store(s3_env)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []
    release = threading.Event()

    def writer() -> None:
        barrier.wait()
        try:
            with writer_lease(store):
                outcomes.append("held")
                release.wait(10)
        except LeaseHeld:
            outcomes.append("refused")

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    while len(outcomes) < 2 and any(t.is_alive() for t in threads):
        if "refused" in outcomes:
            release.set()
        threading.Event().wait(0.05)
    release.set()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["held", "refused"]
    with writer_lease(store):  # released: the next writer gets it
        pass
