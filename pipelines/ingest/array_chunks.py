"""A large top-level JSON array (a ChatGPT export's ``conversations.json``) read on worker processes.

Parsing JSON and walking each conversation hold the GIL: on a 1.5 GB export they were most of the
ingest's time, on one core. Here the main process cuts the array's bytes into chunks where two elements
seem to meet (``}``, a comma, ``{"key":``), and worker processes parse each chunk's elements, run the
reader over them (its ``values_records``) and send back the batches' frames, which the main process
classifies and writes as it does a reader's own batches.

A cut can look like a boundary and lie inside an element (a nested list of objects, text inside a
string). A chunk's result is used only once the chunk before it parsed to its very end as whole
elements: parsing from the array's first element, that proves each next chunk starts on a boundary. A
chunk that does not parse to its end is parsed again joined to the next one. What this cannot read (a
malformed element, an element larger than :data:`MAX_JOINED_BYTES`, a chunk that never parses) raises
:class:`NotSplittable` before the end, and the dump is read again by its reader alone, one value at a
time, which quarantines what does not parse.

Invariant: the records, their ``order`` (``line_no``) and positions (``$[i]...``) are those the reader
gives reading the file itself: each chunk numbers its own from zero and the main process adds the counts
of the chunks before.
"""

from __future__ import annotations

import json
import mmap
import multiprocessing.context
import os
import signal
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from pipelines.ingest.formats import reader
from pipelines.ingest.formats._chat import starts_json
from pipelines.ingest.formats.base import ReaderOptions, reader_options, using_reader_options
from pipelines.ingest.formats.stream import ELEMENT_BOUNDARY, decode_utf8
from pipelines.ingest.records import BATCH_RECORDS, record_batches

# Worth the worker processes' start (~0.5 s of imports each) only for a file of this size or more.
MIN_BYTES = 64 * 1024 * 1024
CHUNK_BYTES = 8 * 1024 * 1024
# A chunk joined to the next ones beyond this is not an element boundary problem but a file this cannot
# read (or one element of that size): the reader reads it instead.
MAX_JOINED_BYTES = 64 * 1024 * 1024
_READ_BYTES = 64 * 1024
_HASH_BYTES = 16 * 1024 * 1024
_WS = b" \t\r\n"
_BOM = b"\xef\xbb\xbf"
# Where a chunk may end: where two elements of an array of objects seem to meet.
_CUT = ELEMENT_BOUNDARY
_DECODER = json.JSONDecoder()

# A batch's lines to classify (Arrow, as classification takes them) and its rows of the record table.
type Batch = tuple[pa.Table, pl.DataFrame]


class NotSplittable(Exception):
    """The array cannot be read in chunks; its reader reads it one value at a time instead."""


def splittable(fmt: str, head: bytes, size: int) -> bool:
    """Whether a plain file of this shape, beginning with ``head``, is read in chunks."""
    return size >= MIN_BYTES and starts_json(head) == b"[" and hasattr(reader(fmt), "values_records")


@dataclass
class _Chunk:
    """What a worker made of one chunk: frames numbered from zero within the chunk."""

    frames: list[Batch] = field(default_factory=list)
    values: int = 0
    records: int = 0
    whole: bool = True  # every byte up to the chunk's end is whole elements (or the array's end)
    closed: bool = False  # the array's "]" is in this chunk


@dataclass(frozen=True)
class _Span:
    """A chunk's place in the file."""

    start: int
    size: int

    def __add__(self, later: _Span) -> _Span:
        return _Span(self.start, self.size + later.size)


def _read_chunk(fmt: str, options: ReaderOptions, path: str, span: _Span) -> _Chunk:
    """Runs on a worker: the chunk's elements, as the reader's batches."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        view = memoryview(data)
        # Decoded from the page cache where it is: no copy of the bytes first.
        text = decode_utf8(view[span.start : span.start + span.size])
        view.release()
    chunk = _Chunk()
    with using_reader_options(options):
        values = _values(text, chunk)
        del text
        for lines, meta in record_batches(reader(fmt).values_records(values)):  # type: ignore[attr-defined]
            chunk.records += lines.height
            # Arrow, the form classification takes: it pickles with a plain copy of its buffers.
            chunk.frames.append((lines.to_arrow(), meta))
    if not chunk.whole:
        chunk.frames = []
    return chunk


def _values(text: str, chunk: _Chunk) -> Iterator[tuple[str, Any]]:
    """The elements of ``text`` one at a time (each is walked while it is fresh in the cache: parsing a
    chunk's elements first and walking them after cost a third more), counted in ``chunk``. The loop is
    the one the reader runs over an array (:func:`pipelines.ingest.formats.stream.json_values`):
    whitespace and stray commas skipped, ``]`` ends the array."""
    pos, end = 0, len(text)
    while True:
        while pos < end and text[pos] in " \t\r\n\ufeff,":
            pos += 1
        if pos >= end:
            return
        if text[pos] == "]":
            chunk.closed = True
            return
        try:
            value, pos = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError:
            chunk.whole = False
            return
        yield f"$[{chunk.values}]", value
        chunk.values += 1


class _WorkerProcess(multiprocessing.context.SpawnProcess):
    """A daemon: if its pool is never shut down (the process that owns it interrupted on another
    thread), the owner's exit terminates it instead of waiting for it forever."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.daemon = True


class _WorkerContext(multiprocessing.context.SpawnContext):
    Process = _WorkerProcess


