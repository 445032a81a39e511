"""A small httpx client for the Engramia REST API (``/v1``), built for bulk loads.

* Auth: ``Authorization: Bearer <key>``, the key read from the NAMED environment variable each time a
  request is built (:class:`EnvBearerAuth`); it is never stored on an object, logged or put in an error.
* Retries with exponential backoff and jitter (:class:`Backoff`) on connection errors, timeouts and 5xx.
  A request that is not idempotent (``POST /v1/learn`` on 0.6.6) is retried only when it certainly
  never reached the server (connection refused, connect timeout); when it may have been applied (read
  timeout, dropped connection, 5xx) the client raises :class:`AmbiguousRequest` so the caller can ask
  the server what happened before sending it again.
* A client-side rate limiter (:class:`RateLimiter`: evenly spaced requests, no bursts, so a fixed
  one-minute server window never sees more than ``requests_per_minute``), and ``429 RATE_LIMITED``
  answered by waiting ``Retry-After`` (capped by ``max_retry_after``, bounded in total by
  ``rate_limit_budget``). ``429 QUOTA_EXCEEDED`` is not retried.
* Typed errors (:mod:`pipelines.load.rest.errors`) for what a load must handle differently.

Invariant: a request that may have been applied is never sent again by the client unless it is
idempotent; the caller decides what to do with :class:`AmbiguousRequest`.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import httpx

from pipelines.load.rest.errors import (
    AmbiguousRequest,
    AuthError,
    MissingApiKey,
    NotFound,
    RateLimitExhausted,
    RestError,
    ServerUnavailable,
    Stopped,
    error_body,
    error_reason,
    http_error,
    parse_retry_after,
)
from pipelines.load.rest.servers import check_env_name

log = logging.getLogger(__name__)

USER_AGENT = "assistants-backfill"
# Errors where the request certainly never reached the server: always safe to send again.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


class EnvBearerAuth(httpx.Auth):
    """Adds ``Authorization: Bearer <$NAME>`` to each request, reading the variable at that moment."""

    def __init__(self, env_name: str) -> None:
        # Checked here too, not only in ServerConfig: the name goes into every MissingApiKey message, and
        # a client can be built without a ServerConfig.
        self.env_name = check_env_name(env_name)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        value = os.environ.get(self.env_name, "").strip()
        if not value:
            raise MissingApiKey(
                f"environment variable {self.env_name} is not set (it must hold the Engramia API key)"
            )
        request.headers["Authorization"] = f"Bearer {value}"
        yield request

    def __repr__(self) -> str:
        return f"EnvBearerAuth(env={self.env_name!r})"


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with "equal jitter": retry n waits between c/2 and c,
    where c = min(cap, base * factor^(n-1))."""

    base: float = 0.5
    factor: float = 2.0
    cap: float = 30.0
    max_retries: int = 5

    def ceiling(self, retry: int) -> float:
        return min(self.cap, self.base * self.factor ** max(0, retry - 1))

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        c = self.ceiling(retry)
        return c / 2 + (rng or random).uniform(0, c / 2)


class RateLimiter:
    """Evenly spaced requests: at most ``per_minute`` in any 60 s, no bursts; shared by threads.

    :meth:`block` pushes every caller back (used when the server answers 429 with Retry-After).
    """

    def __init__(
        self,
        per_minute: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = 60.0 / per_minute if per_minute and per_minute > 0 else 0.0
        self._clock, self._sleep = clock, sleep
        self._next = float("-inf")
        self._blocked_until = float("-inf")
        self._lock = threading.Lock()

    def acquire(self) -> float:
        with self._lock:
            now = self._clock()
            start = max(now, self._next, self._blocked_until)
            self._next = start + self.interval
        wait = start - now
        if wait > 0:
            self._sleep(wait)
        return max(0.0, wait)

    def block(self, seconds: float) -> None:
        with self._lock:
            self._blocked_until = max(self._blocked_until, self._clock() + seconds)


@dataclass
class ClientStats:
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    rate_limit_wait: float = 0.0
    # (Retry-After the server asked for, seconds actually waited), one per 429 RATE_LIMITED
    retry_after_waits: list[tuple[float, float]] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)


