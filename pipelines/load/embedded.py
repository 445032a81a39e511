"""The embedded destination: the real ``engramia`` package in-process, JSON storage on local disk.

Patterns go in through ``Memory.import_data`` with deterministic keys, never a loop of
``Memory.learn`` (which lists the whole scope on every call and stores a new copy each time in 0.6.6).
Engramia reads the scope from a context variable, so every call runs inside :func:`engramia_scope`.

Speed: ``JSONStorage`` writes each pattern with ``json.dump(indent=2)``, which always runs the
pure-Python encoder and hands the file one small string at a time. :class:`FastJSONStorage` is the same
storage (same keys, paths, scoping, tmp -> bak -> replace sequence) whose file write produces the very
same bytes from one string built with the C string escaper. The plan is made on ids alone, texts are
read only for the patterns to send, and the store's own count comes from ``storage.count_patterns()``
(what ``memory.metrics.pattern_count`` returns, without computing the other metrics).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any

import engramia
import polars as pl
from engramia._context import get_scope, reset_scope, set_scope
from engramia.providers.json_storage import JSONStorage
from engramia.types import Scope

from pipelines.load.ledger import PRESENT, RETRACTED, STORED, Ledger
from pipelines.load.plan import LoadResult
from pipelines.load.records import import_record, iter_rows, kept_ids, kept_patterns
from pipelines.tables import DataLayout

DESTINATION = "embedded"
# Engramia refuses to learn beyond this many patterns in one scope; an import past it would leave
# the scope in a state the library itself does not expect.
SCOPE_PATTERN_CAP = 100_000

# Without embeddings engramia warns on every recall that it falls back to keyword search: expected here.
logging.getLogger("engramia.core.services.recall").setLevel(logging.ERROR)


@contextmanager
def engramia_scope(tenant_id: str, project_id: str) -> Iterator[None]:
    token = set_scope(Scope(tenant_id=tenant_id, project_id=project_id))
    try:
        yield
    finally:
        reset_scope(token)


def dumps_indent2(obj: Any) -> str:
    """Exactly ``json.dumps(obj, indent=2, ensure_ascii=False)``, several times faster.

    Covers what patterns are made of (dicts with string keys, lists, strings, numbers, booleans, None);
    anything else is handed to ``json.dumps`` itself.
    """
    parts: list[str] = []
    try:
        _encode(obj, "\n", parts)
    except _Unsupported:
        return json.dumps(obj, indent=2, ensure_ascii=False)
    return "".join(parts)


class _Unsupported(Exception):
    pass


def _encode(obj: Any, newline: str, parts: list[str]) -> None:
    # The order of the type checks is json's own: str, None, bool, int, float, list/tuple, dict; exact
    # type tests for the common cases first (subclasses take json's isinstance path below).
    kind = type(obj)
    if kind is str:
        parts.append(encode_basestring(obj))
    elif kind is dict:
        _encode_dict(obj, newline, parts)
    elif kind is list:
        _encode_list(obj, newline, parts)
    elif isinstance(obj, str):
        parts.append(encode_basestring(obj))
    elif obj is None:
        parts.append("null")
    elif obj is True:
        parts.append("true")
    elif obj is False:
        parts.append("false")
    elif isinstance(obj, int):
        parts.append(int.__repr__(obj))
    elif isinstance(obj, float):
        if obj != obj:
            parts.append("NaN")
        elif math.isinf(obj):
            parts.append("Infinity" if obj > 0 else "-Infinity")
        else:
            parts.append(float.__repr__(obj))
    elif isinstance(obj, list | tuple):
        _encode_list(obj, newline, parts)
    elif isinstance(obj, dict):
        _encode_dict(obj, newline, parts)
    else:
        raise _Unsupported


def _encode_list(obj: list | tuple, newline: str, parts: list[str]) -> None:
    if not obj:
        parts.append("[]")
        return
    inner = newline + "  "
    separator = "," + inner
    parts.append("[" + inner)
    for i, item in enumerate(obj):
        if i:
            parts.append(separator)
        if type(item) is str:
            parts.append(encode_basestring(item))
        else:
            _encode(item, inner, parts)
    parts.append(newline + "]")


def _encode_dict(obj: dict, newline: str, parts: list[str]) -> None:
    if not obj:
        parts.append("{}")
        return
    inner = newline + "  "
    separator = "," + inner
    parts.append("{" + inner)
    for i, (key, value) in enumerate(obj.items()):
        if not isinstance(key, str):
            raise _Unsupported
        if i:
            parts.append(separator)
        parts.append(encode_basestring(key))
        parts.append(": ")
        if type(value) is str:
            parts.append(encode_basestring(value))
        else:
            _encode(value, inner, parts)
    parts.append(newline + "}")


class FastJSONStorage(JSONStorage):
    """Engramia's ``JSONStorage`` with a faster file write that produces byte-identical files, its key ->
    path mapping with each scope folder resolved once instead of on every key, and its key listing on
    ``os.scandir`` (tests/test_performance_shapes.py checks all three against ``JSONStorage``)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        self._made_dirs: set[str] = set()
        self._scope_roots: dict[tuple[str, str], tuple[Path, bool]] = {}

    def _key_to_path(self, key: str) -> Path:
        # JSONStorage._key_to_path step by step, except that ``_effective_root().resolve()`` (a realpath,
        # one lstat per path component) and the "stays inside the root" check are done once per scope:
        # no key segment is "." or "..", so only the scope folder itself can lead outside the root.
        clean = key.replace("\\", "/")
        parts = [p for p in clean.split("/") if p and not all(c == "." for c in p)]
        if not parts:
            raise ValueError(f"Invalid storage key: {key!r}")
        scope = get_scope()
        cached = self._scope_roots.get((scope.tenant_id, scope.project_id))
        if cached is None:
            root = self._effective_root().resolve()
            cached = (root, root.is_relative_to(self._root_resolved))
            self._scope_roots[(scope.tenant_id, scope.project_id)] = cached
        root, inside = cached
        path = root.joinpath(*parts).with_suffix(".json")
        if not inside:
            raise ValueError(f"Storage key escapes root directory: {key!r}")
        return path

    def list_keys(self, prefix: str = "") -> list[str]:
        # JSONStorage.list_keys walks the scope with pathlib (rglob("*.json"), relative_to, with_suffix):
        # ~100 us per file, so counting a large scope took seconds. The same walk on os.scandir: every
        # entry whose name ends in ".json" (files, folders and links alike, as rglob yields them) in the
        # scope folder and every folder below it (links to folders are not followed, as Path.walk does
        # not), except names starting with "_"; the key is the relative path without its last suffix.
        # A folder none of whose keys can start with the prefix is not entered ("patterns/" skips the
        # rest of the scope), and each folder's entries go through comprehensions rather than a loop.
        root = self._effective_root()
        root.mkdir(parents=True, exist_ok=True)
        keys: list[str] = []
        pending = [("", os.fspath(root))]
        while pending:
            relative, folder = pending.pop()
            try:
                with os.scandir(folder) as it:
                    entries = list(it)
            except OSError:
                continue
            # Path.with_suffix("") drops ".json" unless the name is just ".json" (no suffix then).
            found = [
                (relative + (n[:-5] if n != ".json" else n)).replace("\\", "/")
                for n in [e.name for e in entries]
                if n.endswith(".json") and not n.startswith("_")
            ]
            if prefix and not relative.replace("\\", "/").startswith(prefix):
                found = [k for k in found if k.startswith(prefix)]
            keys += found
            try:
                folders = [e for e in entries if e.is_dir(follow_symlinks=False)]
            except OSError:
                folders = [e for e in entries if _is_folder(e)]
            for entry in folders:
                below = relative + entry.name + "/"
                shown = below.replace("\\", "/")
                if not prefix or shown.startswith(prefix) or prefix.startswith(shown):
                    pending.append((below, entry.path))
        return sorted(keys)

    def _atomic_write(self, path: Path, data: dict[str, Any] | list[Any]) -> None:
        # JSONStorage._atomic_write's steps (tmp -> bak -> replace) on plain strings, with the text made
        # in one piece and each directory created once per storage object instead of on every write.
        text = dumps_indent2(data)
        target = os.fspath(path)
        folder = os.path.dirname(target)
        if folder not in self._made_dirs:
            os.makedirs(folder, exist_ok=True)
            self._made_dirs.add(folder)
        stem = os.path.splitext(target)[0]  # what Path.with_suffix replaces
        tmp = stem + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        if os.path.exists(target):
            os.replace(target, stem + ".bak")
        os.replace(tmp, target)


