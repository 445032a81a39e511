"""A handle on one ``s3://bucket/prefix``: list, download, upload and delete objects under it.

Invariants: an upload is one PUT of the whole file to its final key, so a reader sees the old object or
the new one, never a part (S3 makes an object visible only once its PUT or multipart upload completed);
downloads land in a temporary file renamed into place, so a local copy is complete or absent.
:func:`check_access` is the one place that turns a missing bucket, refused credentials or an unreachable
endpoint into one line naming the location and what to set.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import obstore
from obstore.exceptions import AlreadyExistsError, NotFoundError, PreconditionError
from obstore.store import S3Store

from pipelines.objectstore.location import S3Location
from pipelines.objectstore.settings import S3Settings

# Objects are streamed in pieces of this size: a dump of any size needs no more memory.
_CHUNK = 8 * 1024 * 1024


class ObjectStoreError(RuntimeError):
    """Object storage cannot be used as configured; the message is the one line to show."""


@dataclass(frozen=True)
class ObjectInfo:
    relative: str  # key relative to the handle's prefix
    size: int
    etag: str
    last_modified: datetime

    @property
    def mtime_ns(self) -> int:
        return int(self.last_modified.timestamp() * 1_000_000) * 1_000


class ObjectStore:
    def __init__(self, location: S3Location, settings: S3Settings) -> None:
        self.location = location
        self.settings = settings
        self._store = S3Store(
            location.bucket,
            prefix=location.prefix or None,
            config=settings.obstore_config(),  # type: ignore[arg-type]
            client_options={**settings.client_options(), "connect_timeout": "10s"},  # type: ignore[typeddict-item]
            # obstore's default retries for up to 3 minutes; an unreachable endpoint should fail in seconds.
            retry_config={"max_retries": 3, "retry_timeout": timedelta(seconds=20)},  # type: ignore[typeddict-item]
        )

    def list(self, under: str = "") -> Iterator[ObjectInfo]:
        """Every complete object below ``under`` (relative); in-progress multipart uploads are not objects."""
        for batch in obstore.list(self._store, under.strip("/") or None):
            for meta in batch:
                yield ObjectInfo(
                    relative=str(meta["path"]),
                    size=int(meta["size"]),
                    etag=str(meta.get("e_tag") or "").strip('"'),
                    last_modified=meta["last_modified"],
                )

    def exists(self, relative: str) -> bool:
        try:
            obstore.head(self._store, relative)
        except NotFoundError:
            return False
        return True

    def read_bytes(self, relative: str) -> bytes | None:
        try:
            return bytes(obstore.get(self._store, relative).bytes())
        except NotFoundError:
            return None

    def download(self, relative: str, target: Path, mtime_ns: int | None = None) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.download")
        with open(tmp, "wb") as out:
            for chunk in obstore.get(self._store, relative).stream(min_chunk_size=_CHUNK):
                out.write(chunk)
        if mtime_ns is not None:
            os.utime(tmp, ns=(mtime_ns, mtime_ns))
        os.replace(tmp, target)

    def upload(self, source: Path, relative: str) -> str:
        """Returns the new object's ETag."""
        # obstore sends a large file as a multipart upload, which S3 also publishes only once complete.
        with open(source, "rb") as f:
            result = obstore.put(self._store, relative, f, chunk_size=_CHUNK)
        return str(result.get("e_tag") or "").strip('"')

    def put_bytes(self, relative: str, data: bytes, create_only: bool = False) -> bool:
        """Write ``data``; with ``create_only`` (If-None-Match: *) only when no object has that key.
        Returns False when ``create_only`` found the key taken."""
        try:
            obstore.put(self._store, relative, data, mode="create" if create_only else "overwrite")
        except (AlreadyExistsError, PreconditionError):  # S3 answers 412 to If-None-Match on a taken key
            return False
        return True

    def delete(self, relative: str) -> None:
        obstore.delete(self._store, relative)


def check_access(location: S3Location, settings: S3Settings, what: str) -> ObjectStore:
    """A handle on ``location`` after one listing proved the bucket exists and the keys are accepted.

    ``what`` names the option the location came from (``--data-dir``); the message never holds a secret.
    """
    problems = settings.problems()
    if problems:
        raise ObjectStoreError(f"{what} {location.url}: {'; '.join(problems)}")
    store = ObjectStore(location, settings)
    try:
        next(iter(obstore.list(store._store, None, chunk_size=1)), None)
    except Exception as exc:
        raise ObjectStoreError(f"{what} {location.url}: {_explain(str(exc), settings)}") from None
    return store


# The error text holds the request's URL, request id and host id as well, so a bare "404" or "403" can
# be part of a port or an id: only S3's own error code, or the status the client reports, is read.
_S3_CODE = re.compile(r"<Code>(\w+)</Code>")
_HTTP_STATUS = re.compile(r"\bstatus(?: code)?:? (\d{3})\b")
_REFUSED_CODES = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"})


def _explain(error: str, settings: S3Settings) -> str:
    endpoint = settings.endpoint or "AWS S3"
    code = match.group(1) if (match := _S3_CODE.search(error)) else None
    status = int(match.group(1)) if (match := _HTTP_STATUS.search(error)) else None
    if code == "NoSuchBucket" or (code is None and status == 404):
        return f"the bucket does not exist at {endpoint}: create it, or fix the bucket name"
    if code in _REFUSED_CODES or status == 403:
        return (
            f"{endpoint} refused the credentials: check {settings.key_id_env} and {settings.secret_env} "
            "(or the variables --s3-key-id-env / --s3-secret-env name) and the bucket's permissions"
        )
    if any(word in error.lower() for word in ("connect", "dns", "timed out", "timeout", "refused")):
        return f"cannot reach the endpoint {endpoint}: check --s3-endpoint-url (or AWS_ENDPOINT_URL)"
    first = error.strip().splitlines()[0] if error.strip() else "unknown error"
    return f"object storage error at {endpoint}: {first[:200]}"
