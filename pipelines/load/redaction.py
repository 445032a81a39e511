"""PII and secret redaction of task and code before they leave for a REST destination.

``POST /v1/import`` stores records exactly as sent, and even ``POST /v1/learn`` only redacts the code:
the server never redacts the task. So the pipeline redacts both columns itself, as vectorised Polars
regex replaces over the whole frame (no per-row Python), and counts what it replaced per kind.

Kinds, in the order they are applied, and their placeholders:

``bearer``   ``Bearer <16+ token chars>``               -> ``Bearer [TOKEN]`` (the word is kept)
``api_key``  ``sk-...`` (OpenAI, incl. ``sk-proj-``), ``sk_live_``/``pk_test_`` (Stripe), ``AKIA...``
             (AWS), ``ghp_``/``github_pat_`` (GitHub), ``xoxb-`` (Slack), ``AIza...`` (Google), JWTs
                                                          -> ``[API_KEY]``
``email``    ``local@domain.tld``                        -> ``[EMAIL]``
``ipv4``     dotted quads with octets 0-255              -> ``[IPV4]``
``ipv6``     full and ``::``-compressed forms            -> ``[IPV6]``
``phone``    ``+<country> ...`` with separators, compact E.164 (``+14155552671``), North American
             ``(555) 123-4567`` / ``555-123-4567`` / ``555.123.4567``   -> ``[PHONE]``

Decisions about what is deliberately NOT redacted (each has a unit test):

* Version numbers. Three-part versions (``1.2.3``) never look like an address. A four-part dotted quad
  is an IPv4 address unless it is written as a version: prefixed by ``v`` (``v1.2.3.4``), following
  ``==``/``>=``/``<=``/``~=``/``!=``/``^``/``~`` or the word ``version`` (``version 1.0.0.4``,
  ``AssemblyVersion("1.0.0.0")``), or part of a longer dotted number (``1.2.3.4.5``). A bare quad such as
  ``10.1.2.3`` (or ``root@10.1.2.3``) is redacted: a leaked address costs more than a lost version.
* Octets above 255 (``256.1.1.1``) are not addresses. Loopback ``::1`` and lone ``::`` are left alone.
* Plain digit runs (unix timestamps like ``1717200000``, ids, amounts), dates (``2024-01-15``), times
  (``12:30:45``), MAC addresses, Python slices (``a[1::2]``) and C++/Rust paths (``std::vector``) are
  not phones or IPv6. A phone needs a leading ``+`` or the North American 3-3-4 grouping.
* ``bearer`` followed by an ordinary word (``bearer authentication``) is kept: tokens are 16+ chars.
* Short ``sk-`` words (``sk-learn``) are kept: keys have 16+ chars after the prefix.

Keyword assignments (``password = "..."``) are not rewritten here; the server's own redaction catches
them in ``/v1/learn`` code, and they are rare in chat answers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import polars as pl

# A private-use character that stands in for the dots of version numbers while addresses are
# redacted, so that they are not mistaken for IPv4 addresses; it is turned back into "." at the end.
_DOT = "\ue000"

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_H = r"[0-9A-Fa-f]{1,4}"


@dataclass(frozen=True)
class Rule:
    kind: str  # counted under this name; "" for the internal protect/restore passes
    pattern: str
    replacement: str


_IPV6 = "|".join(
    [
        rf"\b(?:{_H}:){{7}}{_H}\b",  # full form
        # compressed with "::" and at least 3 groups (so slices like a[1::2] stay)
        rf"\b{_H}(?::{_H}){{1,6}}::{_H}(?::{_H}){{0,5}}\b",
        rf"\b{_H}::{_H}(?::{_H}){{1,5}}\b",
        rf"\b{_H}(?::{_H}){{2,6}}::",
        # two groups are enough when the first one is a full 4-digit group: fe80::1, 2001:db8::
        rf"\b[0-9A-Fa-f]{{4}}::{_H}\b",
        rf"\b[0-9A-Fa-f]{{4}}:{_H}::",
        rf"::{_H}(?::{_H}){{1,6}}\b",  # leading "::" with at least two groups (::ffff:c000:280)
    ]
)

_PHONE = "|".join(
    [
        r"\+[1-9][0-9]{0,3}(?:[ .-]?\([0-9]{1,4}\))?(?:[ .-][0-9]{2,4}){2,5}\b",  # +44 20 7946 0958
        r"\+[1-9][0-9]{9,13}\b",  # +14155552671
        r"\([0-9]{3}\)[ .-]?[0-9]{3}[ .-][0-9]{4}\b",  # (555) 123-4567
        r"\b[0-9]{3}[.-][0-9]{3}[.-][0-9]{4}\b",  # 555-123-4567, 555.123.4567
    ]
)

_API_KEY = "|".join(
    [
        r"\bsk-[A-Za-z0-9_-]{16,}",
        r"\b[spr]k_(?:live|test)_[A-Za-z0-9]{16,}",
        r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
        r"\bgh[pousr]_[A-Za-z0-9]{30,}",
        r"\bgithub_pat_[A-Za-z0-9_]{22,}",
        r"\bxox[abprs]-[A-Za-z0-9-]{10,}",
        r"\bAIza[0-9A-Za-z_-]{35}",
        r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    ]
)

_Q = r"([0-9]+)\.([0-9]+)\.([0-9]+)\.([0-9]+)"

RULES: tuple[Rule, ...] = (
    Rule("bearer", r"(?i)\b(bearer)(\s+)[A-Za-z0-9._~+/-]{16,}=*", "${1}${2}[TOKEN]"),
    Rule("api_key", _API_KEY, "[API_KEY]"),
    Rule("email", r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}", "[EMAIL]"),
    # versions written as versions keep their dots (protected, then restored)
    Rule(
        "",
        r"\b([0-9]+)\.([0-9]+)\.([0-9]+)\.([0-9]+)\.([0-9]+)",
        f"${{1}}{_DOT}${{2}}{_DOT}${{3}}{_DOT}${{4}}{_DOT}${{5}}",
    ),
    Rule(
        "",
        rf"([0-9]){_DOT}([0-9]+)\.([0-9]+)\.([0-9]+)\.([0-9]+)",
        f"${{1}}{_DOT}${{2}}{_DOT}${{3}}{_DOT}${{4}}{_DOT}${{5}}",
    ),
    Rule(
        "",
        rf"(?i)((?:==|>=|<=|~=|!=|\^|~|version[\s:=(\"']*)){_Q}",
        f"${{1}}${{2}}{_DOT}${{3}}{_DOT}${{4}}{_DOT}${{5}}",
    ),
    Rule("ipv4", rf"\b{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}\b", "[IPV4]"),
    Rule("ipv6", _IPV6, "[IPV6]"),
    Rule("phone", _PHONE, "[PHONE]"),
    Rule("", _DOT, "."),
)
KINDS: tuple[str, ...] = tuple(dict.fromkeys(r.kind for r in RULES if r.kind))
DEFAULT_COLUMNS = ("task", "code")


def redact_frame(
    frame: pl.DataFrame | pl.LazyFrame, columns: Iterable[str] = DEFAULT_COLUMNS
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Redact ``columns`` of the frame; returns the new frame and the number of replacements per kind.

    Every rule runs as one ``with_columns`` over the whole frame: it counts its matches and replaces
    them in the same step, so each rule sees the text left by the rules before it.
    """
    columns = list(columns)
    lazy = frame.lazy()
    counters: list[str] = []
    for i, rule in enumerate(RULES):
        exprs: list[pl.Expr] = []
        for column in columns:
            if rule.kind:
                name = f"__redact_{i}_{column}"
                exprs.append(pl.col(column).str.count_matches(rule.pattern).fill_null(0).alias(name))
                counters.append(name)
            exprs.append(pl.col(column).str.replace_all(rule.pattern, rule.replacement))
        lazy = lazy.with_columns(exprs)
    out = lazy.collect()
    sums = out.select(pl.col(counters).sum()).row(0, named=True) if counters and out.height else {}
    counts = dict.fromkeys(KINDS, 0)
    for name, value in sums.items():
        rule = RULES[int(name.split("_")[3])]
        counts[rule.kind] += int(value or 0)
    return out.drop(counters), counts


def redact_text(text: str) -> str:
    """One string, through exactly the same rules (for recall checks and tests)."""
    out, _ = redact_frame(pl.DataFrame({"text": [text]}), ["text"])
    return out["text"][0]


def redact_series(values: pl.Series) -> pl.Series:
    out, _ = redact_frame(pl.DataFrame({"text": values.cast(pl.String)}), ["text"])
    return out["text"].alias(values.name)
