"""Input shapes: the registry of readers (:data:`FORMATS`) and per-file detection.

Invariant: every module of this package that defines ``READERS`` is registered, once, under each
reader's ``name``; :func:`detect_format` names exactly one format for a file or raises
:class:`~pipelines.ingest.formats.base.UnknownFormat` naming the file and the formats known.
The contract readers follow is in :mod:`pipelines.ingest.formats.base`.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from pipelines.ingest.formats.base import HEAD_BYTES, Reader, Record, UnknownFormat
from pipelines.ingest.formats.stream import inner_name, open_member

__all__ = ["FORMATS", "Reader", "Record", "UnknownFormat", "detect_format", "detect_head", "reader"]


def _load() -> dict[str, Reader]:
    found: list[Reader] = []
    for info in pkgutil.iter_modules(__path__):
        if info.name in ("base", "stream") or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        found.extend(getattr(module, "READERS", ()))
    found.sort(key=lambda r: (r.priority, r.name))
    formats: dict[str, Reader] = {}
    for r in found:
        if r.name in formats:
            raise RuntimeError(f"two readers are named {r.name!r}")
        formats[r.name] = r
    return formats


# Detection order is the dict's order.
FORMATS: dict[str, Reader] = _load()


def reader(name: str) -> Reader:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown format {name!r}; known formats: {', '.join(FORMATS)}") from None


def detect_head(head: bytes, name: str) -> str | None:
    """The first format (in detection order) that claims a file starting with ``head``."""
    for fmt, r in FORMATS.items():
        if r.detect(head, name):
            return fmt
    return None


def detect_format(path: str | Path, member: str | None = None) -> str:
    """The format of a file (of one member of a .zip), from its decompressed first bytes."""
    with open_member(Path(path), member) as stream:
        head = stream.read(HEAD_BYTES)
    label = f"{path}!{member}" if member else str(path)
    # Readers that go by the file's name see the name of what they read: user.json for user.json.gz.
    fmt = detect_head(head, inner_name(Path(path), member))
    if fmt is None:
        raise UnknownFormat(label, list(FORMATS))
    return fmt
