"""What the chat-export readers (ChatGPT, Chat Completions, ShareGPT) share: detection by unescaped keys,
records for values that are not conversations, derived ids, and text of content parts.

Invariant: nothing here drops a value: a value that is not a conversation becomes one quarantined record
carrying its raw text.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from pipelines.ingest.formats.base import PartCounts, Record, cut_raw, quarantined
from pipelines.ingest.formats.stream import BadValue, json_values

_IMAGE_PARTS = ("image_url", "input_image", "image_file", "image_asset_pointer")
_FILE_PARTS = ("file", "input_file")


def has_key(head: bytes, key: str, value_start: bytes = b"") -> bool:
    """Whether ``head`` has ``"key":`` (followed by ``value_start``) as JSON structure: a key quoted inside
    a string value is escaped (``\\"key\\"``), so it never counts."""
    pattern = rb'(?<!\\)"' + re.escape(key.encode()) + rb'"\s*:\s*' + re.escape(value_start)
    return re.search(pattern, head) is not None


def starts_json(head: bytes) -> bytes:
    """The first structural byte of ``head`` (``[`` or ``{``), or b"" for anything else."""
    start = head.lstrip(b" \t\r\n").removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")[:1]
    return start if start in (b"[", b"{") else b""


def raw_json(value: Any) -> str:
    return cut_raw(json.dumps(value, ensure_ascii=False))


def bad_record(position: str, value: Any, reason: str) -> Record:
    """One quarantined record for a value that holds no message we can use."""
    if isinstance(value, BadValue):
        return quarantined(position, cut_raw(value.raw), value.reason)
    return quarantined(position, raw_json(value), reason)


def derived_id(prefix: str, name: str, position: str, content: Any) -> str:
    """A thread id for a conversation that names none: the same file name, position and content always
    give the same id; the content takes part so that two files of one name (train.jsonl in two folders)
    do not share ids unless their conversations are the same."""
    digest = hashlib.sha256()
    # surrogatepass: half an emoji cut in two (quarantined later, see records) must not stop the reader;
    # any other text encodes as before, so ids do not change.
    digest.update(f"{name}\0{position}\0".encode("utf-8", "surrogatepass"))
    digest.update(json.dumps(content, ensure_ascii=False, sort_keys=True).encode("utf-8", "surrogatepass"))
    return f"{prefix}_{digest.hexdigest()[:24]}"


def parts_text(content: Any) -> tuple[str | None, PartCounts]:
    """Text of a Chat Completions ``content``: a string, or parts whose text parts are joined by a blank
    line; images, files and other parts are counted (a refusal's text is kept)."""
    counts: PartCounts = {}
    if content is None or isinstance(content, str):
        return content, counts
    if not isinstance(content, list):
        return None, counts
    texts: list[str] = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
            continue
        kind = part.get("type") if isinstance(part, dict) else None
        body = part.get("text") if isinstance(part, dict) else None
        if isinstance(body, dict):
            body = body.get("value")
        if kind in ("text", "input_text", "output_text") and isinstance(body, str):
            texts.append(body)
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        elif kind in _IMAGE_PARTS:
            counts["images"] = counts.get("images", 0) + 1
        elif kind in _FILE_PARTS:
            counts["files"] = counts.get("files", 0) + 1
        else:
            counts["other"] = counts.get("other", 0) + 1
    return "\n\n".join(texts), counts


# Builds one record from a turn of a conversation: (turn, its JSON path, its index in the conversation).
type TurnRecord = Callable[[dict[str, Any], str, int], Record]


def conversation_records(
    stream: BinaryIO,
    list_key: str,
    not_conversation: str,
    per_conversation: Callable[[dict[str, Any], str], TurnRecord],
) -> Iterator[Record]:
    """Records of a stream of conversations that hold their turns in a list under ``list_key``.

    ``per_conversation(conversation, position)`` is called once per conversation (thread ids and
    assistants are decided there) and returns how to build each turn's record. Values that are not
    conversations and turns that are not objects are quarantined records; every record gets its place
    in the file as ``order`` (these shapes carry no times).
    """
    index = 0
    for position, value in json_values(stream):
        if isinstance(value, BadValue) or not isinstance(value, dict):
            index += 1
            yield bad_record(position, value, "not a JSON object")
            continue
        if not isinstance(value.get(list_key), list):
            index += 1
            yield bad_record(position, value, not_conversation)
            continue
        make = per_conversation(value, position)
        for j, turn in enumerate(value[list_key]):
            index += 1
            where = f"{position}.{list_key}[{j}]"
            rec = (
                make(turn, where, j)
                if isinstance(turn, dict)
                else bad_record(where, turn, "not a JSON object")
            )
            rec["order"] = index
            yield rec
