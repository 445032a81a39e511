"""The conversations of :mod:`pipelines.tools.shapes` as ChatGPT exports, Chat Completions JSONL and
ShareGPT, each with what those files hold besides the exchanges.

Every shape here holds the exchanges of :func:`~pipelines.tools.conversations.conversations` and must
pair to the same (task, code) pairs per thread as the guide's NDJSON; what each adds must never reach a
pattern: ChatGPT branches (an edited question with its answer, a regenerated answer), hidden system nodes, a
``weight: 0`` node, a tool call with its tool output; Chat Completions system prompts, tool calls and
tool results; ShareGPT system turns. Ids are kept where the shape carries them (ChatGPT node ids are the
message ids), derived by the reader elsewhere.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from pipelines.tools.conversations import Conversation, Message, ShapeWriter

SYSTEM_PROMPT = "You are a helpful coding assistant."


def _chatgpt_message(
    node_id: str, role: str, parts: list[Any], created: float | None, **extra: Any
) -> dict[str, Any]:
    content_type = extra.pop(
        "content_type", "multimodal_text" if any(isinstance(p, dict) for p in parts) else "text"
    )
    metadata = extra.pop("metadata", {})
    return {
        "id": node_id,
        "author": {"role": role, "name": extra.pop("name", None), "metadata": {}},
        "create_time": created,
        "update_time": None,
        "content": {"content_type": content_type, "parts": parts},
        "status": "finished_successfully",
        "end_turn": role == "assistant" or None,
        "weight": extra.pop("weight", 1.0),
        "metadata": metadata,
        "recipient": extra.pop("recipient", "all"),
        **extra,
    }


def _message_node(m: Message) -> dict[str, Any]:
    parts: list[Any] = [
        {"content_type": "image_asset_pointer", "asset_pointer": f"file-service://file-{i}", "size_bytes": 1}
        for i in range(m.images)
    ]
    parts.append(m.text)
    metadata: dict[str, Any] = {}
    if m.role == "assistant":
        metadata["model_slug"] = m.assistant_id
    if m.attachments:
        metadata["attachments"] = [{"id": f"file-a{i}", "name": f"a{i}.txt"} for i in range(m.attachments)]
    return _chatgpt_message(m.message_id, m.role, parts, float(m.created_at), metadata=metadata)


class _Tree:
    """A ChatGPT ``mapping`` built node by node."""

    def __init__(self, root: str) -> None:
        self.mapping: dict[str, Any] = {root: {"id": root, "message": None, "parent": None, "children": []}}

    def add(self, parent: str, message: dict[str, Any]) -> str:
        node_id = message["id"]
        self.mapping[node_id] = {"id": node_id, "message": message, "parent": parent, "children": []}
        self.mapping[parent]["children"].append(node_id)
        return node_id


def chatgpt_conversation(c: Conversation, index: int) -> dict[str, Any]:
    """One conversation of an export, with a hidden system node, and per thread what real exports add:
    the first thread a regenerated answer and an edited question (each an abandoned branch), the others
    a ``weight: 0`` context node and a tool call with its output before the first answer."""
    tree = _Tree(f"{c.thread_id}-root")
    t0 = float(c.messages[0].created_at)
    hidden = {"is_visually_hidden_from_conversation": True}
    system = _chatgpt_message(f"{c.thread_id}-sys", "system", [""], None, metadata=hidden)
    at = tree.add(f"{c.thread_id}-root", system)
    if index > 0:
        context = _chatgpt_message(
            f"{c.thread_id}-ctx", "user", [], t0, content_type="user_editable_context", weight=0
        )
        at = tree.add(at, context)
    answered = False
    for m in c.messages:
        if m.role == "assistant" and not answered and index > 0:
            call = _chatgpt_message(
                f"{m.message_id}-call",
                "assistant",
                [],
                t0,
                content_type="code",
                recipient="python",
                metadata={"model_slug": m.assistant_id},
            )
            call["content"] = {"content_type": "code", "language": "python", "text": "print(sorted([3, 1]))"}
            at = tree.add(at, call)
            output = _chatgpt_message(f"{m.message_id}-out", "tool", [], t0, name="python")
            output["content"] = {"content_type": "execution_output", "text": "[1, 3]"}
            at = tree.add(at, output)
        if index == 0 and m.role == "assistant" and not answered:
            # A regenerated answer: the first try stays in the tree, before the one the user kept.
            old = _message_node(
                Message(f"{m.message_id}-v1", "assistant", "An older parser.", m.created_at, m.assistant_id)
            )
            tree.add(at, old)
        if index == 0 and m.role == "user" and answered:
            # An edited question: the first wording and its answer stay on their own branch.
            first = tree.add(
                at,
                _message_node(
                    Message(f"{m.message_id}-v1", "user", "Add quting", m.created_at, m.assistant_id)
                ),
            )
            tree.add(
                first,
                _message_node(
                    Message(f"{m.message_id}-v1a", "assistant", "Quting?", m.created_at, m.assistant_id)
                ),
            )
        answered = answered or m.role == "assistant"
        at = tree.add(at, _message_node(m))
    return {
        "title": f"Conversation {index + 1}",
        "create_time": t0,
        "update_time": float(c.messages[-1].created_at),
        "mapping": tree.mapping,
        "moderation_results": [],
        "current_node": at,
        "plugin_ids": None,
        "conversation_id": c.thread_id,
        "default_model_slug": next(m.assistant_id for m in c.messages if m.role == "assistant"),
        "is_archived": False,
        "id": c.thread_id,
    }


def _json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def chatgpt_export(convs: list[Conversation], folder: Path) -> list[Path]:
    return [_json(folder / "conversations.json", [chatgpt_conversation(c, i) for i, c in enumerate(convs)])]


def chatgpt_split(convs: list[Conversation], folder: Path) -> list[Path]:
    """A large export split into numbered files, one conversation each here."""
    return [
        _json(folder / f"conversations-{i:03d}.json", [chatgpt_conversation(c, i)])
        for i, c in enumerate(convs)
    ]


def chatgpt_zip(convs: list[Conversation], folder: Path) -> list[Path]:
    """The export .zip as ChatGPT sends it: conversations.json beside the account's other files."""
    path = folder / "chatgpt-export.zip"
    conversations = [chatgpt_conversation(c, i) for i, c in enumerate(convs)]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("conversations.json", json.dumps(conversations, ensure_ascii=False))
        archive.writestr("user.json", json.dumps({"id": "user-1", "email": "me@example.com"}))
        archive.writestr(
            "message_feedback.json",
            json.dumps([{"id": "f1", "conversation_id": convs[0].thread_id, "rating": "thumbsUp"}]),
        )
        archive.writestr("shared_conversations.json", "[]")
        archive.writestr("chat.html", "<html></html>")
    return [path]


