"""A large ChatGPT export read in chunks on worker processes gives exactly what its reader gives reading the
file itself: the same records, ``order`` and positions, the same staged rows, records table and quarantine,
whether the file is one line or pretty-printed, and when cuts fall inside elements (nested lists of objects,
text that looks like a boundary). A file the chunks cannot read is read by the reader alone."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from pipelines.ingest import array_chunks, staging
from pipelines.ingest.array_chunks import NotSplittable, array_batches
from pipelines.ingest.formats.base import ReaderOptions, using_reader_options
from pipelines.ingest.formats.chatgpt import ChatGptExport
from pipelines.ingest.records import record_batches
from pipelines.ingest.staging import ingest
from pipelines.scopes import ScopeMapping
from pipelines.tables import DataLayout
from pipelines.tools import shapes
from pipelines.tools.shapes_chat import chatgpt_conversation

FMT = "chatgpt-export"


def _export() -> list[Any]:
    """Conversations with what makes a cut land inside an element: nested lists of objects with a first
    key (citations), texts holding ``}, {"title":`` (escaped) and a string that ends in ``}, {`` followed
    by a key starting with a colon (a cut the pattern cannot tell from a boundary); and values that are
    not conversations."""
    base = shapes.conversations()
    out: list[Any] = []
    for i in range(60):
        conv = chatgpt_conversation(shapes.Conversation(f"c{i}", base[i % len(base)].messages), i % 3)
        message = next(
            n["message"]
            for n in conv["mapping"].values()
            if n.get("message") and n["message"]["content"].get("parts")
        )
        message["metadata"]["citations"] = [{"title": f"t{j}", "url": "u"} for j in range(3)]
        message["metadata"]["trap"] = {"x }, {": 1, ":k": "}, {"}
        message["content"]["parts"] = [f'see }}, {{"title": "{i}"}} here', *message["content"]["parts"][1:]]
        out.append(conv)
    out[7:7] = [5, {"title": "no mapping"}, "text"]
    return out


def _frames(batches: Any) -> tuple[pl.DataFrame, pl.DataFrame]:
    parts = list(batches)
    lines = [p[0] if isinstance(p[0], pl.DataFrame) else pl.from_arrow(p[0]) for p in parts]
    return pl.concat(lines), pl.concat([p[1] for p in parts])


@pytest.mark.parametrize("indent", [None, 1])
@pytest.mark.parametrize("chunk_bytes", [300, 5_000])
def test_chunks_give_the_records_the_reader_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, indent: int | None, chunk_bytes: int
) -> None:
    joins: list[int] = []
    join = array_chunks._Span.__add__
    monkeypatch.setattr(array_chunks._Span, "__add__", lambda a, b: joins.append(a.size) or join(a, b))
    monkeypatch.setattr(array_chunks, "_HASH_BYTES", 4096)
    # What follows the array's "]" is not read as records, but is part of the file's checksum.
    data = b" \n" + json.dumps(_export(), indent=indent).encode() + b'\n{"after": 1}, {"the": "array"}\n'
    path = _file(tmp_path, data)
    with using_reader_options(ReaderOptions(assistant_name=None)):
        expected = _frames(record_batches(ChatGptExport().read(io.BytesIO(data), "conversations.json")))
        sha = hashlib.sha256()
        got = _frames(array_batches(path, FMT, sha, chunk_bytes=chunk_bytes))
    assert sha.hexdigest() == hashlib.sha256(data).hexdigest()  # the whole file, for the dump's checksum
    assert got[0].height == expected[0].height > 400
    assert_frame_equal(got[0], expected[0])
    assert_frame_equal(got[1], expected[1])
    # Small chunks end inside elements (the citations, the text that looks like a boundary).
    assert len(joins) > 10 or chunk_bytes > 1_000


def _file(tmp: Path, data: bytes) -> Path:
    path = tmp / "conversations.json"
    path.write_bytes(data)
    return path


def test_the_assistant_name_reaches_the_workers(tmp_path: Path) -> None:
    path = _file(tmp_path, json.dumps(_export()).encode())
    with using_reader_options(ReaderOptions(assistant_name="support-bot")):
        lines, _ = _frames(array_batches(path, FMT, chunk_bytes=2_000))
    assert set(lines["c_assistant_id"].drop_nulls()) == {"support-bot"}


@pytest.mark.parametrize(
    "data",
    [
        b'[{"mapping": {}}, {"mapping": {}, "x": tru}, {"mapping": {}}]',  # a malformed element
        b'[{"mapping": {}}, {"mapping": {}, "x": "unterminated',  # cut short
        b'{"mapping": {}}',  # not an array
    ],
)
def test_what_chunks_cannot_read_is_left_to_the_reader(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(NotSplittable):
        list(array_batches(_file(tmp_path, data), FMT, chunk_bytes=10))


@pytest.mark.parametrize(
    "big",
    [{"mapping": {}, "list": [{"k": "v" * 50} for _ in range(200)]}, {"mapping": {}, "text": "v" * 10_000}],
    ids=["cuts-inside-the-element", "no-cut-within-the-limit"],
)
def test_an_element_larger_than_the_join_limit_is_left_to_the_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, big: dict[str, Any]
) -> None:
    monkeypatch.setattr(array_chunks, "MAX_JOINED_BYTES", 4_000)
    with pytest.raises(NotSplittable):
        list(array_batches(_file(tmp_path, json.dumps([big, big]).encode()), FMT, chunk_bytes=1_000))


# Where each copy was landed: the dump's id (made from its file's time as well) and its path.
_HERE = ("dump_id", "file")


def _staged(tmp: Path, data: bytes, monkeypatch: pytest.MonkeyPatch, chunks: bool) -> dict[str, pl.DataFrame]:
    read_in_chunks: list[Path] = []

    def spied(path: Path, *args: Any, **kwargs: Any) -> Any:
        read_in_chunks.append(path)
        return array_batches(path, *args, **kwargs)

    monkeypatch.setattr(staging, "array_batches", spied)
    landing = tmp / "landing"
    landing.mkdir(parents=True)
    (landing / "conversations.json").write_bytes(data)
    layout = DataLayout.at(tmp / "data")
    monkeypatch.setattr(array_chunks, "MIN_BYTES", 0 if chunks else 1 << 60)
    monkeypatch.setattr(array_chunks, "CHUNK_BYTES", 3_000)
    (result,) = ingest(layout, landing, ScopeMapping())
    assert len(read_in_chunks) == int(chunks)  # the staging took the chunks only where they were due
    raw = pl.read_parquet(sorted(layout.staged.glob("raw/**/*.parquet")), include_file_paths="file")
    return {
        "raw": raw.with_columns(scope=pl.col("file").str.extract(r"scope=([^/]+)")).sort("scope", "line_no"),
        "records": pl.read_parquet(layout.records(result.dump_id)).sort("line_no"),
        "quarantine": pl.read_parquet(list(layout.quarantine().glob("*.parquet"))).sort("line_no"),
    }


@pytest.mark.parametrize(
    "tail", [b"]\n", b'{"mapping": {}, "x": tru}]\n'], ids=["well-formed", "malformed-last-element"]
)
def test_a_dump_staged_in_chunks_is_the_dump_staged_by_its_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tail: bytes
) -> None:
    data = json.dumps(_export()).encode()[:-1] + (b", " + tail if tail != b"]\n" else tail)
    chunked = _staged(tmp_path / "chunks", data, monkeypatch, chunks=True)
    alone = _staged(tmp_path / "reader", data, monkeypatch, chunks=False)
    for name, frame in alone.items():
        assert frame.height > 0
        assert_frame_equal(chunked[name].drop(_HERE, strict=False), frame.drop(_HERE, strict=False))
    if tail != b"]\n":
        # The last element, with nothing after it to read on from: the rest of the file, from it on.
        assert alone["quarantine"]["reason"].str.starts_with("malformed JSON: nothing from $[").any()


def test_a_process_that_leaves_its_chunks_unfinished_still_exits(tmp_path: Path) -> None:
    """The workers are daemons: a worker process of the caller's own (the CLI runs ingest in one) that
    ends without closing the batches, interrupted on another thread, ends them instead of waiting for
    them forever (such a process exits without shutting its pools down)."""
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps(_export() * 20))
    script = tmp_path / "leave.py"
    script.write_text(
        "import multiprocessing\n"
        "from pathlib import Path\n"
        "from pipelines.ingest.array_chunks import array_batches\n"
        "LEFT = []\n"
        "def leave(where: str) -> None:\n"
        "    path = Path(where)\n"
        "    batches = array_batches(path, 'chatgpt-export', chunk_bytes=2_000)\n"
        "    LEFT.append((batches, next(batches)))\n"
        "if __name__ == '__main__':\n"
        f"    child = multiprocessing.get_context('spawn').Process(target=leave, args=({str(path)!r},))\n"
        "    child.start()\n"
        "    child.join(60)\n"
        "    print(child.exitcode)\n"
        "    child.kill()\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], cwd=Path.cwd(), capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip() == "0", done.stderr
