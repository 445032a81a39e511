"""Chat Completions conversations: ``{"messages": [...]}`` per line (fine-tuning data, stored completions,
eval datasets), or a JSON array of such objects.

Each object is one thread: ``metadata.thread_id`` (or ``metadata.conversation_id``) when it names one,
else an id derived from the file name, the object's position and its messages
(:func:`~pipelines.ingest.formats._chat.derived_id`), so the same file gives the same ids on every run.
A message's id is ``<thread id>:<index>`` (1-based in ``messages``). There are no timestamps: records
carry ``created_at`` None and the list order as ``order``.

What becomes of a message: ``content`` as a string, or its text parts joined by a blank line (images,
files, audio counted); role ``developer`` is taken as ``system`` and ``tool`` is left unpaired by pairing; an
assistant message that only calls tools (``tool_calls`` or ``function_call`` and no text) is quarantined
as :data:`REASON_TOOL_CALL`. The assistant is ``--assistant-name``, else the object's ``model`` (stored
completions name it), else :data:`DEFAULT_ASSISTANT`; every message of the thread gets it.

Invariant: every element of every ``messages`` list is one record, positioned ``line N.messages[j]`` (or
``$[i].messages[j]``); an object without a ``messages`` list is one quarantined record.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

from pipelines.ingest.formats._chat import (
    TurnRecord,
    conversation_records,
    derived_id,
    has_key,
    parts_text,
    raw_json,
    starts_json,
)
from pipelines.ingest.formats.base import Record, reader_options

NAME = "chat-completions"
DEFAULT_ASSISTANT = "chat-completions"
REASON_TOOL_CALL = "tool call: an assistant message with tool calls and no text"
REASON_NOT_CONVERSATION = "not a Chat Completions conversation (no messages list)"


def _thread_id(value: dict[str, Any], name: str, position: str) -> str:
    metadata = value.get("metadata")
    if isinstance(metadata, dict):
        for key in ("thread_id", "conversation_id"):
            if isinstance(metadata.get(key), str) and metadata[key].strip():
                return metadata[key]
    return derived_id("cc", name, position, value["messages"])


class ChatCompletions:
    name = NAME
    description = (
        'Chat Completions / fine-tuning JSONL: {"messages": [...]} per line (or a JSON array of them)'
    )
    priority = 7

    def detect(self, head: bytes, name: str) -> bool:
        return (
            bool(starts_json(head))
            and has_key(head, "messages", b"[")
            and has_key(head, "role")
            and not has_key(head, "mapping", b"{")
            and not has_key(head, "conversations", b"[")
            and not has_key(head, "object", b'"thread.message"')
        )

    def read(self, stream: BinaryIO, name: str) -> Iterator[Record]:
        fixed = reader_options().assistant_name

        def per_conversation(value: dict[str, Any], position: str) -> TurnRecord:
            thread_id = _thread_id(value, name, position)
            model = value.get("model") if isinstance(value.get("model"), str) else None
            assistant = fixed or model or DEFAULT_ASSISTANT

            def turn(msg: dict[str, Any], where: str, j: int) -> Record:
                text, counts = parts_text(msg.get("content"))
                rec = Record(
                    thread_id=thread_id,
                    assistant_id=assistant,
                    message_id=f"{thread_id}:{j + 1}",
                    role=msg.get("role"),
                    text=text,
                    created_at=None,
                    position=where,
                    parts=counts,
                )
                calls = msg.get("tool_calls") or msg.get("function_call")
                if msg.get("role") == "assistant" and calls and not (text or "").strip():
                    rec["quarantine"] = REASON_TOOL_CALL
                    rec["raw"] = raw_json(msg)
                return rec

            return turn

        return conversation_records(stream, "messages", REASON_NOT_CONVERSATION, per_conversation)


READERS = (ChatCompletions(),)
