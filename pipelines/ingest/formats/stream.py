"""Streaming helpers for readers: decompressing opens and JSON values read one at a time.

Invariants: nothing here reads a whole file; :func:`json_values` yields every top-level value of a
stream exactly once, in order, each with its position (``line N`` for a value that starts on line N of a
line-oriented file, ``$[i]`` for the i-th element of a top-level array), and a value that does not parse
is yielded as a :class:`BadValue` carrying its raw text, so a reader can quarantine it instead of losing it.
"""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
        return member
    return path.name[: -len(path.suffix)] if compression(path) else path.name


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
    if kind == "gz":
        with gzip.open(path, "rb") as f:
            yield f  # type: ignore[misc]
    elif kind == "zst":
        import zstandard

        with open(path, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as f:
            yield io.BufferedReader(f)  # type: ignore[arg-type]
    elif kind == "zip":
        if member is None:
            raise ValueError(f"{path}: a zip is read member by member")
        with zipfile.ZipFile(path) as archive, archive.open(member) as f:
            yield f  # type: ignore[misc]
    else:
        with open(path, "rb") as f:
            yield f


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
        yield data[:cut].decode("utf-8", errors="replace")
    if pending:
        yield pending.decode("utf-8", errors="replace")


def json_values(stream: BinaryIO) -> Iterator[tuple[str, Any]]:
    """``(position, value)`` for each top-level JSON value of the stream, or the elements of a top-level
    array (``$[i]``); a part that does not parse is a :class:`BadValue` (in line-oriented text, the rest
    of its line is skipped and reading goes on at the next line)."""
    chunks = _text_chunks(stream)
    buf = ""
    pos = 0
    line = 1
    eof = False

    def more() -> bool:
        nonlocal buf, pos, eof
        if eof:
            return False
        try:
            buf = buf[pos:] + next(chunks)
        except StopIteration:
            eof = True
            buf = buf[pos:]
            pos = 0
            return False
        pos = 0
        return True

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
                if len(buf) - pos < MAX_VALUE_BYTES and more():
                    continue
                raise
            raw = ""
            if lines:
                raw = buf[pos:end]
                line += raw.count("\n")
            pos = end
            return value, raw

    if not skip_ws():
        return
    if buf[pos] == "[":
        pos += 1
        index = 0
        while skip_ws():
            if buf[pos] == "]":
                return
            if buf[pos] == ",":
                pos += 1
                continue
            start_pos = f"$[{index}]"
            try:
                value, _ = decode(lines=False)
            except json.JSONDecodeError:
                # Inside an array nothing after a broken element can be trusted.
                rest = buf[pos : pos + 2000]
                yield start_pos, BadValue(rest, "malformed JSON")
                return
            yield start_pos, value
            index += 1
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
            reason = "invalid UTF-8" if "\ufffd" in raw else "malformed JSON"
            yield f"line {start_line}", BadValue(raw, reason)
            continue
        yield f"line {start_line}", value
