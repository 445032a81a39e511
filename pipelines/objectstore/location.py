"""Where a data directory or a landing folder lives: a local path, or ``s3://bucket/prefix``.

Invariant: a location's ``url`` parses back to the same location, and ``key`` joins the prefix and a
relative path with exactly one ``/``, so every module builds object keys the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

S3_SCHEME = "s3://"


def is_remote(location: str | Path | None) -> bool:
    """Whether a ``--data-dir`` / ``--input`` / ``landing`` value names object storage."""
    return isinstance(location, str) and location.startswith(S3_SCHEME)


def absolute(location: str | Path) -> str:
    """A local path made absolute against the current folder; an ``s3://`` location as it is. A run's
    configuration holds these, so a run re-executed from the UI (another process, another current
    folder) reads and writes the same folders as the command that started it."""
    text = str(location)
    return text if is_remote(text) else os.path.abspath(text)


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # without leading or trailing "/"; "" for the bucket's root

    @classmethod
    def parse(cls, url: str) -> S3Location:
        if not is_remote(url):
            raise ValueError(f"{url}: not an s3:// location")
        bucket, _, prefix = url[len(S3_SCHEME) :].partition("/")
        if not bucket:
            raise ValueError(f"{url}: no bucket (write s3://bucket/prefix)")
        return cls(bucket, prefix.strip("/"))

    @property
    def url(self) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self.prefix}".rstrip("/")

    def key(self, relative: str) -> str:
        """The full object key of a path relative to this location."""
        relative = relative.lstrip("/")
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def child(self, relative: str) -> S3Location:
        return S3Location(self.bucket, self.key(relative).strip("/"))

    def object_url(self, relative: str) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self.key(relative)}"
