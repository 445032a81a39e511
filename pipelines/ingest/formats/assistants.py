"""Assistants API messages: ``thread.message`` objects, and saved ``messages.list`` pages.

One reader, ``assistants-api``, takes every way such objects are saved: one object per line, a JSON array
of them, a ``messages.list`` page (``{"object": "list", "data": [...], "first_id", "last_id",
"has_more"}``) per file or per line, or an array of pages; a thread may be spread over several pages and
files.

What becomes of a message: its ``text`` parts are joined by a blank line, each annotation's marker (the
``【4:0†source】`` of a ``file_citation``, the ``sandbox:/...`` text of a ``file_path``) removed from the
text and counted; a ``refusal`` part's text is kept as text; ``image_file``/``image_url`` parts and
``attachments`` are counted in the record table, as is ``run_id``. ``assistant_id`` (null on user
messages) is resolved at ingest from the run that answered (:mod:`pipelines.ingest.assistants`).

Order: the API writes pages newest first by default, with one-second ``created_at``. Each page's
direction is read from its own times (a page whose times all tie takes the previous page's direction,
for the first the direction of the first page of the file that shows one, else newest first); loose
messages take the direction of the first thread in the file whose consecutive messages differ in time
(looked for in the first :data:`LOOKAHEAD` values). When every thread's times tie (a whole conversation
within one second), the roles tell: a thread is opened by a user message, so threads that start with an
answer and end with a question are newest first, and the reverse oldest first (the majority of threads
decides; oldest first if they do not). Records of a newest-first source get ``order = -index``, so ties
are broken in reverse file order.

Invariant: every message object in the file is one record, each position ``line N``, ``$[i]``, or with
``.data[j]`` for a message of a page; a value that is neither a message nor a page is quarantined.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any, BinaryIO

from pipelines.ingest.formats.base import PartCounts, Record, cut_raw, quarantined
from pipelines.ingest.formats.stream import BadValue, json_values

NAME = "assistants-api"
LOOKAHEAD = 10_000
_IMAGE_PARTS = ("image_file", "image_url")


def message_text(content: Any) -> tuple[str | None, PartCounts]:
    """Text and part counts of a ``thread.message`` ``content`` list."""
    counts: PartCounts = {}
    if isinstance(content, str):
        return content, counts
    if not isinstance(content, list):
        return None, counts
    texts: list[str] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            body = part.get("text")
            value = body.get("value") if isinstance(body, dict) else body
            if not isinstance(value, str):
                continue
            annotations = body.get("annotations") if isinstance(body, dict) else None
            for note in annotations or []:
                marker = note.get("text") if isinstance(note, dict) else None
                if isinstance(marker, str) and marker:
                    value = value.replace(marker, "")
                counts["annotations"] = counts.get("annotations", 0) + 1
            texts.append(value)
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        elif kind in _IMAGE_PARTS:
            counts["images"] = counts.get("images", 0) + 1
        else:
            counts["other"] = counts.get("other", 0) + 1
    return "\n\n".join(texts), counts


def to_record(obj: dict[str, Any], position: str) -> Record:
    text, counts = message_text(obj.get("content"))
    attachments = obj.get("attachments")
    if isinstance(attachments, list) and attachments:
        counts["attachments"] = len(attachments)
    return Record(
        thread_id=obj.get("thread_id"),
        assistant_id=obj.get("assistant_id"),
        message_id=obj.get("id"),
        role=obj.get("role"),
        text=text,
        created_at=obj.get("created_at"),
        position=position,
        run_id=obj.get("run_id"),
        parts=counts,
    )


def _direction[D: bool | None](messages: list[Any], default: D) -> bool | D:
    """True for newest first, from consecutive messages of one thread whose times differ."""
    last: dict[Any, Any] = {}
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("created_at"), int | float):
            continue
        before = last.get(m.get("thread_id"))
        if before is not None and before != m["created_at"]:
            return m["created_at"] < before
        last[m.get("thread_id")] = m["created_at"]
    return default


def _role_direction(messages: list[Any]) -> bool | None:
    """True for newest first, from the roles at the two ends of each thread (None when undecided).

    Only for loose messages: a page cuts a conversation anywhere, so its ends say nothing."""
    ends: dict[Any, tuple[Any, Any]] = {}
    for m in messages:
        if isinstance(m, dict) and m.get("role") in ("user", "assistant"):
            first = ends.get(m.get("thread_id"), (m["role"], None))[0]
            ends[m.get("thread_id")] = (first, m["role"])
    votes = sum(
        1 if (first, last) == ("assistant", "user") else -1 if (first, last) == ("user", "assistant") else 0
        for first, last in ends.values()
    )
    return None if votes == 0 else votes > 0


def _is_page(value: Any) -> bool:
    return isinstance(value, dict) and value.get("object") == "list" and isinstance(value.get("data"), list)


class AssistantsApi:
    name = NAME
    description = "Assistants API thread.message objects or saved messages.list pages (JSON, JSONL, arrays)"
    priority = 10

    def detect(self, head: bytes, name: str) -> bool:
        start = head.lstrip()[:4096]
        return b'"thread.message"' in head and (start.startswith((b"{", b"[")))

    def read(self, stream: BinaryIO, name: str) -> Iterator[Record]:
        values = json_values(stream)
        ahead = list(itertools.islice(values, LOOKAHEAD))
        loose = [v for _, v in ahead if not _is_page(v)]
        loose_desc = _direction(loose, None)
        if loose_desc is None:
            loose_desc = bool(_role_direction(loose))
        # A page whose times all tie takes the direction of the first page of the file that shows one.
        page_desc = next(
            (d for _, v in ahead if _is_page(v) and (d := _direction(v["data"], None)) is not None), True
        )
        index = 0
        for position, value in itertools.chain(ahead, values):
            if isinstance(value, BadValue):
                index += 1
                yield quarantined(position, cut_raw(value.raw), value.reason)
            elif _is_page(value):
                page_desc = _direction(value["data"], page_desc)
                for j, item in enumerate(value["data"]):
                    index += 1
                    yield self._one(item, f"{position} $.data[{j}]", -index if page_desc else index)
            else:
                index += 1
                yield self._one(value, position, -index if loose_desc else index)

    @staticmethod
    def _one(value: Any, position: str, order: int) -> Record:
        if not isinstance(value, dict) or value.get("object", "thread.message") != "thread.message":
            raw = cut_raw(json.dumps(value, ensure_ascii=False))
            rec = quarantined(position, raw, "not a thread.message object")
        else:
            rec = to_record(value, position)
        rec["order"] = order
        return rec


READERS = (AssistantsApi(),)
