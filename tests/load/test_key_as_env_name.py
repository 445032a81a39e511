"""An API key passed where the NAME of its environment variable belongs is refused before any work, and
the refusal never repeats it (it would otherwise reach error messages, ``describe``, ``explain`` and the
load results saved to Parquet).

The keys are made by Engramia's own generators, so a change of their shape shows up here."""

from __future__ import annotations

import re
import secrets

import pytest
from engramia.api.cloud_auth import _generate_api_key
from engramia.api.keys import _generate_key

from pipelines.load.rest.client import EngramiaClient
from pipelines.load.rest.servers import ServerConfig, ServerConfigError, ServerMap, check_env_name
from tests.support.cli import Console, run

# What check_env_name accepted before: about half of the ``engramia_sk_`` keys matched it.
OLD_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def sk_key(with_dash: bool) -> str:
    """An ``engramia_sk_`` key from Engramia's generator, with or without a ``-`` in its random part."""
    while True:
        key = _generate_key()[0]
        if ("-" in key) == with_dash:
            return key


def _urlsafe_without_dash() -> str:
    return next(k for k in iter(lambda: secrets.token_urlsafe(32), None) if "-" not in k)


# Engramia's shapes, then keys an operator could have made for ENGRAMIA_API_KEYS (no Engramia prefix).
KEYS = {
    "engramia_sk-no-dash": lambda: sk_key(with_dash=False),
    "engramia_sk-with-dash": lambda: sk_key(with_dash=True),
    "engramia-hex": lambda: _generate_api_key()[0],
    "hex32": lambda: secrets.token_hex(16),
    "hex64": lambda: secrets.token_hex(32),
    "urlsafe-no-dash": _urlsafe_without_dash,
    "mixed-case-digits": lambda: "".join(secrets.choice("Zk3") for _ in range(24)) + "Zk3",
    "word-prefix-hex": lambda: "ebk_unit_" + secrets.token_hex(16),
}


def refusal(call) -> str:
    with pytest.raises(ServerConfigError) as info:
        call()
    return str(info.value)


def assert_not_echoed(message: str, key: str) -> None:
    # Not the key, and not the part of it Engramia shows as the key's display prefix either.
    secret_part = key.removeprefix("engramia_sk_").removeprefix("engramia-")
    assert key not in message and secret_part[:8] not in message, "the refusal repeats the key"


def test_a_generated_key_that_the_old_pattern_accepted_is_refused():
    key = sk_key(with_dash=False)
    assert OLD_PATTERN.match(key)  # the case the old check let through
    message = refusal(lambda: check_env_name(key))
    assert "looks like an API key" in message and "name that variable here" in message
    assert_not_echoed(message, key)


@pytest.mark.parametrize("shape", sorted(KEYS))
def test_every_way_in_refuses_a_key_without_repeating_it(shape, tmp_path):
    key = KEYS[shape]()
    for call in (
        lambda: check_env_name(key),
        lambda: ServerConfig("http://127.0.0.1:9", key),
        lambda: ServerMap.one("http://127.0.0.1:9", key),
        lambda: EngramiaClient("http://127.0.0.1:9", key),
    ):
        assert_not_echoed(refusal(call), key)
    path = tmp_path / "servers.yaml"
    path.write_text(f"scopes:\n  - scope: s\n    url: http://h\n    api_key_env: {key}\n")
    message = refusal(lambda: ServerMap.load(path))
    assert "scopes[1]" in message
    assert_not_echoed(message, key)


@pytest.mark.parametrize(
    "name",
    [
        "ENGRAMIA_API_KEY",
        "engramia_key",
        "ENGRAMIA_KEY_CODER",
        "ENGRAMIA_KEY_CODER_2",
        "ENGRAMIA_SK_PROD",
        "ENGRAMIA_TEST_KEY_123456_0",
        "SCRIPTED07_KEY",
        "engramia_key_for_the_support_assistant_2024",
        "MyEngramiaKey",
        "K",
        "_",
        "A" * 64,
    ],
)
def test_ordinary_names_are_accepted(name):
    assert check_env_name(name) == name
    assert ServerConfig("http://h", name).describe() == f"http://h (key from ${name})"


def test_names_that_are_not_names_are_refused():
    for value in ("", "MY-KEY", "2KEY", "A" * 65):
        refusal(lambda value=value: check_env_name(value))


def test_the_command_refuses_a_key_as_api_key_env_before_any_work(capsys, tmp_path):
    console = Console(capsys)
    key = sk_key(with_dash=False)
    data = tmp_path / "data"
    rest = ("--scope-by", "single", "--destination", "rest-import", "--engramia-url", "http://127.0.0.1:9")
    run(console, data, *rest, "--api-key-env", key, code=2)
    assert "looks like an API key" in "".join(console.printed)
    assert not [text for text in console.printed if key in text or key[12:20] in text]
    assert not data.exists() or not any(data.rglob("*.parquet"))
