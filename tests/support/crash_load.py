"""A REST load in a process of its own that stops dead at one write request, for a test to SIGKILL.

    python -m tests.support.crash_load DATA_DIR URL KEY_ENV MODE NTH before|after

The NTH write (``POST /v1/learn`` or ``/v1/import``, the empty-body permission probe not counted) is
held ``before`` it is sent, or ``after`` the server has answered it (the answer never reaches the load).
Either way the process prints ``HELD <n>`` on stdout and waits to be killed.
"""

from __future__ import annotations

import sys
import time

import httpx

from pipelines.load.rest.options import RestMode
from pipelines.load.rest.scope_load import load_rest
from pipelines.load.rest.servers import ServerConfig
from pipelines.tables import DataLayout
from tests.support.rest_load import SCOPE, opts

WRITE_PATHS = {RestMode.LEARN: "/v1/learn", RestMode.IMPORT: "/v1/import"}
# Three records per import request: the sample's ten patterns take four requests.
IMPORT_BATCH = {"max_body_bytes": 4096, "max_batch_records": 3}


def options(mode: RestMode):
    return opts(mode, **(IMPORT_BATCH if mode is RestMode.IMPORT else {}))


class HoldOnNth(httpx.HTTPTransport):
    def __init__(self, path: str, nth: int, when: str) -> None:
        super().__init__()
        self.path, self.nth, self.when = path, nth, when
        self.writes = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        is_write = request.method == "POST" and request.url.path == self.path and request.content != b"{}"
        if is_write:
            self.writes += 1
        if not is_write or self.writes != self.nth:
            return super().handle_request(request)
        if self.when == "after":
            super().handle_request(request).read()
        print(f"HELD {self.writes}", flush=True)
        time.sleep(600)
        raise SystemExit("not killed")


def main(argv: list[str]) -> None:
    data, url, key_env, mode, nth, when = argv
    transport = HoldOnNth(WRITE_PATHS[RestMode(mode)], int(nth), when)
    server = ServerConfig(url, key_env)
    load_rest(
        DataLayout.at(data), SCOPE, "default", "default", server, options(RestMode(mode)), transport=transport
    )
    raise SystemExit("the load ended without reaching the held request")


if __name__ == "__main__":
    main(sys.argv[1:])
