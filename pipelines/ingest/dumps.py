"""Dump files: finding them, naming them, and reading them in newline-aligned chunks.

A dump is read in byte chunks cut at line ends, so memory stays bounded whatever the file size. Each
chunk is split into lines by Polars (keeping line numbers, blank lines included); nothing is pulled into
Python objects line by line, except to locate the lines of a chunk that holds invalid UTF-8.

A dump is a file, or one member of a ``.zip``; ``.gz`` and ``.zst`` files are read decompressed, as a
stream. Which shape a dump is in is decided per dump from its content (:mod:`pipelines.ingest.formats`).

Invariant: the chunks of a file hold every line of it exactly once, numbered from 1 without gaps across
chunks, so a dump's line count is the sum of its chunks' counts.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, Full, Queue

import polars as pl

from pipelines.ingest.formats.stream import COMPRESSED_SUFFIXES, compression, open_member, zip_members
from pipelines.objectstore.origins import read_origins

# Content suffixes, each also accepted compressed (``.ndjson.gz``, ``.json.zst``); a ``.zip`` is read
# member by member (its members with a content suffix).
CONTENT_SUFFIXES = (".ndjson", ".jsonl", ".json")
DUMP_SUFFIXES = (*CONTENT_SUFFIXES, *COMPRESSED_SUFFIXES)
# A chunk's working set (its bytes, lines, Arrow in and out) is a few times its size and up to three
# chunks are in flight. Measured on the benchmark machine, 16-24 MB chunks ran faster than 64 MB ones
# (cache locality); per-chunk overhead (one query, one row group per scope) is noise at this size.
DEFAULT_CHUNK_BYTES = 24 * 1024 * 1024


@dataclass(frozen=True)
class Dump:
    path: Path
    size: int
    mtime_ns: int
    member: str | None = None  # the file inside a .zip
    # A local copy of an object (pipelines.objectstore.origins): its URL and ETag name the dump.
    origin: str | None = None
    etag: str | None = None

    @property
    def plain(self) -> bool:
        """A file read as it is: neither compressed nor a member of a zip."""
        return self.member is None and compression(self.path) is None

    @property
    def label(self) -> str:
        """How the dump is named in the manifest, quarantine rows and messages: the path (an object's
        URL), and for a zip member ``archive.zip!member``."""
        base = self.origin or str(self.path)
        return f"{base}!{self.member}" if self.member else base

    @property
    def dump_id(self) -> str:
        """Stable for an unchanged file; a rewritten or grown file is a new dump (its old lines then
        come back as exact repeats, which the message stage collapses). The full path takes part, so two
        files of one name, size and time in different folders stay two dumps."""
        if self.origin:
            # Key, size and ETag: the same object is one dump wherever it was copied to, and a
            # replaced object (a new ETag) is a new delivery.
            key = f"{self.origin}|{self.size}|etag:{self.etag}"
        else:
            key = f"{self.path}|{self.size}|{self.mtime_ns}"
        key += f"|{self.member}" if self.member else ""
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        name = Path(self.member).stem if self.member else Path(self.origin or self.path).stem
        stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40]
        return f"{stem}-{digest}"


def discover_dumps(source: Path) -> list[Dump]:
    """The dump files under ``source`` (a file or a folder, searched recursively), in name order,
    which is also the ingest order that breaks ``created_at`` ties between dumps."""
    source = Path(source)
    if source.is_file():
        files = [source]
    elif source.is_dir():
        files = sorted(
            p
            for p in source.rglob("*")
            if p.is_file() and is_dump_name(p.name) and not p.name.startswith(".")
        )
    else:
        raise FileNotFoundError(f"input not found: {source}")
    origins = read_origins(source) if source.is_dir() else {}
    dumps: list[Dump] = []
    for p in files:
        st = p.stat()
        origin, etag = (
            origins.get(p.relative_to(source).as_posix(), (None, None)) if origins else (None, None)
        )
        if compression(p) == "zip":
            dumps.extend(
                Dump(p.resolve(), st.st_size, st.st_mtime_ns, m, origin, etag)
                for m in zip_members(p)
                if is_dump_name(m, False)
            )
        else:
            dumps.append(Dump(p.resolve(), st.st_size, st.st_mtime_ns, None, origin, etag))
    return dumps


def is_dump_name(name: str, packed: bool = True) -> bool:
    """Whether a file of this name is read as a dump: a content suffix, compressed or not, or a zip."""
    lower = name.lower()
    if packed and lower.endswith(".zip"):
        return True
    for suffix in (".gz", ".zst"):
        if lower.endswith(suffix):
            lower = lower[: -len(suffix)]
            break
    return lower.endswith(CONTENT_SUFFIXES)


def line_count(data: bytes) -> int:
    """Lines in ``data``: one per newline, and a last line without one."""
    return data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


def _chunk_bytes(dump: Dump | Path, chunk_bytes: int) -> Iterator[bytes]:
    """Newline-aligned chunks of about ``chunk_bytes``; a plain file is read chunk by chunk in one read
    each (its end found first), a stream by reading on to the end of the line."""
    path, member = (dump.path, dump.member) if isinstance(dump, Dump) else (dump, None)
    plain = dump.plain if isinstance(dump, Dump) else compression(path) is None
    if plain:
        yield from _file_chunks(path, chunk_bytes)
        return
    with open_member(path, member) as f:
        while data := f.read(chunk_bytes):
            if not data.endswith(b"\n"):
                data += f.readline()
            yield data


# Bytes read at a time while looking for the end of a chunk's last line.
_PEEK = 64 * 1024


def _file_chunks(path: Path, chunk_bytes: int) -> Iterator[bytes]:
    """A file's chunks, each read at once into its own buffer once its last line's end is known. The
    same chunks as reading ``chunk_bytes`` and then the rest of the line, without that concatenation's
    copy of every chunk (0.3-0.6 s of CPU per 1.25 GB, measured)."""
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        pos = 0
        while pos < size:
            end = _line_end(f, pos + chunk_bytes, size)
            f.seek(pos)
            data = f.read(end - pos)
            # A single read may return fewer bytes (a regular file rarely does): the rest is appended.
            while len(data) < end - pos:
                more = f.read(end - pos - len(data))
                if not more:
                    raise RuntimeError(f"{path}: shorter than when its reading began")
                data += more
            yield data
            pos = end


def _line_end(f: io.RawIOBase, at: int, size: int) -> int:
    """The offset just past the newline that ends the line holding byte ``at - 1`` (``size`` if none)."""
    if at >= size:
        return size
    f.seek(at - 1)
    offset = at - 1
    while block := f.read(_PEEK):
        newline = block.find(b"\n")
        if newline >= 0:
            return offset + newline + 1
        offset += len(block)
    return size


def _bad_utf8_lines(data: bytes, first: int) -> list[int]:
    # isascii() is a memory scan with no allocation: nearly every chunk is done here.
    if data.isascii():
        return []
    try:
        data.decode("utf-8")
        return []
    except UnicodeDecodeError:
        pass
    bad: list[int] = []
    for i, raw in enumerate(data.split(b"\n")):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            bad.append(first + i)
    return bad


def _lines_frame(data: bytes, first: int) -> pl.DataFrame:
    # NUL never appears in valid JSON text, so as a separator it leaves every real line whole.
    frame = pl.read_csv(
        io.BytesIO(data),
        has_header=False,
        separator="\x00",
        quote_char=None,
        schema={"line": pl.String},
        encoding="utf8-lossy",
        extra_columns="ignore",
    )
    # The reader splits at "\n" alone (a "\r" before it is dropped, one elsewhere kept in its line), so
    # its rows are the chunk's lines; counted again, as a check, only where a "\r" could say otherwise
    # (counting every chunk cost ~0.4 s of CPU per GB).
    if b"\r" in data and frame.height != (count := line_count(data)):
        raise RuntimeError(f"line split mismatch: expected {count} lines, read {frame.height}")
    bad = _bad_utf8_lines(data, first)
    return frame.with_row_index("line_no", offset=first).with_columns(
        pl.col("line_no").cast(pl.Int64),
        pl.col("line_no").is_in(bad).alias("bad_utf8") if bad else pl.lit(False).alias("bad_utf8"),
    )


def split_chunks(dump: Dump | Path, chunk_bytes: int) -> Iterator[tuple[bytes, pl.DataFrame]]:
    """``(bytes, lines frame)`` per newline-aligned chunk of the dump's (decompressed) content, a row
    per line; the frame has ``line_no`` (numbered from 1 across chunks), ``line`` and ``bad_utf8``."""
    first = 1
    for data in _chunk_bytes(dump, chunk_bytes):
        frame = _lines_frame(data, first)
        yield data, frame
        first += frame.height


def prefetched[T](items: Iterator[T], depth: int = 1) -> Iterator[T]:
    """Iterate ``items`` on a background thread, at most ``depth`` items ahead of the consumer."""
    queue: Queue[T | BaseException | object] = Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        queue.put(item, timeout=0.1)
                        break
                    except Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # handed to the consumer, which re-raises it
            queue.put(exc)
            return
        queue.put(done)

    thread = threading.Thread(target=produce, name="ingest-reader", daemon=True)
    thread.start()
    try:
        while (item := queue.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        # The consumer stopped early (an error downstream): let the reader finish and go.
        stop.set()
        while thread.is_alive():
            try:
                queue.get_nowait()
            except Empty:
                thread.join(0.05)
