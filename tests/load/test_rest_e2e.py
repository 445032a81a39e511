"""End to end through the CLI (the whole Dagster graph in-process, asset checks included) into REAL
Engramia servers: both REST modes, re-runs that add nothing, the servers mapping file and rollback
(the API key never leaking: tests/load/test_key_leaks.py)."""

from __future__ import annotations

import pytest

from assets.destination import EngramiaDestination
from pipelines.load.ledger import Ledger, Outcome
from pipelines.load.plan import latest_load_result
from pipelines.load.rest.options import destination_id
from pipelines.load.rest.servers import ServerConfig
from pipelines.tables import DataLayout
from tests.support.cli import cli, run
from tests.support.engramia_server import EngramiaServer

pytestmark = pytest.mark.server
KEPT = {"default__asst_analyst": 3, "default__asst_coder": 5, "default__asst_support": 2}


def in_store(layout: DataLayout, scope: str, server: EngramiaServer) -> int:
    return Ledger(layout, scope, destination_id(ServerConfig(server.url, "UNUSED"))).in_store().height


def test_cli_rest_import_loads_the_sample_reruns_add_nothing_and_rollback_takes_it_back(
    engramia_server, api_key_env, capsys, tmp_path, monkeypatch
):
    data = tmp_path / "data"
    monkeypatch.setenv("DAGSTER_HOME", str(data / "dagster_home"))
    env = api_key_env(engramia_server)
    rest = (
        "--scope-by",
        "single",
        "--destination",
        "rest-import",
        "--engramia-url",
        engramia_server.url,
        "--api-key-env",
        env,
    )
    summary = run(capsys, data, *rest, "--verbose")
    assert summary["failed_scopes"] == {} and summary["failed_checks"] == {}  # incl. count + recall checks
    assert "default__default: 100%" in summary["_stderr"] and "10/10" in summary["_stderr"]  # tqdm bar
    s = summary["scopes"]["default__default"]
    assert s["loaded"] == 10 and s["pattern_count_before"] == 0 and s["pattern_count_after"] == 10
    assert (
        s["load_reconciles"] and summary["destination"] == "rest-import" and summary["engramia_store"] is None
    )
    layout = DataLayout.at(data)
    assert engramia_server.pattern_count() == 10 == in_store(layout, "default__default", engramia_server)
    load = latest_load_result(layout, "default__default")
    assert load["server_version"] == "engramia 0.6.6 (api v1)" and load["ledger_in_store"] == 10

    again = run(capsys, data, *rest)
    s2 = again["scopes"]["default__default"]
    assert again["failed_checks"] == {} and s2["loaded"] == 0 and s2["pattern_count_after"] == 10
    # Nothing new: the scope did not run again, its last load (all 10 sent) stays the latest.
    assert s2["up_to_date_since"] == s["run_id"] and s2["already_loaded"] == 10
    assert latest_load_result(layout, "default__default")["sent"] == 10
    assert engramia_server.pattern_count() == 10

    target = (
        "--data-dir",
        str(data),
        "--scope",
        "default__default",
        "--engramia-url",
        engramia_server.url,
        "--api-key-env",
        env,
        "--requests-per-minute",
        "0",
    )
    dry = cli(capsys, "rollback", *target, "--dry-run")
    assert dry["would_delete"] == 10 and dry["deleted"] == 0 and engramia_server.pattern_count() == 10
    assert all(i["key"] == f"patterns/{i['pattern_id']}" for i in dry["items"])
    done = cli(capsys, "rollback", *target)
    assert done["deleted"] == 10 and done["pattern_count_after"] == 0 == engramia_server.pattern_count()
    state = Ledger(layout, "default__default", destination_id(ServerConfig(engramia_server.url, env))).state()
    assert state.height == 10 and set(state["outcome"]) == {Outcome.RETRACTED}
    assert cli(capsys, "rollback", *target)["deleted"] == 0  # nothing left that this pipeline loaded


def test_cli_rest_learn_with_a_servers_file_and_an_editor_key_reruns_add_nothing(
    engramia_servers, api_key_env, capsys, tmp_path, monkeypatch
):
    data = tmp_path / "data"
    monkeypatch.setenv("DAGSTER_HOME", str(data / "dagster_home"))
    server = engramia_servers(role="editor")
    mapping = tmp_path / "servers.yaml"
    mapping.write_text(
        f"defaults:\n  url: {server.url}\nscopes:\n  - scope: default__default\n"
        f"    api_key_env: {api_key_env(server)}\n"
    )
    rest = ("--scope-by", "single", "--destination", "rest-learn", "--servers", str(mapping))
    summary = run(capsys, data, *rest)
    assert summary["failed_scopes"] == {} and summary["failed_checks"] == {}  # incl. count + recall checks
    s = summary["scopes"]["default__default"]
    assert s["loaded"] == 10 and s["pattern_count_after"] == 10 and s["load_reconciles"]
    layout = DataLayout.at(data)
    assert server.pattern_count() == 10 == in_store(layout, "default__default", server)

    again = run(capsys, data, *rest)
    assert again["failed_checks"] == {} and again["scopes"]["default__default"]["loaded"] == 0
    # Nothing new: the scope did not run again, its last load (all 10 sent) stays the latest.
    assert again["scopes"]["default__default"]["up_to_date_since"] == s["run_id"]
    assert latest_load_result(layout, "default__default")["sent"] == 10 and server.pattern_count() == 10

    # learn keys are the server's; an editor key cannot export, so rollback finds them by recall
    target = (
        "--data-dir",
        str(data),
        "--scope",
        "default__default",
        "--servers",
        str(mapping),
        "--requests-per-minute",
        "0",
    )
    dry = cli(capsys, "rollback", *target, "--dry-run")
    assert dry["would_delete"] == 0 and len(dry["items"]) == 10 and server.pattern_count() == 10
    assert {i["action"] for i in dry["items"]} == {"would delete (key looked up by recall when deleting)"}
    done = cli(capsys, "rollback", *target)
    assert done["deleted"] == 10 and done["key_unknown"] == 0 and server.pattern_count() == 0
    assert all(i["key"].startswith("patterns/") and "oai_" not in i["key"] for i in done["items"])


def test_three_scopes_go_to_their_own_servers_through_the_servers_file(
    engramia_servers, api_key_env, staged, tmp_path
):
    layout = staged("assistant")
    servers = {scope: engramia_servers() for scope in KEPT}
    lines = ["scopes:"]
    for scope, server in servers.items():
        tenant, project = scope.split("__")
        lines += [
            f"  - tenant: {tenant}",
            f"    project: {project}",
            f"    url: {server.url}",
            f"    api_key_env: {api_key_env(server)}",
        ]
    mapping = tmp_path / "servers.yaml"
    mapping.write_text("\n".join(lines) + "\n")
    for mode in ("rest-import", "rest-learn"):  # the second mode finds everything in the shared ledger
        destination = EngramiaDestination(mode=mode, servers_file=str(mapping), requests_per_minute=0)
        for scope, n in KEPT.items():
            tenant, project = scope.split("__")
            result = destination.load(layout, scope, tenant, project)
            assert result.error is None and result.reconciles
            assert result.stored == (n if mode == "rest-import" else 0) and result.ledger_in_store == n
            assert (
                destination.pattern_count(layout, scope, tenant, project)
                == n
                == servers[scope].pattern_count()
            )
            assert destination.describe(layout, scope) == f"rest:{servers[scope].url}"
    assert {r["data"]["design"]["assistant_id"] for r in servers["default__asst_coder"].export()} == {
        "asst_coder"
    }