def _is_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def open_memory(store: Path) -> engramia.Memory:
    # No embeddings: recall falls back to Engramia's keyword search, which needs no model or key.
    return engramia.Memory(embeddings=None, storage=FastJSONStorage(path=str(store)))


def pattern_count(memory: engramia.Memory) -> int:
    """Engramia's pattern count for the current scope: ``memory.metrics.pattern_count`` is this very
    number (``len(list_keys("patterns/"))``), but that property also computes every other metric."""
    return int(memory.storage.count_patterns())


def destination_id(store: Path) -> str:
    return f"{DESTINATION}:{Path(store).resolve()}"


def load_embedded(
    layout: DataLayout,
    scope: str,
    tenant_id: str,
    project_id: str,
    store: Path | None = None,
    batch_rows: int = 5_000,
    progress: Callable[[int], None] | None = None,
    writes: AbstractContextManager[Any] | None = None,
) -> LoadResult:
    """Load the scope's kept patterns that the store lacks; retract those no longer kept.

    ``writes`` (a lock shared by concurrent loads) is held only while files are written and deleted:
    planning and reading texts run beside another scope's writes.
    """
    started = time.perf_counter()
    store = Path(store or layout.engramia)
    ledger = Ledger(layout, scope, destination_id(store))
    result = LoadResult(scope=scope, destination=DESTINATION, tenant_id=tenant_id, project_id=project_id)
    result.server_version = f"engramia {getattr(engramia, '__version__', '?')} (embedded)"
    memory = open_memory(store)
    with engramia_scope(tenant_id, project_id):
        # The same plan as pipelines.load.plan.plan_load, made on ids: texts are read only for what is sent.
        kept = kept_patterns(layout, scope)
        # count_patterns() is len(list_keys("patterns/")): one listing gives both the count and the keys.
        existing = set(memory.storage.list_keys(prefix="patterns/"))
        before = len(existing)
        # Trust the ledger only for keys the store really holds: a wiped or damaged store is refilled.
        in_store = ledger.in_store().select("pattern_id", "key").filter(pl.col("key").is_in(list(existing)))
        ids = kept_ids(layout, scope)
        send_ids = ids.join(in_store, on="pattern_id", how="anti")
        to_retract = in_store.join(ids, on="pattern_id", how="anti")
        result.kept, result.already_loaded = ids.height, ids.height - send_ids.height
        result.pattern_count_before = before
        if before - to_retract.height + send_ids.height > SCOPE_PATTERN_CAP:
            result.error = (
                f"scope {scope} ({tenant_id}/{project_id}) would hold more than {SCOPE_PATTERN_CAP:,} "
                f"patterns ({before:,} stored + {send_ids.height:,} new); "
                "split it (scope_by=tenant or assistant)"
            )
            result.pattern_count_after = before
            return result
        to_send = (
            # A filter, not a semi join: it reaches the Parquet scans, which then skip other rows' texts.
            kept.filter(pl.col("pattern_id").is_in(send_ids["pattern_id"].implode())).collect()
            if kept is not None and send_ids.height
            else None
        )
        # Only the writes wait for other loads' writes (see ``writes``).
        with writes or nullcontext():
            for row in to_retract.iter_rows(named=True):
                memory.delete_pattern(row["key"])
                ledger.record(row["pattern_id"], row["key"], RETRACTED, "no longer kept")
                result.retracted += 1
            ledger.flush()
            for rows in iter_rows(to_send, batch_rows) if to_send is not None else ():
                records = []
                for row in rows:
                    key = f"patterns/{row['pattern_id']}"
                    if key in existing:
                        ledger.record(row["pattern_id"], key, PRESENT, "key already in the store")
                        result.present += 1
                    else:
                        records.append(import_record(row, tenant_id, project_id))
                # Keys already present were filtered out above, so overwrite=True only skips a second lookup.
                # Serial on purpose: two threads or processes writing files into the scope folder were slower
                # than one (measured 7.5k and 3.1k vs 9-12k files/s), the file system serialises them.
                imported = memory.import_data(records, overwrite=True) if records else 0
                if imported != len(records):
                    raise RuntimeError(f"scope {scope}: import stored {imported} of {len(records)} records")
                for rec in records:
                    ledger.record(rec["data"]["design"]["pattern_id"], rec["key"], STORED)
                result.stored += imported
                result.sent += len(rows)
                ledger.flush()
                if progress:
                    progress(len(rows))
        # Nothing written means nothing to recount (listing a large scope takes seconds).
        changed = result.stored or result.retracted
        result.pattern_count_after = pattern_count(memory) if changed else before
    result.seconds = time.perf_counter() - started
    return result
