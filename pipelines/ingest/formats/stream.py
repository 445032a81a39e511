"""Streaming helpers for readers: decompressing opens and JSON values read one at a time.

Invariants: nothing here reads a whole file; :func:`json_values` yields every top-level value of a
stream exactly once, in order, each with its position (``line N`` for a value that starts on line N of a
line-oriented file, ``$[i]`` for the i-th element of a top-level array), and a value that does not parse
is yielded as a :class:`BadValue` carrying its raw text, so a reader can quarantine it instead of losing
it. After a broken element of an array, reading goes on at the next element; what cannot be read is one
:class:`BadValue` that says from where.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO

COMPRESSED_SUFFIXES = (".gz", ".zst", ".zip")
_READ = 1024 * 1024
# Text kept ahead of a value about to be parsed (see ``decode``).
_AHEAD = 256 * 1024
_DECODER = json.JSONDecoder()
# One value larger than this is not held in memory to be parsed: it is reported malformed.
MAX_VALUE_BYTES = 512 * 1024 * 1024


def compression(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return suffix[1:] if suffix in COMPRESSED_SUFFIXES else None


def inner_name(path: Path, member: str | None = None) -> str:
    """The name the content goes by: ``export.ndjson`` for ``export.ndjson.gz``, the member of a zip."""
    if member:
        # A member is decompressed by its own suffix (see ``open_member``), so it goes by the rest.
        return member[: -len(Path(member).suffix)] if _packed(member) else member
    return path.name[: -len(path.suffix)] if compression(path) else path.name


def _packed(member: str) -> bool:
    """Whether a zip member is itself compressed (``a.ndjson.gz``): read through its decompressor."""
    return compression(Path(member)) in ("gz", "zst")


def zip_members(path: Path) -> list[str]:
    """A zip's file members in name order (folders and hidden files left out)."""
    with zipfile.ZipFile(path) as archive:
        return sorted(
            i.filename
            for i in archive.infolist()
            if not i.is_dir()
            and not Path(i.filename).name.startswith((".", "__MACOSX"))
            and "__MACOSX/" not in i.filename
        )


@contextmanager
def open_member(path: Path, member: str | None = None) -> Iterator[BinaryIO]:
    """The decompressed content of a file (``.gz``, ``.zst``, or one member of a ``.zip``), streamed."""
    kind = compression(path)
    if kind in ("gz", "zst"):
        with open(path, "rb") as raw, _decompressed(raw, kind) as f:
            yield f
    elif kind == "zip":
        if member is None:
            raise ValueError(f"{path}: a zip is read member by member")
        # Discovery takes ``a.ndjson.gz`` members: they are decompressed as the same file outside a zip.
        inner = compression(Path(member)) if _packed(member) else None
        with (
            zipfile.ZipFile(path) as archive,
            archive.open(member) as raw,
            _decompressed(raw, inner) as f,  # type: ignore[arg-type]
        ):
            yield f
    else:
        with open(path, "rb") as f:
            yield f


@contextmanager
def _decompressed(raw: BinaryIO, kind: str | None) -> Iterator[BinaryIO]:
    if kind == "gz":
        with gzip.GzipFile(fileobj=raw, mode="rb") as f:
            yield f  # type: ignore[misc]
    elif kind == "zst":
        import zstandard

        with zstandard.ZstdDecompressor().stream_reader(raw) as f:
            yield io.BufferedReader(f)  # type: ignore[arg-type]
    else:
        yield raw


def _failure(text: str, start: int) -> int:
    """Where the value at ``start`` stops parsing."""
    try:
        _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        return exc.pos
    return start


# Where two elements of an array of objects seem to meet: after an object's "}", its comma and the next
# object's first key. Inside a string a quote is escaped, so this matches there only around a string that
# ends in "}, {". Chunked reading cuts an array here (pipelines.ingest.array_chunks).
ELEMENT_BOUNDARY = re.compile(rb'\}[ \t\r\n]*,[ \t\r\n]*(?=\{[ \t\r\n]*"[^"\\]{1,64}"[ \t\r\n]*:)')


@cache
def _boundary() -> re.Pattern[str]:
    return re.compile(ELEMENT_BOUNDARY.pattern.decode())


def _resume_at(text: str, start: int, failed_at: int) -> tuple[int, int] | None:
    """``(end of the broken part, start of the next element)`` for an array element at ``start`` that
    fails to parse at ``failed_at``, or None when no element after it parses.

    Elements seem to meet where array_chunks cuts an array. Such a place before the failure can be
    inside the broken element (an object in a list of it, which parsed) or swallowed by it (a string
    left open): an element read from there that ends past the failure is the latter, a true next one.
    """
    # From ``start`` itself: a stray "}" there (the end of an element read past) is a broken part alone.
    at = start
    while match := _boundary().search(text, at):
        at = match.end()
        try:
            _, end = _DECODER.raw_decode(text, at)
        except json.JSONDecodeError:
            continue
        if end > failed_at:
            return match.start() + 1, at
    return None


@dataclass(frozen=True)
class BadValue:
    """Text that is not a JSON value, with why."""

    raw: str
    reason: str  # "malformed JSON", "invalid UTF-8", "empty line"


def _text_chunks(stream: BinaryIO) -> Iterator[str]:
    pending = b""
    while block := stream.read(_READ):
        data = pending + block
        # Cut at a character boundary: a UTF-8 sequence is at most 4 bytes.
        cut = len(data)
        for back in range(1, min(4, len(data)) + 1):
            if data[-back] & 0xC0 != 0x80:
                cut = len(data) - back if data[-back] >= 0xC0 else len(data)
                break
        pending = data[cut:]
        yield decode_utf8(data[:cut])
    if pending:
        yield decode_utf8(pending)


