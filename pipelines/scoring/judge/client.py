"""One judge request per pattern through the official ``openai`` client, many at once, with retries.

Invariants: every pattern sent comes back with an :class:`Answer`, a score or an error (never an
exception, never a hang: each request has a timeout and a bounded number of retries); 429 answers wait
for their ``Retry-After`` (capped), 5xx answers, timeouts and connection errors back off exponentially
with jitter. A refused key (401, 403), a model the server does not have (404) or a server that cannot
be reached stops the sending (:attr:`Judge.halted` says why): the patterns not sent are not answered.
Structured outputs are asked for first; a server that refuses ``response_format`` (400) is asked
without it from then on, and the reply is parsed tolerantly. The API key is read from the environment
when the client is made and never logged.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import openai

from pipelines.scoring.judge.options import JudgeOptions
from pipelines.scoring.judge.parse import ReplyError, one_line, parse_reply
from pipelines.scoring.judge.prompt import body


@dataclass
class Answer:
    pattern_id: str
    score: float | None
    reason: str
    error: str | None
    tokens_in: int
    tokens_out: int
    attempts: int = 1
    rate_limited: int = 0


@dataclass(frozen=True)
class Request:
    pattern_id: str
    task: str
    code: str
    est_tokens_in: int


def make_client(options: JudgeOptions) -> openai.OpenAI:
    import openai  # only a run with a judge pays for importing the client (~0.5 s)

    # Retries are ours (Retry-After capped, errors recorded per pattern), so the client's are off.
    return openai.OpenAI(
        api_key=options.api_key(), base_url=options.base_url, max_retries=0, timeout=options.timeout
    )


def retry_after(exc: openai.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after") if exc.response is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _refuses_format(exc: openai.APIStatusError) -> bool:
    text = str(exc).lower()
    return exc.status_code in (400, 422) and ("response_format" in text or "json_schema" in text)


class Judge:
    """Asks the judge about patterns; thread-safe (one client, many threads)."""

    def __init__(
        self,
        options: JudgeOptions,
        client: openai.OpenAI | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.options = options
        self.client = client if client is not None else make_client(options)
        self.sleep = sleep
        self.structured = True
        self._lock = threading.Lock()
        # Why no more requests are sent (a refused key, no such model, a server that cannot be reached):
        # asking each of thousands of patterns the same question would only repeat the answer.
        self.halted: str | None = None
        self._answered = 0
        self._unreachable_in_a_row = 0

    def _backoff(self, attempt: int) -> float:
        base = min(self.options.max_backoff_seconds, self.options.backoff_seconds * 2**attempt)
        return base * (0.5 + random.random() / 2)

    def ask(self, request: Request) -> Answer:
        import openai  # already imported by the client this judge holds

        attempts = rate_limited = 0
        last = "no attempt made"
        while attempts <= self.options.max_retries:
            if self.halted is not None:
                last = f"not asked: {self.halted}"
                break
            attempts += 1
            structured = self.structured
            try:
                response = self.client.chat.completions.create(
                    **body(self.options.model, request.task, request.code, structured)
                )
            except openai.RateLimitError as exc:
                rate_limited += 1
                wait_s = retry_after(exc)
                last = "429 rate limited"
                if wait_s is not None and wait_s > self.options.max_retry_after:
                    last = (
                        f"429 with Retry-After {wait_s:g} s, above the {self.options.max_retry_after:g} s cap"
                    )
                    break
                self.sleep(wait_s if wait_s is not None else self._backoff(attempts - 1))
                continue
            except openai.APIStatusError as exc:
                if structured and _refuses_format(exc):
                    with self._lock:
                        self.structured = False
                    attempts -= 1  # not the pattern's fault: ask again without structured outputs
                    continue
                last = f"HTTP {exc.status_code}"
                self._halt_on_status(exc.status_code)
                if exc.status_code >= 500 or exc.status_code == 408:
                    self.sleep(self._backoff(attempts - 1))
                    continue
                break
            except openai.APITimeoutError:
                last = "timeout"
                self.sleep(self._backoff(attempts - 1))
                continue
            except openai.APIConnectionError:
                last = "connection error"
                self.sleep(self._backoff(attempts - 1))
                continue
            except Exception as exc:  # a reply the client cannot even decode: that pattern's error only
                last = f"{type(exc).__name__}: {one_line(str(exc), 80)}"
                break
            usage = getattr(response, "usage", None)
            tokens_in = int(getattr(usage, "prompt_tokens", 0) or 0) or request.est_tokens_in
            tokens_out = int(getattr(usage, "completion_tokens", 0) or 0)
            try:
                content = response.choices[0].message.content if response.choices else None
                score, reason = parse_reply(content)
            except ReplyError as exc:
                return Answer(
                    request.pattern_id,
                    None,
                    "",
                    f"malformed reply: {exc}",
                    tokens_in,
                    tokens_out,
                    attempts,
                    rate_limited,
                )
            with self._lock:
                self._answered += 1
                self._unreachable_in_a_row = 0
            return Answer(
                request.pattern_id, score, reason, None, tokens_in, tokens_out, attempts, rate_limited
            )
        if last in ("connection error", "timeout"):
            self._halt_if_unreachable(last, attempts)
        return Answer(
            request.pattern_id,
            None,
            "",
            f"no answer after {attempts} attempts: {last}",
            0,
            0,
            attempts,
            rate_limited,
        )

    def _halt_on_status(self, status: int) -> None:
        url, options = self.options.base_url, self.options
        if status in (401, 403):
            self._halt(
                f"HTTP {status} from {url}: the judge refuses the key in {options.api_key_env}; "
                "put a valid key there"
            )
        elif status == 404:
            self._halt(
                f"HTTP 404 from {url}: no model {options.model!r} there; check --llm-judge and --llm-base-url"
            )

    def _halt_if_unreachable(self, last: str, attempts: int) -> None:
        with self._lock:
            self._unreachable_in_a_row += 1
            # A refused connection before any answer is the server's, not the pattern's; a timeout may be
            # one long pattern's, so it takes as many in a row as there are requests in flight (3 at least).
            first = last == "connection error" and not self._answered
            if not first and self._unreachable_in_a_row < max(3, self.options.concurrency):
                return
        self._halt(f"{self.options.base_url} unreachable: {last} after {attempts} attempts")

    def _halt(self, reason: str) -> None:
        with self._lock:
            self.halted = self.halted or reason

    def ask_all(
        self, requests: Iterable[Request], keep_going: Callable[[Request], bool] | None = None
    ) -> Iterator[Answer]:
        """Answers as they come, ``concurrency`` requests in flight. ``keep_going`` is asked before each
        request is sent (with the answers so far already yielded): False stops sending, and the requests
        not sent are simply not answered."""
        pending: set[Future[Answer]] = set()
        source = iter(requests)
        stopped = False
        with ThreadPoolExecutor(max_workers=self.options.concurrency) as pool:
            while True:
                while not stopped and len(pending) < self.options.concurrency:
                    if self.halted is not None:
                        stopped = True
                        break
                    request = next(source, None)
                    if request is None or (keep_going is not None and not keep_going(request)):
                        stopped = True
                        break
                    pending.add(pool.submit(self.ask, request))
                if not pending:
                    return
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
