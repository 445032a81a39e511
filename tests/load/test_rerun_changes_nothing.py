"""Against a REAL Engramia 0.6.6 server: a re-run with nothing new (load, checks and all, through the CLI)
leaves the server's ``/v1/export`` byte-identical, and patterns found already on the server are
accounted for as present."""

from __future__ import annotations

import httpx
import pytest

from tests.load.test_rest_e2e import run
from tests.support.engramia_server import EngramiaServer
from tests.support.rest_load import SCOPE

pytestmark = pytest.mark.server


def export_bytes(server: EngramiaServer) -> bytes:
    r = httpx.get(
        f"{server.url}/v1/export", headers={"Authorization": f"Bearer {server.api_key}"}, timeout=30
    )
    r.raise_for_status()
    return r.content


@pytest.mark.parametrize("mode", ["rest-learn", "rest-import"])
def test_a_rerun_with_nothing_new_leaves_the_export_byte_identical(
    engramia_server, api_key_env, capsys, tmp_path, monkeypatch, mode
):
    data = tmp_path / "data"
    monkeypatch.setenv("DAGSTER_HOME", str(data / "dagster_home"))
    rest = ("--scope-by", "single", "--destination", mode, "--engramia-url", engramia_server.url)
    rest += ("--api-key-env", api_key_env(engramia_server))
    first = run(capsys, data, *rest)
    assert first["failed_checks"] == {} and first["scopes"][SCOPE]["loaded"] == 10
    before = export_bytes(engramia_server)
    again = run(capsys, data, *rest)
    s = again["scopes"][SCOPE]
    assert again["failed_checks"] == {} and s["loaded"] == 0 and s["already_loaded"] == 10
    assert export_bytes(engramia_server) == before


def test_patterns_already_on_the_server_are_accounted_for_as_present(
    engramia_server, api_key_env, capsys, tmp_path, monkeypatch
):
    env = api_key_env(engramia_server)
    rest = ("--scope-by", "single", "--destination", "rest-learn", "--engramia-url", engramia_server.url)
    rest += ("--api-key-env", env)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "a" / "dagster_home"))
    assert run(capsys, tmp_path / "a", *rest)["scopes"][SCOPE]["loaded"] == 10
    # a second data folder (its own, empty ledger) loads the same dumps into the same server
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "b" / "dagster_home"))
    other = run(capsys, tmp_path / "b", *rest)
    s = other["scopes"][SCOPE]
    assert other["exit_code"] == 0 and other["failed_checks"] == {}
    assert (s["kept"], s["loaded"], s["already_loaded"], s["present"]) == (10, 0, 0, 10) and s["load_adds_up"]
    assert engramia_server.pattern_count() == 10
