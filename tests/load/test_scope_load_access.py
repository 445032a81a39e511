"""A REST load against REAL Engramia 0.6.6 servers on 127.0.0.1 with the wrong key, a role too weak, or
a project quota too small: the scope fails naming what to fix, and stores nothing it should not."""

from __future__ import annotations

import pytest

from pipelines.load.ledger import IN_STORE
from pipelines.load.rest.options import RestMode
from tests.support.rest_load import SCOPE, ledger_state, load, opts, stored

pytestmark = pytest.mark.server


# -- keys and roles --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [RestMode.LEARN, RestMode.IMPORT])
def test_wrong_key_fails_the_scope_naming_it_and_the_role_and_stores_nothing(
    engramia_server, staged, api_key_env, mode
):
    layout = staged("single")
    wrong = "ebk_wrong_" + "9" * 24
    env = api_key_env(engramia_server, wrong)
    result = load(layout, engramia_server, env, opts(mode))
    assert result.error and "401" in result.error
    assert SCOPE in result.error and env in result.error
    assert f"'{'editor' if mode == RestMode.LEARN else 'admin'}' role" in result.error
    assert wrong not in result.error and engramia_server.api_key not in result.error
    assert result.stored == 0 and result.sent == 0
    assert ledger_state(layout, engramia_server).height == 0
    assert engramia_server.pattern_count() == 0


def test_reader_key_fails_both_modes_with_the_needed_role_and_an_editor_key_cannot_import(
    engramia_servers, staged, api_key_env
):
    reader = engramia_servers(role="reader")
    layout, env = staged("single"), api_key_env(reader)
    for mode, role in ((RestMode.LEARN, "editor"), (RestMode.IMPORT, "admin")):
        result = load(layout, reader, env, opts(mode))
        assert result.error and "403" in result.error and f"'{role}' role" in result.error
        assert SCOPE in result.error and "default/default" in result.error
        assert result.stored == 0 and result.sent == 0 and result.pattern_count_after == 0
    assert not any(o in IN_STORE for o in ledger_state(layout, reader)["outcome"])
    assert stored(reader) == []

    editor = engramia_servers(role="editor")
    result = load(layout, editor, api_key_env(editor), opts(RestMode.IMPORT))
    assert result.error and "'admin' role" in result.error and result.stored == 0
    assert stored(editor) == []


# -- capacity --------------------------------------------------------------------------------------


def test_capacity_preflight_refuses_before_sending_and_quota_exceeded_stops_with_what_to_fix(
    engramia_servers, staged, api_key_env
):
    # the sandbox plan allows 5,000 patterns; at 0.1% a project may hold 5
    server = engramia_servers(env={"ENGRAMIA_PROJECT_QUOTA_PCT": "0.001"})
    layout, env = staged("single"), api_key_env(server)
    result = load(layout, server, env, opts(RestMode.IMPORT, quota_pct=0.001))
    assert result.error and "cannot take 10 more patterns" in result.error and "quota is 5" in result.error
    assert result.sent == 0 and server.pattern_count() == 0
    assert ledger_state(layout, server).height == 0

    # a client that does not know the server's setting learns until the server says QUOTA_EXCEEDED
    result = load(layout, server, env, opts(RestMode.LEARN))
    assert result.error and "QUOTA_EXCEEDED" in result.error and "ENGRAMIA_PROJECT_QUOTA_PCT" in result.error
    # the server's own figures, which it sends under error_context
    assert "the project holds 5 of the 5 patterns the server allows it" in result.error
    # one refused, four never sent: all failed (not stored), so the kept patterns still add up
    assert result.stored == 5 and result.failed == 5 and result.unaccounted == 0 and result.reconciles
    assert server.pattern_count() == 5 == result.ledger_in_store
