"""How fast to talk to an Engramia server, and how long that will take.

The server limits every client twice (Engramia 0.6.6 and 0.7.x; neither publishes its limits in
headers, so they are configuration here, matching the server's): ``ENGRAMIA_RATE_LIMIT_DEFAULT``
requests per minute per client IP and PATH (60), and ``ENGRAMIA_RATE_LIMIT_PER_KEY`` per API key over
all paths together (120). A load sends to one path (``/v1/learn`` or ``/v1/import``), so the per-path
limit binds; a rollback deletes ``/v1/patterns/<key>``, a new path for every key, so only the per-key
limit does (measured: 5,268 deletes at the old 60/min took 88 minutes; at 120/min they take 44). Anything
else using the same key at the same time shares the per-key budget, and a 429 pauses every request of
the client for its Retry-After.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

SERVER_PER_PATH_LIMIT = 60
SERVER_PER_KEY_LIMIT = 120


def rollback_pace(per_key_limit: float = SERVER_PER_KEY_LIMIT) -> float:
    """Requests per minute for a rollback: the per-key limit (each delete is a path of its own)."""
    return float(per_key_limit)


def duration(n: int, per_minute: float | None) -> str:
    """``n`` requests at ``per_minute``, in words ("about 44 min")."""
    if not per_minute or per_minute <= 0:
        return "unpaced"
    seconds = n * 60.0 / per_minute
    if seconds < 90:
        return f"about {seconds:.0f} s"
    if seconds < 5400:
        return f"about {seconds / 60:.0f} min"
    return f"about {seconds / 3600:.1f} h"


@dataclass
class Progress:
    """Progress lines for a long series of requests: an estimate at the start, then every ``every``
    seconds how far it got and how long the rest will take at the pace reached."""

    what: str
    total: int
    per_minute: float | None
    say: Callable[[str], None] | None = None
    every: float = 10.0
    done: int = 0
    _started: float = field(default_factory=time.monotonic)
    _last: float = field(default_factory=time.monotonic)

    def start(self) -> None:
        self._started = self._last = time.monotonic()
        pace = f"{self.per_minute:g}/min" if self.per_minute else "no client-side limit"
        self._say(f"{self.what}: {self.total} patterns at {pace}, {duration(self.total, self.per_minute)}")

    def tick(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.every or self.done == self.total:
            self._last = now
            elapsed = now - self._started
            if self.done >= self.total:
                self._say(f"{self.what}: {self.done}/{self.total} done in {elapsed:.1f} s")
                return
            # Over less than a second (items that needed no request) a rate means nothing.
            rate = self.done / elapsed * 60 if elapsed >= 1 else self.per_minute
            pace = f" ({rate:.0f}/min)" if rate else ""
            left = duration(self.total - self.done, rate)
            self._say(f"{self.what}: {self.done}/{self.total}{pace}, {left}")

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def _say(self, msg: str) -> None:
        if self.say is not None:
            self.say(msg)
