"""Which Engramia server (and which API key) each scope is loaded into.

Over REST the scope comes only from the API key: one key writes exactly one (tenant, project). So every
pipeline scope needs its own base URL and the NAME of the environment variable that holds its key. The
key itself never appears in configuration, files, logs or error messages: it is read from the
environment only when request headers are built (see :mod:`pipelines.load.rest.client`).

Mapping file (YAML; JSON is valid YAML, so a ``.json`` file with the same shape works too)::

    # servers.yaml
    defaults:                       # optional: fields every entry inherits
      url: https://engramia.example.com
    scopes:
      - scope: acme__asst_coder     # the pipeline's scope key (as in staged/*/scope=<key>) ...
        api_key_env: ENGRAMIA_KEY_CODER
      - tenant: acme                # ... or the (tenant, project) pair
        project: asst_support
        url: http://127.0.0.1:8100  # overrides the default
        api_key_env: ENGRAMIA_KEY_SUPPORT

A scope not in the file fails with a message naming it; there is no catch-all entry on purpose (a
catch-all key would pour several scopes into one project).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from pipelines.scopes import scope_key

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MAX_ENV_NAME = 64
# The shapes Engramia generates: ``engramia_sk_`` + token_urlsafe(32) (api/keys.py, the CLI) and the cloud
# sign-up's ``engramia-`` + 32 hex (api/cloud_auth.py). Half of the first shape is letters, digits and
# underscores only, so the character set alone cannot tell it from a name.
_KEY_PREFIXES = ("engramia_sk_", "engramia-")
_RUN = re.compile(r"[A-Za-z0-9]{16,}")
_ENTRY_FIELDS = {"scope", "tenant", "project", "url", "api_key_env"}


class ServerConfigError(ValueError):
    """A mapping file or option that cannot be used (messages never include secret values)."""


def normalize_url(url: str) -> str:
    """``http(s)://host[:port][/prefix]`` without a trailing ``/`` or ``/v1``; credentials, query and
    fragment are refused (a key in a URL would end up in logs)."""
    raw = (url or "").strip()
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ServerConfigError("an Engramia URL must look like http(s)://host[:port][/path]")
    if parts.username or parts.password:
        raise ServerConfigError(
            "an Engramia URL must not carry credentials; put the API key in an environment variable "
            "and pass its name (--api-key-env / api_key_env)"
        )
    if parts.query or parts.fragment:
        raise ServerConfigError("an Engramia URL must not have a query string or fragment")
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    return f"{parts.scheme}://{netloc}{path}"


def check_env_name(name: str) -> str:
    """``name`` if it can be the NAME of the environment variable holding a key; else ServerConfigError.

    A name is letters, digits and underscores, not starting with a digit (lower case too, as POSIX
    allows). Refused as looking like an API key rather than a name:

    - anything starting with ``engramia_sk_`` or ``engramia-`` (any case for the latter): every key
      Engramia generates (the prefix check is case-sensitive for ``engramia_sk_`` so that a variable
      such as ``ENGRAMIA_SK_PROD`` stays usable; a generated key is always lower-case there);
    - anything longer than 64 characters;
    - random-looking text, for keys an operator made up (``ENGRAMIA_API_KEYS``): a run of 16 or more
      letters and digits mixing lowercase letters with digits (hex, base64), or a value of 20 or more
      characters mixing lowercase, uppercase and digits. Names built of words, such as
      ``ENGRAMIA_API_KEY``, ``engramia_key`` or ``ENGRAMIA_KEY_CODER_2``, never match.

    No message repeats the value: a common mistake is passing the key itself here.
    """
    if not isinstance(name, str) or not name:
        raise ServerConfigError("api_key_env must be the NAME of an environment variable")
    if _looks_like_key(name):
        raise ServerConfigError(
            "api_key_env holds what looks like an API key, not the name of an environment variable: put "
            "the key in an environment variable and name that variable here"
        )
    if not _ENV_NAME.match(name):
        raise ServerConfigError(
            "api_key_env must be the NAME of an environment variable (letters, digits and underscores, not "
            "starting with a digit), not the key itself"
        )
    return name


def _looks_like_key(value: str) -> bool:
    if value.startswith(_KEY_PREFIXES[0]) or value.lower().startswith(_KEY_PREFIXES[1]):
        return True
    if len(value) > _MAX_ENV_NAME:
        return True
    if any(_has(run, "a-z") and _has(run, "0-9") for run in _RUN.findall(value)):
        return True
    return len(value) >= 20 and all(_has(value, chars) for chars in ("a-z", "A-Z", "0-9"))


def _has(text: str, chars: str) -> bool:
    return re.search(f"[{chars}]", text) is not None


@dataclass(frozen=True)
class ServerConfig:
    """A server and the environment variable holding its key. Holds no secret, so its repr is safe."""

    url: str
    api_key_env: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", normalize_url(self.url))
        check_env_name(self.api_key_env)

    def describe(self) -> str:
        return f"{self.url} (key from ${self.api_key_env})"


@dataclass
class ServerMap:
    by_scope: dict[str, ServerConfig] = field(default_factory=dict)
    by_pair: dict[tuple[str, str], ServerConfig] = field(default_factory=dict)
    single: ServerConfig | None = None
    source: str = ""

    @classmethod
    def one(cls, url: str, api_key_env: str) -> ServerMap:
        """One server and key for every scope of the run (``--engramia-url``/``--api-key-env``)."""
        return cls(single=ServerConfig(url, api_key_env), source="--engramia-url/--api-key-env")

    @classmethod
    def load(cls, path: str | Path) -> ServerMap:
        path = Path(path)
        if not path.is_file():
            raise ServerConfigError(f"servers file not found: {path}")
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ServerConfigError(f"{path}: not valid YAML/JSON ({type(exc).__name__})") from None
        if isinstance(doc, list):
            doc = {"scopes": doc}
        if not isinstance(doc, dict) or not isinstance(doc.get("scopes"), list):
            raise ServerConfigError(f"{path}: expected a mapping with a 'scopes' list")
        defaults = doc.get("defaults") or {}
        if not isinstance(defaults, dict):
            raise ServerConfigError(f"{path}: 'defaults' must be a mapping")
        out = cls(source=str(path))
        for i, entry in enumerate(doc["scopes"], start=1):
            where = f"{path}: scopes[{i}]"
            if not isinstance(entry, dict):
                raise ServerConfigError(f"{where}: expected a mapping")
            merged = {**defaults, **entry}
            secretish = sorted(k for k in merged if k not in _ENTRY_FIELDS and "key" in str(k).lower())
            if secretish:
                raise ServerConfigError(
                    f"{where}: field(s) {secretish} not allowed: keys never go in this file, only the name "
                    "of the environment variable that holds them (api_key_env)"
                )
            unknown = sorted(set(merged) - _ENTRY_FIELDS)
            if unknown:
                raise ServerConfigError(f"{where}: unknown field(s) {unknown}")
            if not merged.get("url") or not merged.get("api_key_env"):
                raise ServerConfigError(f"{where}: needs 'url' and 'api_key_env' (here or in 'defaults')")
            try:
                server = ServerConfig(str(merged["url"]), str(merged["api_key_env"]))
            except ServerConfigError as exc:
                raise ServerConfigError(f"{where}: {exc}") from None
            if "scope" in entry:
                out.by_scope[str(entry["scope"])] = server
            elif "tenant" in merged and "project" in merged:
                out.by_pair[(str(merged["tenant"]), str(merged["project"]))] = server
            else:
                raise ServerConfigError(f"{where}: name the scope ('scope') or both 'tenant' and 'project'")
        return out

    def for_scope(self, scope: str, tenant_id: str, project_id: str) -> ServerConfig:
        if self.single is not None:
            return self.single
        server = (
            self.by_scope.get(scope)
            or self.by_pair.get((tenant_id, project_id))
            or self.by_scope.get(scope_key(tenant_id, project_id))
        )
        if server is None:
            raise ServerConfigError(
                f"no Engramia server configured for scope {scope} ({tenant_id}/{project_id}) in {self.source}"
            )
        return server
