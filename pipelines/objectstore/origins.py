"""Where a local copy of a landed object came from: the record that keeps a dump's identity its own.

A dump streamed from ``s3://`` into local scratch is named and identified by its object (URL, size and
ETag), not by the scratch path, so the same object is the same dump on every machine and whichever
scratch folder holds it, and a replaced object (new ETag) is a new delivery. The record is a hidden file
at the scratch folder's root, which dump discovery skips like every hidden name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

ORIGINS_FILE = ".s3-origins.json"


def read_origins(folder: Path) -> dict[str, tuple[str, str]]:
    """``{path relative to folder: (object URL, ETag)}``; empty for an ordinary folder."""
    path = folder / ORIGINS_FILE
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {rel: (entry["url"], entry["etag"]) for rel, entry in data.items()}


def write_origins(folder: Path, origins: dict[str, tuple[str, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{ORIGINS_FILE}.tmp"
    data = {rel: {"url": url, "etag": etag} for rel, (url, etag) in sorted(origins.items())}
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, folder / ORIGINS_FILE)
