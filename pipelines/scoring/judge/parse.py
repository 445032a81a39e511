"""The judge's reply -> ``(score, reason)``, tolerant of what models wrap JSON in.

Invariant: a score is returned only when the reply names a number within 0..10; anything else raises
:class:`ReplyError`, which the caller records as a judge error (the pattern falls back).
"""

from __future__ import annotations

import json
import re

_OBJECT = re.compile(r"\{.*?\}", re.DOTALL)
_SCORE = re.compile(r"[\"']?score[\"']?\s*[:=]\s*[\"']?(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_REASON = re.compile(r"[\"']?reason[\"']?\s*[:=]\s*[\"']([^\"']*)", re.IGNORECASE)
REASON_MAX_CHARS = 200


class ReplyError(ValueError):
    """The reply holds no usable score."""


def one_line(text: str, limit: int = REASON_MAX_CHARS) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def parse_reply(content: str | None) -> tuple[float, str]:
    if content is None or not content.strip():
        raise ReplyError("empty reply")
    text = content.strip()
    candidates = [text, *(m.group(0) for m in _OBJECT.finditer(text))]
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict) and "score" in value:
            return _checked(value.get("score"), value.get("reason", ""))
    match = _SCORE.search(text)
    if match is None:
        raise ReplyError(f"no score in reply: {one_line(text, 80)!r}")
    reason = _REASON.search(text)
    return _checked(match.group(1), reason.group(1) if reason else "")


def _checked(score: object, reason: object) -> tuple[float, str]:
    if isinstance(score, bool):
        raise ReplyError(f"score is not a number: {score!r}")
    try:
        value = float(score)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ReplyError(f"score is not a number: {score!r}") from None
    if not 0.0 <= value <= 10.0:
        raise ReplyError(f"score {value:g} outside 0..10")
    return value, one_line(reason if isinstance(reason, str) else json.dumps(reason))
