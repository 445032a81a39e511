"""What can go wrong talking to an Engramia server, as types a load handles differently, and how each
is explained to the person running the load.

Invariant: no message built here ever contains an API key (only the NAME of its environment variable),
and a server's error body contributes its reason but never the offending input values.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

from pipelines.load.rest.servers import ServerConfig


class RestError(Exception):
    """An Engramia REST call that did not succeed. Messages never contain the API key."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_code: str | None = None,
        reason: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.reason = reason
        self.retry_after = retry_after


class MissingApiKey(RestError):
    """The environment variable that should hold the key is not set."""


class AuthError(RestError):
    """401 (key unknown) or 403 (role lacks the permission)."""


class QuotaExceeded(RestError):
    """429 QUOTA_EXCEEDED: the project's pattern quota is full; waiting does not help. ``current`` and
    ``limit``: the server's own figures, where its answer gives them (0.7.x: the effective project cap,
    the plan's limit times its ENGRAMIA_PROJECT_QUOTA_PCT)."""

    current: int | None = None
    limit: int | None = None


class RateLimitExhausted(RestError):
    """429 RATE_LIMITED for longer than the configured budget."""


class PayloadTooLarge(RestError):
    """413: the body is over the server's limit (ENGRAMIA_MAX_BODY_SIZE)."""


class Rejected(RestError):
    """422: the server refused the input; ``reason`` says why."""


class NotFound(RestError):
    """404."""


class ServerUnavailable(RestError):
    """Connection errors, timeouts or 5xx outlasted the retries."""


class AmbiguousRequest(RestError):
    """A non-idempotent request may or may not have been applied (no answer, or a 5xx)."""


class JobFailed(RestError):
    """An async job ended failed, cancelled or expired, or vanished (the server restarted)."""


class CapacityError(RestError):
    """The load cannot fit the scope's quota or cap; raised before anything is sent."""


class Stopped(RestError):
    """The load was interrupted while this request waited to be sent (again): a request that may have
    been applied keeps its ``sending`` row for the next run to resolve."""


# Errors after which the pattern in flight was certainly not stored.
DEFINITE = (AuthError, QuotaExceeded, RateLimitExhausted, MissingApiKey)


def http_error(status: int, where: str, code: str, reason: str, body: Any = None) -> RestError:
    """The error for an answer that is not retried (``where`` names the client, method, path and status)."""
    kwargs: dict[str, Any] = {"status": status, "error_code": code, "reason": reason}
    if status == 429:
        exc = QuotaExceeded(f"{where} {code} {reason}".strip(), **kwargs)
        if isinstance(body, dict):
            # Engramia's error handler moves them under error_context; a bare detail dict has them on top.
            figures = body.get("error_context") if isinstance(body.get("error_context"), dict) else body
            exc.current, exc.limit = _int_or_none(figures.get("current")), _int_or_none(figures.get("limit"))
        return exc
    if status in (401, 403):
        return AuthError(f"{where} {code} {reason}".strip(), **kwargs)
    if status == 404:
        return NotFound(f"{where} {reason}".strip(), **kwargs)
    if status == 413:
        return PayloadTooLarge(f"{where} {reason}".strip(), **kwargs)
    if status == 422:
        return Rejected(f"{where} {reason}".strip(), **kwargs)
    if status >= 500:
        # only for requests that are not idempotent: the server may have applied it before failing
        return AmbiguousRequest(f"{where} {reason}".strip(), **kwargs)
    return RestError(f"{where} {code} {reason}".strip(), **kwargs)


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def error_body(body: Any) -> Any:
    """The error object of an answer: FastAPI nests a handler's dict under ``detail``."""
    if isinstance(body, dict) and isinstance(body.get("detail"), dict):
        return body["detail"]
    return body


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_reason(body: Any, limit: int = 400) -> str:
    """The server's reason from an error body: ``detail`` (a string or FastAPI's list of issues) and
    ``issues``; offending input values are left out (they can be long or personal)."""
    if not isinstance(body, dict):
        return str(body)[:limit] if body else ""
    parts: list[str] = []
    for name in ("detail", "issues", "errors"):
        value = body.get(name)
        if isinstance(value, str) and value:
            parts.append(value)
        elif isinstance(value, list):
            for issue in value[:10]:
                if isinstance(issue, dict):
                    loc = ".".join(str(x) for x in issue.get("loc", []) if x != "body")
                    msg = issue.get("msg") or issue.get("message") or issue.get("type") or ""
                    parts.append(f"{loc}: {msg}" if loc else str(msg))
                else:
                    parts.append(str(issue))
    text = "; ".join(p for p in parts if p) or str(body.get("error_code") or "")
    return text[:limit]


def explain(
    exc: BaseException,
    scope: str,
    tenant_id: str,
    project_id: str,
    server: ServerConfig,
    mode: str,
    role: str,
) -> str:
    """What went wrong in a scope's load and what to do about it, in one message for the operator."""
    where = f"scope {scope} ({tenant_id}/{project_id}) at {server.url}"
    env = f"${server.api_key_env}"
    if isinstance(exc, AuthError):
        why = exc.reason or exc.error_code
        if exc.status == 401:
            return (
                f"{where}: the server did not accept the API key in {env} (HTTP 401: {why}). Put a valid "
                f"key for this scope's project in {env}; {mode} needs a key with the '{role}' role. "
                "Nothing was stored."
            )
        return (
            f"{where}: the API key in {env} lacks the permission (HTTP 403: {why}). {mode} needs a key "
            f"with the '{role}' role (or higher). Nothing was stored by this request."
        )
    if isinstance(exc, QuotaExceeded):
        told = (
            f"the project holds {exc.current:,} of the {exc.limit:,} patterns the server allows it"
            if exc.current is not None and exc.limit is not None
            else "the server's pattern quota is full"
        )
        return (
            f"{where}: {told} (429 QUOTA_EXCEEDED: {exc.reason}). Sending stopped. This is the server's "
            "own limit: --quota-pct (quota_pct) only changes the pipeline's check before sending and "
            "cannot raise it. Delete patterns in this project, raise the plan's pattern limit or, on a "
            "self-hosted server, its ENGRAMIA_PROJECT_QUOTA_PCT, or split the scope; then re-run: stored "
            "patterns are in the ledger and are not sent again."
        )
    if isinstance(exc, CapacityError | MissingApiKey):
        return f"{where}: {exc}"
    if isinstance(exc, RateLimitExhausted):
        return f"{where}: {exc}. Re-run to resume."
    if isinstance(exc, ServerUnavailable | AmbiguousRequest):
        return (
            f"{where}: {exc}. Re-run to resume: stored patterns are in the ledger, and patterns whose "
            "answer was lost are looked up on the server before anything is sent again."
        )
    return f"{where}: {type(exc).__name__}: {exc}"
