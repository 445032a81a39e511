"""What ``GET /v1/version`` says, read for the operator and never for deciding behaviour.

Servers report ``0.6.6`` (PyPI), ``0.7.1.dev40+g9ea12fb`` (built from a checkout), ``0.7.0rc1`` (a
pre-release) or ``0.0.0+dev`` (no package metadata at all), and a server's behaviour need not follow its
number. So the load decides from what the server does: a learn answered ``stored: false`` or one that
did not grow ``pattern_count`` (the near-duplicate rule), an export refused with 403 (the key's role), a
429 (its limits), ``/v1/billing/status`` and a 429 ``QUOTA_EXCEEDED`` body (its quota).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# PEP 440 as servers print it: release, pre-release, dev and local parts.
_VERSION = re.compile(
    r"^v?(?P<release>\d+(?:\.\d+)*)(?:[.-]?(?P<pre>a|b|rc|alpha|beta)\.?(?P<pre_n>\d*))?"
    r"(?:\.?post(?P<post>\d*))?(?:\.?dev(?P<dev>\d*))?(?:\+(?P<local>[A-Za-z0-9.]+))?$",
    re.IGNORECASE,
)


_PRE = {"a": "a", "alpha": "a", "b": "b", "beta": "b", "rc": "rc"}


@dataclass(frozen=True)
class ServerVersion:
    text: str
    release: tuple[int, ...] | None  # None: not a version, or no package metadata (0.0.0)
    pre: str | None = None  # e.g. "rc1"
    dev: int | None = None
    local: str | None = None

    @property
    def known(self) -> bool:
        return self.release is not None

    def describe(self) -> str:
        if self.release is None:
            return f"{self.text or '?'} (version unknown: behaviour is probed)"
        base = ".".join(map(str, self.release))
        if self.pre or self.dev is not None:
            return f"{self.text} (a build before {base})"
        return self.text


def parse_server_version(text: str | None) -> ServerVersion:
    raw = (text or "").strip()
    m = _VERSION.match(raw)
    if m is None:
        return ServerVersion(raw, None)
    release = tuple(int(p) for p in m["release"].split("."))
    if not any(release):  # 0.0.0: the server runs from a tree without package metadata
        return ServerVersion(raw, None, local=m["local"])
    pre = f"{_PRE[m['pre'].lower()]}{m['pre_n'] or 0}" if m["pre"] else None
    dev = int(m["dev"] or 0) if m["dev"] is not None else None
    return ServerVersion(raw, release, pre, dev, m["local"])
