"""Thread ids -> an NDJSON export in the guide's shape through the official ``openai`` client, and the
command line of every export (threads, saved pages, conversations).

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

Conversations are exported by :mod:`pipelines.tools.conversations_export`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

from pipelines.tools.conversations_export import as_dict, export_conversations

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
    raw = [as_dict(m) for m in messages]
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
