"""A load that stops before its plan (a server that does not answer, a key it refuses) still accounts
for every kept pattern: those it did not send count as failed, and the next run sends them."""

from __future__ import annotations

import pytest

from pipelines.load.records import kept_patterns
from pipelines.load.rest.options import RestMode
from pipelines.load.rest.scope_load import load_rest
from pipelines.load.rest.servers import ServerConfig
from tests.support.engramia_server import free_port
from tests.support.rest_load import SCOPE, opts


@pytest.mark.parametrize("mode", [RestMode.LEARN, RestMode.IMPORT])
def test_a_server_that_does_not_answer_fails_every_kept_pattern(staged, monkeypatch, mode) -> None:
    layout = staged("single")
    monkeypatch.setenv("ENGRAMIA_NOWHERE_KEY", "not-a-real-key")
    server = ServerConfig(f"http://127.0.0.1:{free_port()}", "ENGRAMIA_NOWHERE_KEY")
    result = load_rest(layout, SCOPE, "default", "default", server, opts(mode, max_retries=0, timeout=2.0))
    kept = kept_patterns(layout, SCOPE).collect().height
    assert result.error is not None and kept > 0
    assert result.kept == kept and result.already_loaded == 0
    assert result.failed == kept and result.as_dict()["accounts_for_kept"]
    assert "not sent (the load stopped)" in result.notes
