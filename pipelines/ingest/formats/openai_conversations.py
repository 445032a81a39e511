"""OpenAI Conversations API messages as ``openai_export --conversations`` writes them: one JSON object per
line, ``{"object": "conversation.message", "conversation_id", "item_id", "role", "text", "assistant",
"parts"}``, each conversation's messages in the API's ascending list order.

Each conversation is one thread (``thread_id`` = ``conversation_id``); a message's id is its item id. Items
carry no timestamps: records carry ``created_at`` None and the line number as ``order``, so the list order
is the conversation's order. Non-message items (``function_call``, ``reasoning``, ...) are counted by the
exporter and never written, so they are not records. The assistant is ``--assistant-name``, else the line's
``assistant`` (the exporter's ``--assistant-name``), else :data:`DEFAULT_ASSISTANT`.

Invariant: every line is one record, positioned ``line N`` with ``order`` N; a line that does not parse or
is not a ``conversation.message`` object is one quarantined record. Detection claims a file only when its
first value opens with ``{"object": "conversation.message"``, which no other shape does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, BinaryIO

from pipelines.ingest.formats._chat import bad_record
from pipelines.ingest.formats.base import PartCounts, Record, reader_options
from pipelines.ingest.formats.stream import BadValue, json_values

NAME = "openai-conversations"
OBJECT = "conversation.message"
DEFAULT_ASSISTANT = "openai-conversations"
REASON_NOT_MESSAGE = f"not a {OBJECT} object"

_HEAD = re.compile(rb'^(?:\xef\xbb\xbf)?\s*\{\s*"object"\s*:\s*"conversation\.message"')
_PART_KEYS = ("images", "files", "attachments", "annotations", "other")


def _parts(value: Any) -> PartCounts:
    counts: PartCounts = {}
    if isinstance(value, dict):
        for key in _PART_KEYS:
            n = value.get(key)
            if isinstance(n, int) and n > 0:
                counts[key] = n  # type: ignore[literal-required]
    return counts


class OpenAIConversations:
    name = NAME
    description = (
        'OpenAI Conversations API messages from openai_export --conversations: {"object": '
        '"conversation.message", ...} per line'
    )
    priority = 4

    def detect(self, head: bytes, name: str) -> bool:
        return _HEAD.match(head) is not None

    def read(self, stream: BinaryIO, name: str) -> Iterator[Record]:
        fixed = reader_options().assistant_name
        for index, (position, value) in enumerate(json_values(stream), start=1):
            if isinstance(value, BadValue) or not isinstance(value, dict):
                rec = bad_record(position, value, "not a JSON object")
            elif value.get("object") != OBJECT:
                rec = bad_record(position, value, REASON_NOT_MESSAGE)
            else:
                line_assistant = value.get("assistant")
                rec = Record(
                    thread_id=value.get("conversation_id"),
                    assistant_id=fixed
                    or (line_assistant if isinstance(line_assistant, str) and line_assistant else None)
                    or DEFAULT_ASSISTANT,
                    message_id=value.get("item_id"),
                    role=value.get("role"),
                    text=value.get("text"),
                    created_at=None,
                    position=position,
                    parts=_parts(value.get("parts")),
                )
            rec["order"] = index
            yield rec


READERS = (OpenAIConversations(),)
