"""Thread ids -> an NDJSON export in the guide's shape, and conversation ids -> an NDJSON export of
Conversations API messages, through the official ``openai`` client.

The Assistants API was retired on 26 Aug 2026 and its endpoints now answer 404, so this only helps
where the API is still reachable (a proxy or a compatible server that still serves ``/v1/threads``) or
for threads fetched before the shutdown. Thread ids cannot be listed through the API: they come from the
team's own database, one per line.

Shape conversion (also applied to saved API pages by :func:`convert_saved_pages`):
- ``text`` is the concatenation of the message's text parts (images and other parts are counted, not kept);
- ``assistant_id`` is null on user messages in the API; the thread's assistant is used instead (the first
  assistant message's, else ``default_assistant``), because every exported line needs one. A thread with
  neither (only user messages, no ``--default-assistant``) is written with ``assistant_id: null``, which
  ingest quarantines as ``missing field: assistant_id``: such threads are counted and warned about once;
- messages are requested in ascending order and written in that order, which becomes the ingest order
  that breaks ``created_at`` ties.

Conversations (:func:`export_conversations`, the successor of threads): each conversation's items are
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

import argparse
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

RETIRED_HINT = (
    "the Assistants API was retired on 26 Aug 2026 and answers 404; export from a saved copy of your threads "
    "(see convert_saved_pages) or from a server that still serves /v1/threads"
)


@dataclass
class ExportResult:
    threads: int = 0
    messages: int = 0
    not_found: list[str] = field(default_factory=list)
    skipped_parts: int = 0
    # Threads written with ``assistant_id: null`` (no assistant message, no default assistant).
    without_assistant: int = 0

    def count(self, rows: list[dict[str, Any]], skipped: int) -> None:
        self.threads += 1
        self.messages += len(rows)
        self.skipped_parts += skipped
        if any(r["assistant_id"] is None for r in rows):
            self.without_assistant += 1

    def warning(self) -> str | None:
        """One line about threads written without an assistant, or None."""
        if not self.without_assistant:
            return None
        return (
            f"warning: {self.without_assistant} threads have no assistant message, so their lines were "
            "written with assistant_id null; ingest quarantines them (missing field: assistant_id). "
            "Give --default-assistant asst_... to keep them."
        )


def _as_dict(message: Any) -> dict[str, Any]:
    return message.model_dump() if hasattr(message, "model_dump") else dict(message)


def _text(message: dict[str, Any]) -> tuple[str, int]:
    parts = message.get("content") or []
    texts, skipped = [], 0
    for part in parts:
        if part.get("type") == "text" and isinstance(part.get("text"), dict):
            texts.append(part["text"].get("value") or "")
        else:
            skipped += 1
    return "\n\n".join(t for t in texts if t), skipped


def thread_rows(
    messages: Iterable[Any], default_assistant: str | None = None
) -> tuple[list[dict[str, Any]], int]:
    """One thread's API messages (ascending) -> export rows; returns rows and skipped content parts."""
    raw = [_as_dict(m) for m in messages]
    thread_assistant = next((m["assistant_id"] for m in raw if m.get("assistant_id")), default_assistant)
    rows, skipped = [], 0
    for m in raw:
        text, n = _text(m)
        skipped += n
        rows.append(
            {
                "thread_id": m.get("thread_id"),
                "assistant_id": m.get("assistant_id") or thread_assistant,
                "message_id": m.get("id"),
                "role": m.get("role"),
                "text": text,
                "created_at": m.get("created_at"),
            }
        )
    return rows, skipped


def export_threads(
    client: openai.OpenAI,
    thread_ids: Iterable[str],
    out: Path,
    default_assistant: str | None = None,
    log: Callable[[str], None] | None = None,
) -> ExportResult:
    """Fetch each thread's messages (ascending, all pages) and append them to ``out`` as NDJSON.

    A thread that answers 404 is listed in ``not_found`` and the rest goes on; wrong credentials stop
    at once with a message that says what to fix.
    """
    result = ExportResult()
    out.parent.mkdir(parents=True, exist_ok=True)
    # The openai client marks the whole Assistants API deprecated and warns on every call, once per
    # thread: that is the very API this tool exists to drain, so exactly that category is silenced here.
    with out.open("w", encoding="utf-8") as f, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for thread_id in thread_ids:
            try:
                page = client.beta.threads.messages.list(thread_id=thread_id, order="asc", limit=100)
                rows, skipped = thread_rows(page, default_assistant)
            except openai.NotFoundError:
                result.not_found.append(thread_id)
                if log:
                    log(f"{thread_id}: not found (404)")
                continue
            except openai.AuthenticationError as exc:
                raise PermissionError(
                    f"OpenAI rejected the API key ({exc.status_code}): check the key"
                ) from None
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            result.count(rows, skipped)
    if result.not_found and not result.threads:
        raise LookupError(f"none of {len(result.not_found)} threads was found: {RETIRED_HINT}")
    return result