def _completion_messages(c: Conversation, index: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"role": "system" if index == 0 else "developer", "content": SYSTEM_PROMPT}]
    answered = False
    for m in c.messages:
        if m.role == "assistant" and not answered and index > 0:
            call = {"id": "call_1", "type": "function", "function": {"name": "run", "arguments": "{}"}}
            out.append({"role": "assistant", "content": None, "tool_calls": [call]})
            out.append({"role": "tool", "tool_call_id": "call_1", "content": "[1, 3]"})
        content: Any = m.text
        if m.images:
            content = [{"type": "text", "text": m.text}]
            content += [
                {"type": "image_url", "image_url": {"url": f"https://x/{i}.png"}} for i in range(m.images)
            ]
        out.append({"role": m.role, "content": content})
        answered = answered or m.role == "assistant"
    return out


def chat_completions(convs: list[Conversation], folder: Path) -> list[Path]:
    """One conversation per line; the first names its thread in ``metadata``, the others do not."""
    lines = []
    for i, c in enumerate(convs):
        row: dict[str, Any] = {"messages": _completion_messages(c, i)}
        if i == 0:
            row["metadata"] = {"thread_id": c.thread_id}
        lines.append(json.dumps(row, ensure_ascii=False) + "\n")
    path = folder / "chat.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    return [path]


def sharegpt(convs: list[Conversation], folder: Path) -> list[Path]:
    """``human``/``gpt`` in the first conversation, ``user``/``assistant``/``chatgpt`` in the others."""
    items = []
    for i, c in enumerate(convs):
        turns = [{"from": "system", "value": SYSTEM_PROMPT}]
        for k, m in enumerate(c.messages):
            if i == 0:
                speaker = "human" if m.role == "user" else "gpt"
            else:
                speaker = m.role if m.role == "user" or k % 2 else "chatgpt"
            turns.append({"from": speaker, "value": m.text})
        items.append({"id": c.thread_id, "conversations": turns})
    return [_json(folder / "sharegpt.json", items)]


CHAT_WRITERS: dict[str, ShapeWriter] = {
    "chatgpt-export": chatgpt_export,
    "chatgpt-split": chatgpt_split,
    "chatgpt-zip": chatgpt_zip,
    "chat-completions": chat_completions,
    "sharegpt": sharegpt,
}
