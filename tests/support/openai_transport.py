"""An ``openai`` client whose requests go to a handler in the test, at the HTTP transport level."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import openai


def openai_client(handler: Callable[[httpx.Request], httpx.Response]) -> openai.OpenAI:
    return openai.OpenAI(
        api_key="sk-test",
        base_url="https://api.example.test/v1",
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )
