"""Options ``run``, ``plan`` and ``rollback`` must refuse before any work: exit 2, one line per problem,
and nothing written (no dagster_home, no staged/). Each case here used to get past the up-front check and
fail late (after ingest, per scope) or, for ``plan``, not at all or with a traceback."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from assets.cli.main import main
from pipelines.ingest.catalog import read_scopes
from pipelines.ingest.staging import ingest
from pipelines.scopes import ScopeMapping
from pipelines.tables import DataLayout
from tests.conftest import SAMPLE

SECRET = "sk-never-printed-0123"


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as ex:
        main(list(args))
    return int(ex.value.code or 0), out.getvalue(), err.getvalue()


def refused(command: str, data: Path, *extra: str) -> list[str]:
    """The failure lines of ``command --json``, after checking it was a refusal that wrote nothing."""
    code, out, err = cli(command, "--input", str(SAMPLE), "--data-dir", str(data), *extra, "--json")
    assert code == 2, (out, err)
    report = json.loads(out)
    assert report["ok"] is False and report["exit_code"] == 2
    assert not data.exists(), sorted(p.name for p in data.iterdir())
    return report["failures"]


REST = ("--destination", "rest-learn", "--engramia-url", "http://127.0.0.1:9")


@pytest.mark.parametrize("command", ["run", "plan"])
def test_an_api_key_variable_that_is_not_set_is_refused_up_front(command, tmp_path, monkeypatch):
    monkeypatch.delenv("NOPE_KEY", raising=False)
    failures = refused(command, tmp_path / "d", *REST, "--api-key-env", "NOPE_KEY")
    assert failures == [
        "--api-key-env NOPE_KEY: the environment variable is not set (it must hold the Engramia API key)"
    ]


def test_every_server_of_a_servers_file_needs_its_key_and_no_value_is_printed(tmp_path, monkeypatch):
    servers = tmp_path / "servers.yaml"
    servers.write_text(
        "defaults:\n  url: http://127.0.0.1:9\nscopes:\n"
        "  - scope: acme__coder\n    api_key_env: SET_KEY\n"
        "  - tenant: acme\n    project: support\n    api_key_env: UNSET_B\n"
        "  - scope: acme__other\n    api_key_env: UNSET_A\n"
    )
    monkeypatch.setenv("SET_KEY", SECRET)
    monkeypatch.setenv("UNSET_A", "   ")  # blank: the client would send no key either
    monkeypatch.delenv("UNSET_B", raising=False)
    [line] = refused("run", tmp_path / "d", "--destination", "rest-import", "--servers", str(servers))
    assert line.startswith(f"--servers {servers}: ") and "UNSET_A, UNSET_B" in line
    assert "SET_KEY" not in line and SECRET not in line


def test_rollback_refuses_a_key_variable_that_is_not_set(tmp_path, monkeypatch):
    data = tmp_path / "data"
    layout = DataLayout.at(data)
    ingest(layout, SAMPLE, ScopeMapping())
    scope = read_scopes(layout)["scope"][0]
    monkeypatch.delenv("NOPE_KEY", raising=False)
    code, _, err = cli(
        "rollback", "--data-dir", str(data), "--scope", scope, "--engramia-url", "http://127.0.0.1:9",
        "--api-key-env", "NOPE_KEY",
    )  # fmt: skip
    assert code == 2
    assert err.splitlines() == [
        "error: --api-key-env NOPE_KEY: the environment variable is not set (it must hold the Engramia "
        "API key)"
    ]


@pytest.mark.parametrize("command", ["run", "plan"])
def test_a_quota_share_out_of_range_is_refused_naming_the_option(command, tmp_path, monkeypatch):
    monkeypatch.setenv("SET_KEY", SECRET)
    failures = refused(command, tmp_path / "d", *REST, "--api-key-env", "SET_KEY", "--quota-pct", "7")
    assert len(failures) == 1 and failures[0].startswith("--quota-pct 7.0: ")


def test_a_body_limit_restoptions_refuses_is_refused_naming_the_option(tmp_path, monkeypatch):
    monkeypatch.setenv("SET_KEY", SECRET)
    failures = refused("run", tmp_path / "d", *REST, "--api-key-env", "SET_KEY", "--max-body-bytes", "2000")
    assert failures == ["--max-body-bytes 2000: must be at least 4096"]


@pytest.mark.parametrize("command", ["run", "plan"])
def test_a_thread_mapped_to_two_tenants_is_refused_before_ingest(command, tmp_path):
    tenant_map = tmp_path / "map.csv"
    tenant_map.write_text("thread_id,tenant_id\nthread_abc,acme\nthread_abc,beta\n")
    failures = refused(command, tmp_path / "d", "--scope-by", "tenant", "--tenant-map", str(tenant_map))
    assert failures == [
        f"--tenant-map {tenant_map}: threads mapped to more than one tenant: thread_abc -> ['acme', 'beta']"
    ]


def test_plan_refuses_what_run_refuses_in_the_same_words(tmp_path):
    bad = ("--task-max-chars", "0", "--min-score", "50")
    plan_failures = refused("plan", tmp_path / "p", *bad)
    assert plan_failures == refused("run", tmp_path / "r", *bad)
    assert [f.split(" ", 1)[0] for f in plan_failures] == ["--task-max-chars", "--min-score"]
    # Without --json: one "error:" line per problem on stderr, nothing on stdout.
    code, out, err = cli("plan", "--input", str(SAMPLE), "--data-dir", str(tmp_path / "p"), *bad)
    assert code == 2 and out == ""
    assert err.splitlines() == [f"error: {f}" for f in plan_failures]


def test_every_problem_of_the_judge_options_is_refused_at_once(tmp_path):
    bad = ("--llm-judge", "gpt-x", "--llm-concurrency", "0", "--llm-max-cost", "-1")
    bad += ("--llm-base-url", "ftp://judge", "--llm-api-key-env", "JUDGE_KEY_NOT_SET")
    failures = refused("run", tmp_path / "d", *bad)
    assert [f.split(" ", 1)[0] for f in failures] == [
        "--llm-concurrency",
        "--llm-max-cost",
        "--llm-base-url",
        "--llm-api-key-env",
    ]
