"""Conversation ids -> an NDJSON export of Conversations API messages, through the official ``openai``
client.

Each conversation's items are
listed in ascending order, page by page, and each ``message`` item becomes one line
``{"object": "conversation.message", "conversation_id", "item_id", "role", "text", "assistant", "parts"}``
(read by :mod:`pipelines.ingest.formats.openai_conversations`); ``text`` joins the ``input_text`` /
``output_text`` / ``refusal`` parts by a blank line, other parts are counted in ``parts``. Items that are
not messages (``function_call``, ``reasoning``, ...) are counted per type and not written. Items have no
timestamps: the line order is the conversation's order.

Invariant of a conversations export: after each page the output is flushed and a checkpoint beside it
(``<out>.checkpoint``, replaced atomically) records the conversations finished, the one in progress with its
last item id, and the lines and bytes written. A run that finds a checkpoint truncates the output to the
recorded bytes, skips the finished conversations and resumes the partial one with ``after=<last item id>``,
so no page recorded is fetched or written twice; a completed export removes its checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai


def as_dict(message: Any) -> dict[str, Any]:
    return message.model_dump() if hasattr(message, "model_dump") else dict(message)


CONVERSATION_OBJECT = "conversation.message"
_TEXT_PARTS = {"input_text": "text", "output_text": "text", "refusal": "refusal"}
_COUNTED_PARTS = {"input_image": "images", "input_file": "files"}


@dataclass
class ConversationsResult:
    conversations: int = 0
    messages: int = 0
    # Items that are not messages, per type (function_call, reasoning, ...): counted, not written.
    other_items: dict[str, int] = field(default_factory=dict)
    skipped_parts: int = 0
    not_found: list[str] = field(default_factory=list)
    # Whether this run went on from a checkpoint.
    resumed: bool = False


@dataclass
class _Checkpoint:
    assistant: str | None = None
    done: list[str] = field(default_factory=list)
    current: str | None = None
    after: str | None = None
    lines: int = 0
    bytes: int = 0
    result: dict[str, Any] = field(default_factory=dict)


def checkpoint_path(out: Path) -> Path:
    """Where the checkpoint of a conversations export to ``out`` is kept."""
    return out.with_name(out.name + ".checkpoint")


def _load_checkpoint(path: Path) -> _Checkpoint | None:
    if not path.is_file():
        return None
    return _Checkpoint(**json.loads(path.read_text(encoding="utf-8")))


def _save_checkpoint(path: Path, state: _Checkpoint) -> None:
    """Write-then-rename, so a crash leaves the old checkpoint or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(state.__dict__, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def conversation_line(
    conversation_id: str, item: dict[str, Any], assistant: str | None
) -> tuple[dict[str, Any], int]:
    """One ``message`` item -> its export line; returns the line and the number of non-text parts."""
    texts: list[str] = []
    parts: dict[str, int] = {}
    for part in item.get("content") or []:
        kind = part.get("type") if isinstance(part, dict) else None
        key = _TEXT_PARTS.get(kind or "")
        if key and isinstance(part.get(key), str):
            texts.append(part[key])
        else:
            name = _COUNTED_PARTS.get(kind or "", "other")
            parts[name] = parts.get(name, 0) + 1
    line = {
        "object": CONVERSATION_OBJECT,
        "conversation_id": conversation_id,
        "item_id": item.get("id"),
        "role": item.get("role"),
        "text": "\n\n".join(t for t in texts if t),
        "assistant": assistant,
        "parts": parts,
    }
    return line, sum(parts.values())


def export_conversations(
    client: openai.OpenAI,
    conversation_ids: Iterable[str],
    out: Path,
    assistant_name: str | None = None,
    log: Callable[[str], None] | None = None,
) -> ConversationsResult:
    """Fetch each conversation's items (ascending, all pages) into ``out``, resuming from its checkpoint.

    A conversation that answers 404 is listed in ``not_found`` and the rest goes on; wrong credentials stop
    at once. Any other error leaves the output and its checkpoint as of the last complete page: run again
    to go on.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    ckpt = checkpoint_path(out)
    state = _load_checkpoint(ckpt)
    if state is not None:
        if state.assistant != assistant_name:
            raise ValueError(
                f"{ckpt}: this export was started with --assistant-name {state.assistant!r}; resume with "
                f"the same name, or delete the checkpoint to start over"
            )
        size = out.stat().st_size if out.is_file() else -1
        if size < state.bytes:
            raise ValueError(
                f"{out} is shorter than its checkpoint records ({size} < {state.bytes} bytes); "
                f"delete {ckpt} to start over"
            )
        result = ConversationsResult(**state.result)
        result.resumed = True
        mode = "r+b"
    else:
        state = _Checkpoint(assistant=assistant_name)
        result = ConversationsResult()
        mode = "wb"
    done = set(state.done)
    with out.open(mode) as f:
        f.truncate(state.bytes)
        f.seek(state.bytes)
        for cid in conversation_ids:
            if cid in done or cid in result.not_found:
                continue
            after = state.after if state.current == cid else None
            while True:
                try:
                    page = client.conversations.items.list(
                        cid, order="asc", limit=100, **({"after": after} if after else {})
                    )
                except openai.NotFoundError:
                    result.not_found.append(cid)
                    if log:
                        log(f"{cid}: not found (404)")
                    has_more = False
                except openai.AuthenticationError as exc:
                    raise PermissionError(
                        f"OpenAI rejected the API key ({exc.status_code}): check the key"
                    ) from None
                else:
                    written = 0
                    for raw in page.data:
                        item = as_dict(raw)
                        kind = item.get("type")
                        if kind != "message":
                            result.other_items[str(kind)] = result.other_items.get(str(kind), 0) + 1
                            continue
                        line, skipped = conversation_line(cid, item, assistant_name)
                        f.write((json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8"))
                        result.messages += 1
                        result.skipped_parts += skipped
                        written += 1
                    f.flush()
                    os.fsync(f.fileno())
                    state.lines += written
                    state.bytes = f.tell()
                    if page.data:
                        after = as_dict(page.data[-1]).get("id")
                    has_more = bool(page.has_more and page.data)
                    if not has_more:
                        result.conversations += 1
                if has_more:
                    state.current, state.after = cid, after
                else:
                    state.done.append(cid)
                    done.add(cid)
                    state.current, state.after = None, None
                result_state = dict(result.__dict__)
                result_state.pop("resumed")
                state.result = result_state
                _save_checkpoint(ckpt, state)
                if not has_more:
                    break
    ckpt.unlink()
    if result.not_found and not result.conversations:
        raise LookupError(f"none of {len(result.not_found)} conversations was found")
    return result
