"""Engramia's embedded storage as the pipeline opens it: JSON files on local disk, written fast.

Invariant: :class:`FastJSONStorage` behaves exactly like Engramia's ``JSONStorage`` (same keys, paths,
scoping, tmp -> bak -> replace sequence, byte-identical files; tests/load/test_embedded_store.py checks
it against ``JSONStorage``); only its speed differs. ``JSONStorage`` writes each pattern with
``json.dump(indent=2)``, which always runs the pure-Python encoder and hands the file one small string at
a time; here the file is one string built with the C string escaper. Engramia reads the scope from a
context variable, so every call runs inside :func:`engramia_scope`.
"""

from __future__ import annotations

import copy
import fcntl
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any

import engramia
from engramia._context import get_scope, reset_scope, set_scope
from engramia.providers.json_storage import JSONStorage
from engramia.telemetry import metrics as engramia_metrics
from engramia.types import Scope

# In the store's root; not a key (keys are ".json" files).
WRITES_LOCK = ".writes.lock"
# Keys whose file is simply ``<scope folder>/<key>.json``: no dots (suffixes, "." or ".." segments), no
# backslashes, no empty segments. Every pattern key is one; any other key takes JSONStorage's own mapping.
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*")
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
    path mapping with each scope folder resolved once instead of on every key (and a write's path made as
    a string), and its key listing on ``os.scandir`` (tests/load/test_embedded_store.py checks all of them
    against ``JSONStorage``)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        self._made_dirs: set[str] = set()
        self._scope_roots: dict[tuple[str, str], tuple[Path, bool, str]] = {}

    def _scope_root(self) -> tuple[Path, bool, str]:
        """The current scope's folder resolved (a realpath, one lstat per path component, so once per
        scope), whether it stays inside the root, and its path as a string."""
        scope = get_scope()
        cached = self._scope_roots.get((scope.tenant_id, scope.project_id))
        if cached is None:
            root = self._effective_root().resolve()
            cached = (root, root.is_relative_to(self._root_resolved), os.fspath(root))
            self._scope_roots[(scope.tenant_id, scope.project_id)] = cached
        return cached

    def _key_to_path(self, key: str) -> Path:
        # JSONStorage._key_to_path step by step, except that the scope folder is resolved and checked once
        # per scope: no key segment is "." or "..", so only the scope folder can lead outside the root.
        clean = key.replace("\\", "/")
        parts = [p for p in clean.split("/") if p and not all(c == "." for c in p)]
        if not parts:
            raise ValueError(f"Invalid storage key: {key!r}")
        root, inside, _ = self._scope_root()
        path = root.joinpath(*parts).with_suffix(".json")
        if not inside:
            raise ValueError(f"Storage key escapes root directory: {key!r}")
        return path

    def _key_to_file(self, key: str) -> str:
        """``_key_to_path(key)`` as a string; a plain key (every pattern key) is joined as a string, which
        takes a tenth of the time of pathlib's joinpath and with_suffix (~30 us a key, once per write)."""
        if _PLAIN_KEY.fullmatch(key) is None:
            return os.fspath(self._key_to_path(key))
        _, inside, root = self._scope_root()
        if not inside:
            raise ValueError(f"Storage key escapes root directory: {key!r}")
        return f"{root}/{key}.json"

    def save(self, key: str, data: dict[str, Any] | list[Any]) -> None:
        # JSONStorage.save, on the key's file as a string (see _key_to_file).
        started = time.perf_counter()
        self._atomic_write(self._key_to_file(key), data)
        engramia_metrics.observe_storage("json", "save", time.perf_counter() - started)

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

    def _atomic_write(self, path: Path | str, data: dict[str, Any] | list[Any]) -> None:
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


@contextmanager
def store_writes(store: Path) -> Iterator[None]:
    """Hold the store's write lock: loads in other processes (scope runs side by side, the CLI's or those
    a sensor launched) write one at a time, which suits the JSON store (its writes are not meant for
    concurrent writers, and one writer creates files faster than two)."""
    store.mkdir(parents=True, exist_ok=True)
    fd = os.open(store / WRITES_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def open_memory(store: Path) -> engramia.Memory:
    # No embeddings: recall falls back to Engramia's keyword search, which needs no model or key.
    return engramia.Memory(embeddings=None, storage=FastJSONStorage(path=str(store)))


class ReadOnlyJSONStorage(FastJSONStorage):
    """Engramia's JSON storage that reads each key and listing once and ignores writes (counted, for the
    record): Engramia changes some of what it reads before writing it back (a recall rewards every pattern
    it returns, ``reuse_count + 1``), so reads that must leave the store as they found it go through it."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        self.dropped_writes = 0
        self._listed: dict[tuple[str, str, str], list[str]] = {}
        self._read: dict[tuple[str, str, str], Any] = {}

    def list_keys(self, prefix: str = "") -> list[str]:
        scope = get_scope()
        where = (scope.tenant_id, scope.project_id, prefix)
        if where not in self._listed:
            self._listed[where] = super().list_keys(prefix)
        return list(self._listed[where])

    def load(self, key: str) -> dict | None:
        # Keyed by scope and key, not by path: mapping a key to its path costs more than the lookup.
        scope = get_scope()
        where = (scope.tenant_id, scope.project_id, key)
        if where not in self._read:
            self._read[where] = super().load(key)
        # Engramia changes some of what it loads before writing it back (a recall's reward, an analytics
        # event appended): a copy keeps that out of what the next read returns.
        return copy.copy(self._read[where])

    def save(self, key: str, data: dict[str, Any] | list[Any]) -> None:
        self.dropped_writes += 1

    def delete(self, key: str) -> None:
        self.dropped_writes += 1

    def save_embedding(self, key: str, embedding: list[float]) -> None:
        self.dropped_writes += 1


def read_only_memory(store: Path) -> engramia.Memory:
    """Engramia's ``Memory`` on the store, reading only (a recall, for a demo or a look)."""
    return engramia.Memory(embeddings=None, storage=ReadOnlyJSONStorage(path=str(store)))


def pattern_count(memory: engramia.Memory) -> int:
    """Engramia's pattern count for the current scope: ``memory.metrics.pattern_count`` is this very
    number (``len(list_keys("patterns/"))``), but that property also computes every other metric."""
    return int(memory.storage.count_patterns())
