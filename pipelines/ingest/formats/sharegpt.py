"""ShareGPT conversations: ``[{"id", "conversations": [{"from", "value"}, ...]}, ...]`` (a JSON array,
or one object per line as many datasets ship it).

Each object is one thread: its ``id`` (a number is taken as its text), else an id derived from the file
name, the object's position and its turns (:func:`~pipelines.ingest.formats._chat.derived_id`). A turn's
id is ``<thread id>:<index>`` (1-based); there are no timestamps (``created_at`` None, the list order as
``order``). ``from`` is mapped by :data:`ROLES` (``human``/``user`` -> user; ``gpt``, ``assistant``,
``chatgpt``, ``bard``, ``bing``, ``model`` -> assistant; ``system``; ``tool``, ``function``,
``observation`` -> tool, which pairing leaves unpaired); any other value is passed on and quarantined as an
unknown role. ``value`` is the text. The assistant is ``--assistant-name``, else
:data:`DEFAULT_ASSISTANT`, for every turn.

Invariant: every element of every ``conversations`` list is one record, positioned
``$[i].conversations[j]`` (``line N.conversations[j]``); an object without that list is one quarantined
record.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

from pipelines.ingest.formats._chat import TurnRecord, conversation_records, derived_id, has_key, starts_json
from pipelines.ingest.formats.base import Record, reader_options

NAME = "sharegpt"
DEFAULT_ASSISTANT = "sharegpt"
REASON_NOT_CONVERSATION = "not a ShareGPT conversation (no conversations list)"
ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
    "system": "system",
    "tool": "tool",
    "function": "tool",
    "observation": "tool",
}


def _thread_id(value: dict[str, Any], name: str, position: str) -> str:
    given = value.get("id")
    if isinstance(given, bool) or not isinstance(given, str | int) or not str(given).strip():
        return derived_id("sg", name, position, value["conversations"])
    return str(given)


class ShareGpt:
    name = NAME
    description = 'ShareGPT: [{"id", "conversations": [{"from": "human"|"gpt", "value"}]}] (array or lines)'
    priority = 6

    def detect(self, head: bytes, name: str) -> bool:
        return (
            bool(starts_json(head))
            and has_key(head, "conversations", b"[")
            and has_key(head, "from")
            and has_key(head, "value")
            and not has_key(head, "mapping", b"{")
        )

    def read(self, stream: BinaryIO, name: str) -> Iterator[Record]:
        assistant = reader_options().assistant_name or DEFAULT_ASSISTANT

        def per_conversation(value: dict[str, Any], position: str) -> TurnRecord:
            thread_id = _thread_id(value, name, position)

            def turn(turn: dict[str, Any], where: str, j: int) -> Record:
                speaker = turn.get("from")
                role = ROLES.get(speaker.lower(), speaker) if isinstance(speaker, str) else speaker
                return Record(
                    thread_id=thread_id,
                    assistant_id=assistant,
                    message_id=f"{thread_id}:{j + 1}",
                    role=role,
                    text=turn.get("value"),
                    created_at=None,
                    position=where,
                )

            return turn

        return conversation_records(stream, "conversations", REASON_NOT_CONVERSATION, per_conversation)


READERS = (ShareGpt(),)
