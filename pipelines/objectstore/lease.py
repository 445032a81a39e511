"""One writer at a time per ``s3://`` data directory, across machines.

The ``flock`` claims that let ingest runs share a local or NFS data directory do not reach into a bucket,
and two runs publishing working copies of one data directory would overwrite each other's manifest. So a
run that writes to an ``s3://`` data directory first creates the object ``_lease/writer.json`` with a
conditional PUT (``If-None-Match: *``, obstore's ``mode="create"``): S3 (and moto) let exactly one of
several concurrent creates succeed. The holder deletes it when it is done; the others are told who holds
it and stop without doing anything.

A holder killed outright (``kill -9``, a node lost) leaves the lease behind; the error names the host,
process and start time, and the lease is removed by hand (README: Object storage) once that run is known
to be gone.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from pipelines.objectstore.store import ObjectStore

LEASE_KEY = "_lease/writer.json"


class LeaseHeld(RuntimeError):
    """Another run writes to this data directory; the message says which."""


@contextmanager
def writer_lease(store: ObjectStore) -> Iterator[None]:
    holder = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if not store.put_bytes(LEASE_KEY, json.dumps(holder).encode(), create_only=True):
        raw = store.read_bytes(LEASE_KEY)
        other = json.loads(raw) if raw else {}
        raise LeaseHeld(
            f"{store.location.url} is being written by another run (host {other.get('host', '?')}, pid "
            f"{other.get('pid', '?')}, since {other.get('started_at', '?')}; lease object "
            f"{store.location.object_url(LEASE_KEY)})"
        )
    try:
        yield
    finally:
        store.delete(LEASE_KEY)
