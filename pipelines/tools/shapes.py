"""The same conversations written in every input shape, for tests and for trying the readers.

``python -m pipelines.tools.shapes OUT_DIR`` writes one folder per shape under ``OUT_DIR``. A shape is a
function ``(conversations, folder) -> files`` in :data:`WRITERS`; adding a shape is adding one function
and one entry. Every shape holds the same messages, so each must give the same patterns as the guide's
NDJSON (the differential test in ``tests/test_formats_differential.py``).

The conversations are those of :mod:`pipelines.tools.conversations`.
"""

from __future__ import annotations

import gzip
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

from pipelines.tools.conversations import MARKER, Conversation, Message, ShapeWriter, conversations
from pipelines.tools.shapes_chat import CHAT_WRITERS


def _api_message(thread_id: str, m: Message) -> dict[str, Any]:
    text = m.text + (MARKER if m.cited else "")
    annotations = (
        [{"type": "file_citation", "text": MARKER, "start_index": len(m.text), "end_index": len(text)}]
        if m.cited
        else []
    )
    content: list[dict[str, Any]] = [{"type": "text", "text": {"value": text, "annotations": annotations}}]
    content += [{"type": "image_file", "image_file": {"file_id": f"file_{i}"}} for i in range(m.images)]
    user = m.role == "user"
    return {
        "id": m.message_id,
        "object": "thread.message",
        "created_at": m.created_at,
        "thread_id": thread_id,
        "role": m.role,
        "assistant_id": None if user else m.assistant_id,
        "run_id": None if user else m.run_id,
        "status": "completed",
        "attachments": [{"file_id": f"file_a{i}", "tools": []} for i in range(m.attachments)],
        "metadata": {},
        "content": content,
    }


def _all(convs: list[Conversation]) -> list[tuple[str, Message]]:
    return [(c.thread_id, m) for c in convs for m in c.messages]


def _lines(path: Path, values: list[Any]) -> list[Path]:
    path.write_text("".join(json.dumps(v, ensure_ascii=False) + "\n" for v in values), encoding="utf-8")
    return [path]


def guide_ndjson(convs: list[Conversation], folder: Path) -> list[Path]:
    rows = [
        {
            "thread_id": t,
            "assistant_id": m.assistant_id,
            "message_id": m.message_id,
            "role": m.role,
            "text": m.text,
            "created_at": m.created_at,
        }
        for t, m in _all(convs)
    ]
    return _lines(folder / "guide.ndjson", rows)


def guide_tolerant(convs: list[Conversation], folder: Path) -> list[Path]:
    """The guide's NDJSON as real exports differ: ISO times, content parts, no assistant on users."""
    from datetime import UTC, datetime

    rows = []
    for t, m in _all(convs):
        row: dict[str, Any] = {
            "thread_id": t,
            "message_id": m.message_id,
            "role": m.role,
            "created_at": datetime.fromtimestamp(m.created_at, UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        }
        if m.role == "assistant":
            row["assistant_id"] = m.assistant_id
            row["content"] = [{"type": "text", "text": {"value": m.text, "annotations": []}}]
        else:
            row["assistant_id"] = None
            row["text"] = m.text
        rows.append(row)
    return _lines(folder / "tolerant.ndjson", rows)


def api_jsonl(convs: list[Conversation], folder: Path) -> list[Path]:
    return _lines(folder / "messages.jsonl", [_api_message(t, m) for t, m in _all(convs)])


def api_array_desc(convs: list[Conversation], folder: Path) -> list[Path]:
    path = folder / "messages.json"
    items = [_api_message(t, m) for t, m in reversed(_all(convs))]
    path.write_text(json.dumps(items, ensure_ascii=False, indent=1), encoding="utf-8")
    return [path]


def _pages(convs: list[Conversation], folder: Path, desc: bool, per_page: int) -> list[Path]:
    files = []
    for c in convs:
        items = [_api_message(c.thread_id, m) for m in c.messages]
        if desc:
            items.reverse()
        for k in range(0, len(items), per_page):
            data = items[k : k + per_page]
            page = {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"],
                "last_id": data[-1]["id"],
                "has_more": k + per_page < len(items),
            }
            path = folder / f"{c.thread_id}-page{k // per_page + 1:02d}.json"
            path.write_text(json.dumps(page, ensure_ascii=False, indent=2), encoding="utf-8")
            files.append(path)
    return files


def pages_desc(convs: list[Conversation], folder: Path) -> list[Path]:
    """Newest-first pages (the API's default), two messages a page, each page its own file."""
    return _pages(convs, folder, True, 2)


def pages_asc(convs: list[Conversation], folder: Path) -> list[Path]:
    """Oldest-first pages of three, all in one file, a page per line (``order=asc`` saves)."""
    files = _pages(convs, folder, False, 3)
    path = folder / "pages.jsonl"
    path.write_text("".join(json.dumps(json.loads(f.read_text())) + "\n" for f in files), encoding="utf-8")
    for f in files:
        f.unlink()
    return [path]


def compressed(convs: list[Conversation], folder: Path) -> list[Path]:
    """The guide's NDJSON gzipped, the API's lines zstd-compressed, newest-first pages in a zip."""
    import zstandard

    work = folder / ".work"
    work.mkdir(exist_ok=True)
    (plain,) = guide_ndjson(convs, work)
    gz = folder / "guide.ndjson.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    (lines,) = api_jsonl(convs, work)
    zst = folder / "messages.jsonl.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(lines.read_bytes()))
    pages = pages_desc(convs, work)
    zipped = folder / "pages.zip"
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as archive:
        for p in pages:
            archive.write(p, f"pages/{p.name}")
    for p in [plain, lines, *pages]:
        p.unlink()
    work.rmdir()
    return [gz, zst, zipped]


WRITERS: dict[str, ShapeWriter] = {
    "guide-ndjson": guide_ndjson,
    "guide-tolerant": guide_tolerant,
    "assistants-jsonl": api_jsonl,
    "assistants-array-desc": api_array_desc,
    "assistants-pages-desc": pages_desc,
    "assistants-pages-asc": pages_asc,
    "compressed": compressed,
}


def all_writers() -> dict[str, ShapeWriter]:
    """:data:`WRITERS` and the chat exports' shapes (:mod:`pipelines.tools.shapes_chat`, which pair to the
    same (task, code) pairs per thread but derive some ids)."""
    return {**WRITERS, **CHAT_WRITERS}


def write_shape(shape: str, folder: Path, convs: list[Conversation] | None = None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return all_writers()[shape](convs if convs is not None else conversations(), folder)


def main(argv: list[str] | None = None) -> int:
    out = Path((argv if argv is not None else sys.argv[1:])[0])
    for shape in all_writers():
        files = write_shape(shape, out / shape)
        print(f"{shape}: {', '.join(str(f) for f in files)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