# A byte that is not UTF-8, as ``decode_utf8`` keeps it.
_BAD_BYTE = re.compile("[\udc80-\udcff]")


def decode_utf8(data: bytes | memoryview) -> str:
    """``data`` as text; a byte that is not UTF-8 becomes U+DC80-U+DCFF (surrogateescape), not U+FFFD,
    so that the record holding it can be found and quarantined (see pipelines.ingest.records) rather
    than staged with its text changed. Valid text is decoded once, strictly: it costs no more."""
    try:
        return str(data, "utf-8")
    except UnicodeDecodeError:
        return str(data, "utf-8", "surrogateescape")


def json_values(stream: BinaryIO) -> Iterator[tuple[str, Any]]:
    """``(position, value)`` for each top-level JSON value of the stream, or the elements of a top-level
    array (``$[i]``); a part that does not parse is a :class:`BadValue` (in line-oriented text, the rest
    of its line is skipped and reading goes on at the next line; in an array, reading goes on at the next
    element boundary, see :func:`_resume_at`)."""
    chunks = _text_chunks(stream)
    buf = ""
    pos = 0
    line = 1
    eof = False
    # Characters and lines of the text dropped from ``buf`` so far: where a broken part starts is told
    # in the file's terms.
    offset = 0
    dropped_lines = 0

    def more(want: int = 1) -> bool:
        """Drop the text before ``pos`` and read at least ``want`` more characters (fewer at the end of
        the stream); False when there was nothing more. The buffer is joined once per call: a value
        that needs more text asks for as much again as it has, so a large one is copied and parsed a
        few times, not once per block."""
        nonlocal buf, pos, eof, offset, dropped_lines
        if eof:
            return False
        offset += pos
        dropped_lines += buf.count("\n", 0, pos)
        parts = [buf[pos:]]
        got = 0
        for chunk in chunks:
            parts.append(chunk)
            got += len(chunk)
            if got >= want:
                break
        else:
            eof = True
        buf = "".join(parts)
        pos = 0
        return got > 0

    def skip_ws() -> bool:
        """Skip whitespace (counting lines); False at the end of the stream."""
        nonlocal pos, line
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n\ufeff":
                if buf[pos] == "\n":
                    line += 1
                pos += 1
            if pos < len(buf):
                return True
            if not more():
                return False

    def decode(lines: bool = True) -> tuple[Any, str]:
        """The value at ``pos``, reading more text until it is complete; its raw text when ``lines``
        are counted (an element of an array needs neither)."""
        nonlocal pos, line
        # A value cut at the end of the buffer fails to parse and is parsed again with more text: the
        # buffer is topped up first, so that this happens only for values larger than the top-up.
        if len(buf) - pos < _AHEAD:
            more()
        while True:
            try:
                value, end = _DECODER.raw_decode(buf, pos)
            except json.JSONDecodeError:
                held = len(buf) - pos
                if held < MAX_VALUE_BYTES and more(min(held, MAX_VALUE_BYTES - held)):
                    continue
                raise
            raw = ""
            if lines:
                raw = buf[pos:end]
                line += raw.count("\n")
            pos = end
            return value, raw

    def broken(reason: str, where: str) -> BadValue:
        """The broken part of an array at ``pos``, whole, as one value; reading goes on at the next
        element that parses past the point of failure, or, with none, this takes the rest of the text."""
        nonlocal buf, pos, eof
        # As much text as a value may take is searched (a broken value has read that much already).
        if len(buf) - pos < MAX_VALUE_BYTES:
            more(MAX_VALUE_BYTES - (len(buf) - pos))
        resume = _resume_at(buf, pos, _failure(buf, pos))
        if resume is not None:
            end, pos_next = resume
            raw = buf[pos:end]
            pos = pos_next
            return BadValue(raw, reason)
        line_no = dropped_lines + buf.count("\n", 0, pos) + 1
        at = f"{where} (line {line_no}, character {offset + pos + 1})"
        raw = buf[pos:]
        cut = ""
        if not eof:
            # More than a value's limit is held: the record keeps that much, and the rest is read
            # through unkept (the dump's checksum covers the whole file).
            cut = f", cut at {len(raw)} characters"
            for _ in chunks:
                pass
            eof = True
        buf, pos = "", 0
        return BadValue(
            raw, f"{reason}: nothing from {at} on could be read (this record holds the rest{cut})"
        )

    if not skip_ws():
        return
    if buf[pos] == "[":
        pos += 1
        index = 0
        resynced = False
        while skip_ws():
            if buf[pos] == ",":
                pos += 1
                continue
            start_pos = f"$[{index}]"
            index += 1
            if buf[pos] == "]":
                pos += 1
                # What follows a well-formed array is left unread (as array_chunks does). After a
                # resynchronisation the "]" may have closed a list inside a broken element: what follows
                # it is then more of the array, not to be dropped.
                if not resynced or not skip_ws():
                    return
                yield start_pos, broken("text after the array's end", start_pos)
                continue
            try:
                value, _ = decode(lines=False)
            except json.JSONDecodeError:
                resynced = True
                yield start_pos, broken("malformed JSON", start_pos)
                continue
            yield start_pos, value
        return
    while skip_ws():
        start_line = line
        try:
            value, raw = decode()
        except json.JSONDecodeError:
            end = buf.find("\n", pos)
            while end < 0 and more():
                end = buf.find("\n", pos)
            end = len(buf) if end < 0 else end
            raw = buf[pos:end]
            pos = end
            reason = "invalid UTF-8" if _BAD_BYTE.search(raw) else "malformed JSON"
            yield f"line {start_line}", BadValue(raw, reason)
            continue
        yield f"line {start_line}", value