def _pages(path: Path) -> Iterator[dict[str, Any]]:
    """Saved ``messages.list`` responses: one JSON page per line, or one JSON array of pages/messages."""
    text = path.read_text(encoding="utf-8").strip()
    if text.startswith("["):
        items = json.loads(text)
        if items and isinstance(items[0], dict) and "data" in items[0]:
            yield from items
        else:
            yield {"data": items}
        return
    for line in text.splitlines():
        if line.strip():
            yield json.loads(line)


def convert_saved_pages(path: Path, out: Path, default_assistant: str | None = None) -> ExportResult:
    """Saved API pages (any order, several threads) -> the guide's NDJSON, threads in ascending time."""
    by_thread: dict[str, list[dict[str, Any]]] = {}
    for page in _pages(path):
        for m in page.get("data", []):
            by_thread.setdefault(m.get("thread_id"), []).append(m)
    result = ExportResult()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for messages in by_thread.values():
            # Saved pages are in the API's default order (newest first): reversing before the stable sort
            # keeps messages with equal created_at in the order they were written.
            ordered = sorted(reversed(messages), key=lambda m: m.get("created_at") or 0)
            rows, skipped = thread_rows(ordered, default_assistant)
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            result.count(rows, skipped)
    return result


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
                        item = _as_dict(raw)
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
                        after = _as_dict(page.data[-1]).get("id")
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


def _export_conversations_cli(args: argparse.Namespace, client: openai.OpenAI) -> int:
    ids = [t.strip() for t in args.conversations.read_text().splitlines() if t.strip()]
    try:
        r = export_conversations(client, ids, args.out, args.assistant_name, log=print)
    except (LookupError, PermissionError, ValueError) as exc:
        print(str(exc), file=sys.stderr)
        return 1
    others = ", ".join(f"{n} {kind}" for kind, n in sorted(r.other_items.items())) or "none"
    print(
        f"{args.out}: {r.conversations} conversations, {r.messages} messages, {len(r.not_found)} not found, "
        f"{r.skipped_parts} non-text parts counted, other items not written: {others}"
        + (" (resumed from its checkpoint)" if r.resumed else "")
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Export Assistants threads (guide NDJSON) or Conversations (conversation.message lines)."
    )
    parser.add_argument("--out", type=Path, required=True)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--threads", type=Path, help="file with one thread id per line (fetched through the API)"
    )
    src.add_argument("--saved-pages", type=Path, help="saved messages.list responses to convert")
    src.add_argument(
        "--conversations",
        type=Path,
        help="file with one conversation id per line (Conversations API; resumes from <out>.checkpoint)",
    )
    parser.add_argument(
        "--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the key"
    )
    parser.add_argument("--base-url", default=None, help="API base URL (default: the openai client's)")
    parser.add_argument("--default-assistant", default=None, help="assistant_id for threads without one")
    parser.add_argument("--assistant-name", default=None, help="assistant written on every conversation line")
    args = parser.parse_args(argv)
    if args.saved_pages:
        r = convert_saved_pages(args.saved_pages, args.out, args.default_assistant)
    else:
        key = os.environ.get(args.api_key_env)
        if not key:
            print(f"set {args.api_key_env} to your OpenAI API key", file=sys.stderr)
            return 2
        client = openai.OpenAI(api_key=key, base_url=args.base_url, max_retries=3)
        if args.conversations:
            return _export_conversations_cli(args, client)
        ids = [t.strip() for t in args.threads.read_text().splitlines() if t.strip()]
        try:
            r = export_threads(client, ids, args.out, args.default_assistant, log=print)
        except (LookupError, PermissionError) as exc:
            print(str(exc), file=sys.stderr)
            return 1
    print(
        f"{args.out}: {r.threads} threads, {r.messages} messages, {len(r.not_found)} not found, "
        f"{r.skipped_parts} non-text parts skipped"
    )
    if warning := r.warning():
        print(warning, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