def _ignore_interrupts() -> None:
    # Ctrl-C reaches the whole process group: the main process stops the workers after their chunk.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _cuts(data: mmap.mmap, start: int, chunk_bytes: int) -> Iterator[_Span]:
    """The array's bytes from ``start`` (after its ``[``) in spans of about ``chunk_bytes``, each ending
    where two elements seem to meet; the last runs to the end of the file."""
    size = len(data)
    at = start
    while size - at > chunk_bytes:
        limit = min(size, at + MAX_JOINED_BYTES)
        match = _CUT.search(data, at + chunk_bytes - 1, limit)
        if match is None:
            if limit < size:
                raise NotSplittable(f"no element boundary within {MAX_JOINED_BYTES} bytes")
            break
        yield _Span(at, match.end() - at)
        at = match.end()
    if at < size:
        yield _Span(at, size - at)


def _hash(data: mmap.mmap, sha: Any, stop: threading.Event) -> None:
    view = memoryview(data)
    try:
        for at in range(0, len(data), _HASH_BYTES):
            if stop.is_set():
                return
            sha.update(view[at : at + _HASH_BYTES])  # without the GIL
            # Hashed pages leave this process (they stay in the page cache for the workers): mapped
            # and read, the whole file would count in its RSS.
            data.madvise(mmap.MADV_DONTNEED, at, min(_HASH_BYTES, len(data) - at))
    finally:
        view.release()


def array_batches(
    path: Path,
    fmt: str,
    sha: Any = None,
    chunk_bytes: int | None = None,
    workers: int | None = None,
) -> Iterator[Batch]:
    """``(lines, metadata)`` frames of the records of the array in the plain file ``path``, as
    :func:`pipelines.ingest.records.record_batches` gives them for its reader's records (a few more
    rows per batch); ``sha`` (a hashlib object) is given every byte of the file meanwhile. Raises
    :class:`NotSplittable` when the reader must read the file itself."""
    with path.open("rb") as f:
        if not os.fstat(f.fileno()).st_size:
            return
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    stop = threading.Event()
    hasher = None
    if sha is not None:
        hasher = threading.Thread(target=_hash, args=(data, sha, stop), name="ingest-sha256", daemon=True)
        hasher.start()
    try:
        yield from _batches(data, str(path), fmt, chunk_bytes or CHUNK_BYTES, workers)
    except BaseException:
        stop.set()  # no checksum is wanted of a read that failed
        raise
    finally:
        if hasher is not None:
            hasher.join()
        data.close()


def _batches(data: mmap.mmap, path: str, fmt: str, chunk_bytes: int, workers: int | None) -> Iterator[Batch]:
    head = data[:_READ_BYTES]
    start = head.lstrip(_WS).removeprefix(_BOM).lstrip(_WS)
    if start[:1] != b"[":
        raise NotSplittable("not a top-level array")
    chunks = _cuts(data, len(head) - len(start) + 1, chunk_bytes)
    options = reader_options()
    count = workers or min(2, os.cpu_count() or 1)
    pool = ProcessPoolExecutor(count, mp_context=_WorkerContext(), initializer=_ignore_interrupts)
    ahead: deque[tuple[Future[_Chunk], _Span]] = deque()
    values = records = 0
    out: list[Batch] = []
    held = 0

    def submit(span: _Span) -> tuple[Future[_Chunk], _Span]:
        return pool.submit(_read_chunk, fmt, options, path, span), span

    def top_up() -> None:
        while len(ahead) < 2 * count + 1 and (span := next(chunks, None)) is not None:
            ahead.append(submit(span))

    try:
        top_up()
        while ahead:
            future, span = ahead.popleft()
            chunk = future.result()
            if not chunk.whole:
                if not ahead and (nxt := next(chunks, None)) is not None:
                    ahead.append(submit(nxt))
                if not ahead:
                    raise NotSplittable("an element does not parse")
                later, more = ahead.popleft()
                later.cancel()
                joined = span + more
                if joined.size > MAX_JOINED_BYTES:
                    raise NotSplittable(f"no element boundary within {MAX_JOINED_BYTES} bytes")
                ahead.appendleft(submit(joined))
                continue
            for lines, meta in chunk.frames:
                out.append(_numbered(lines, meta, values, records))
                held += lines.num_rows
            values += chunk.values
            records += chunk.records
            if chunk.closed:
                break
            if held >= BATCH_RECORDS:
                yield _joined(out)
                out, held = [], 0
            top_up()
        if out:
            yield _joined(out)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _numbered(lines: pa.Table, meta: pl.DataFrame, values: int, records: int) -> Batch:
    """A chunk's frames with the element and record counts of the chunks before it added."""
    if not values and not records:
        return lines, meta
    at = lines.schema.get_field_index("line_no")
    # NumPy rather than pyarrow.compute, which costs a tenth of a second to import.
    lines = lines.set_column(at, "line_no", pa.array(lines.column(at).to_numpy() + records))
    index = pl.col("position").str.extract(r"^\$\[(\d+)\]", 1).cast(pl.Int64) + values
    return lines, meta.with_columns(
        pl.col("line_no") + records,
        position=pl.concat_str(
            pl.lit("$["),
            index.cast(pl.String),
            pl.lit("]"),
            pl.col("position").str.replace(r"^\$\[\d+\]", ""),
        ),
    )


def _joined(frames: list[Batch]) -> Batch:
    if len(frames) == 1:
        return frames[0]
    return pa.concat_tables([f[0] for f in frames]), pl.concat([f[1] for f in frames], rechunk=False)