@dataclass
class Reply:
    status: int
    body: Any
    headers: httpx.Headers
    # True when an earlier attempt of this call may have been applied (it was retried after a
    # timeout, dropped connection or 5xx): an idempotent import may then report fewer records.
    retried_ambiguous: bool = False


class EngramiaClient:
    """One server, one key (one scope). Thread-safe; use as a context manager or call :meth:`close`."""

    def __init__(
        self,
        url: str,
        api_key_env: str,
        *,
        label: str = "",
        timeout: float = 30.0,
        requests_per_minute: float | None = 60.0,
        backoff: Backoff | None = None,
        max_retry_after: float = 120.0,
        rate_limit_budget: float = 900.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``sleep``: how the client waits (tests pass a fake clock's); by default a wait on
        :attr:`stopped`, so that :meth:`stop` ends it at once."""
        self.url = url.rstrip("/")
        self.api_key_env = api_key_env
        self.label = label or self.url
        self.backoff = backoff or Backoff()
        self.max_retry_after = max_retry_after
        self.rate_limit_budget = rate_limit_budget
        self.stats = ClientStats()
        # Set on Ctrl-C while requests are in flight on other threads: their waits (Retry-After, backoff)
        # would otherwise hold the interrupted load until they run out.
        self.stopped = threading.Event()
        self._pause = sleep
        self.limiter = RateLimiter(requests_per_minute, clock=clock, sleep=self.sleep)
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._http = httpx.Client(
            base_url=self.url,
            timeout=timeout,
            auth=EnvBearerAuth(api_key_env),
            transport=transport,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        )

    def __repr__(self) -> str:
        return f"EngramiaClient(url={self.url!r}, api_key_env={self.api_key_env!r})"

    def __enter__(self) -> EngramiaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def stop(self) -> None:
        """End every wait of this client now and send nothing more (for good: the load is over)."""
        self.stopped.set()

    def sleep(self, seconds: float) -> None:
        """Every wait of this client (limiter, retries, 429s, job polls) goes through here; raises
        :class:`Stopped` once the client is stopped."""
        if self._pause is None:
            self.stopped.wait(seconds)
        elif not self.stopped.is_set():
            self._pause(seconds)
        self._check_stopped()

    def _check_stopped(self) -> None:
        if self.stopped.is_set():
            raise Stopped(f"{self.label}: load interrupted; nothing more is sent")

    # -- the one request loop -------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        idempotent: bool = True,
        timeout: float | None = None,
    ) -> Reply:
        retries = 0
        ambiguous = False
        waited_429 = 0.0
        send_headers = dict(headers or {})
        if content is not None:
            send_headers.setdefault("Content-Type", "application/json")
        while True:
            self._check_stopped()
            self.limiter.acquire()
            self._count("requests")
            try:
                extra = {} if timeout is None else {"timeout": timeout}
                resp = self._http.request(
                    method, path, json=json, content=content, headers=send_headers, **extra
                )
            except _NOT_SENT as exc:
                retries = self._retry(retries, f"{method} {path}: {type(exc).__name__}: {exc}")
                continue
            except httpx.TransportError as exc:
                what = f"{method} {path}: no answer ({type(exc).__name__}: {exc})"
                if not idempotent:
                    # "timeout": the server may still be working on it; "dropped": it went away mid-request
                    kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "dropped"
                    raise AmbiguousRequest(f"{self.label}: {what}", reason=kind) from None
                ambiguous = True
                retries = self._retry(retries, what)
                continue
            status = resp.status_code
            with self._lock:
                self.stats.statuses[status] += 1
            body = _json_or_none(resp)
            if status < 400:
                return Reply(status, body, resp.headers, ambiguous)
            body = error_body(body)
            code = str(body.get("error_code") or "") if isinstance(body, dict) else ""
            reason = error_reason(body)
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            where = f"{self.label}: {method} {path} -> HTTP {status}"
            # 429 is QUOTA_EXCEEDED (waiting does not help) unless it says RATE_LIMITED or when to retry
            rate_limited = code == "RATE_LIMITED" or (code != "QUOTA_EXCEEDED" and retry_after is not None)
            if status == 429 and rate_limited:
                waited_429 += self._wait_rate_limited(where, code, reason, retry_after, waited_429)
                continue
            if status >= 500:
                # 503 with Retry-After is maintenance mode: answered before any handler ran.
                if status == 503 and retry_after is not None:
                    retries = self._retry(retries, where, wait=min(retry_after, self.max_retry_after))
                    continue
                if idempotent:
                    ambiguous = True
                    retries = self._retry(retries, f"{where} {reason}".strip())
                    continue
            raise http_error(status, where, code, reason, body)

    def _wait_rate_limited(
        self, where: str, code: str, reason: str, retry_after: float | None, waited: float
    ) -> float:
        """Wait out a 429 RATE_LIMITED (every thread waits: the limiter is blocked); the seconds waited."""
        asked = retry_after if retry_after is not None else 60.0
        wait = min(asked, self.max_retry_after)
        if waited + wait > self.rate_limit_budget:
            raise RateLimitExhausted(
                f"{where}: still rate limited after waiting {waited:.0f}s "
                f"(rate_limit_budget {self.rate_limit_budget:.0f}s); lower requests_per_minute",
                status=429,
                error_code=code,
                reason=reason,
                retry_after=asked,
            )
        with self._lock:
            self.stats.rate_limited += 1
            self.stats.rate_limit_wait += wait
            self.stats.retry_after_waits.append((asked, wait))
        log.warning("%s: rate limited; waiting %.1fs (Retry-After %.0fs)", where, wait, asked)
        self.limiter.block(wait)
        return wait

    def _retry(self, retries: int, what: str, wait: float | None = None) -> int:
        retries += 1
        if retries > self.backoff.max_retries:
            raise ServerUnavailable(f"{what}; gave up after {self.backoff.max_retries} retries")
        delay = self.backoff.delay(retries, self._rng) if wait is None else wait
        self._count("retries")
        log.warning(
            "%s: %s; retry %d/%d in %.1fs", self.label, what, retries, self.backoff.max_retries, delay
        )
        self.sleep(delay)
        return retries

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self.stats, name, getattr(self.stats, name) + 1)

    # -- endpoints ------------------------------------------------------------------------------

    def get(self, path: str) -> Any:
        return self.request("GET", path).body

    def version(self) -> dict:
        return self.get("/v1/version") or {}

    def pattern_count(self) -> int:
        return int(self.get("/v1/metrics")["pattern_count"])

    def billing_status(self) -> dict | None:
        """``/v1/billing/status`` where it exists (None when the server has no billing routes)."""
        try:
            body = self.get("/v1/billing/status")
        except (NotFound, AuthError):
            return None
        except RestError as exc:
            if exc.status in (405, 501):
                return None
            raise
        return body if isinstance(body, dict) else None

    def export(self) -> list[dict]:
        body = self.get("/v1/export") or {}
        return list(body.get("records") or [])

    def recall(self, task: str, limit: int = 10, offset: int = 0) -> dict:
        body = {"task": task, "limit": limit, "offset": offset, "deduplicate": False}
        return self.request("POST", "/v1/recall", json=body).body or {}

    def delete_pattern(self, key: str) -> bool:
        """``DELETE /v1/patterns/{key}``; the key keeps its slash (``/v1/patterns/patterns/oai_...``)."""
        body = self.request("DELETE", f"/v1/patterns/{key}").body or {}
        return bool(body.get("deleted"))


def _json_or_none(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return resp.text[:500] if resp.text else None
