"""The migration guide's NDJSON: one flat message object per line.

``{"thread_id", "assistant_id", "message_id", "role", "text", "created_at"}``. Staging does not call
:meth:`GuideNdjson.read` for this shape: its lines are judged in bulk by DuckDB
(:mod:`pipelines.ingest.classify`), which accepts the same tolerances (ISO-8601 times, content parts
instead of ``text``, a missing ``assistant_id`` on other roles than ``assistant``). ``read`` gives the same
records in Python, for tests and tools.

Invariant: one record per line of the file, blank lines included (they are quarantined as
``empty line``), each positioned ``line N``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, BinaryIO

from pipelines.ingest.formats.base import Record, quarantined

NAME = "guide-ndjson"
_KEYS = ("thread_id", "message_id", "role")


def first_object(head: bytes) -> dict[str, Any] | None:
    """The first line of ``head`` that parses, as a JSON object, or None. Lines that do not parse are
    passed over: one broken line is quarantined like any other, it does not make the file unreadable."""
    for raw in head.splitlines():
        if raw.strip():
            try:
                value = json.loads(raw)
            except ValueError:
                continue
            return value if isinstance(value, dict) else None
    return None


def content_text(content: Any) -> str | None:
    """Text of a ``content`` value: a string, or the text parts of a list joined by a blank line."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    texts = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict):
            text = part.get("text")
            if isinstance(text, dict):
                text = text.get("value")
            if isinstance(text, str):
                texts.append(text)
    return "\n\n".join(texts)


class GuideNdjson:
    name = NAME
    description = "the migration guide's NDJSON (one flat message object per line)"
    priority = 90

    def detect(self, head: bytes, name: str) -> bool:
        obj = first_object(head)
        return obj is not None and all(k in obj for k in _KEYS) and "object" not in obj

    def read(self, stream: BinaryIO, name: str) -> Iterator[Record]:
        for number, raw in enumerate(stream, start=1):
            position = f"line {number}"
            text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            try:
                obj = json.loads(text)
            except ValueError:
                reason = "empty line" if not text.strip() else "malformed JSON"
                yield quarantined(position, text, reason)
                continue
            if not isinstance(obj, dict):
                yield quarantined(position, text, "not a JSON object")
                continue
            body = obj.get("text")
            if body is None and "content" in obj:
                body = content_text(obj["content"])
            yield Record(
                thread_id=obj.get("thread_id"),
                assistant_id=obj.get("assistant_id"),
                message_id=obj.get("message_id"),
                role=obj.get("role"),
                text=body,
                created_at=obj.get("created_at"),
                position=position,
                run_id=obj.get("run_id"),
                raw=text,
            )


READERS = (GuideNdjson(),)
