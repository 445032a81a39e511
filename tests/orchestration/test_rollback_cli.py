"""``assistants-backfill rollback`` offers only the options it uses, each with a help text."""

from __future__ import annotations

import json

import pytest

from assets.cli.main import build_parser
from pipelines.ingest.catalog import read_scopes
from pipelines.ingest.staging import ingest
from pipelines.scopes import ScopeMapping
from pipelines.tables import DataLayout
from tests.conftest import SAMPLE

LOAD_ONLY = ("--no-redact", "--concurrency", "--async-import", "--max-body-bytes", "--no-validate")


def _rollback_parser():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices["rollback"]


def test_rollback_help_lists_only_what_rollback_uses():
    rollback = _rollback_parser()
    options = {s for a in rollback._actions for s in a.option_strings}
    assert not options & set(LOAD_ONLY)
    assert {"--engramia-url", "--api-key-env", "--servers", "--timeout", "--max-retries"} <= options
    for action in rollback._actions:
        assert action.help, action.option_strings
    text = rollback.format_help()
    assert "rest-learn, rest-import, rollback" not in text
    with pytest.raises(SystemExit):
        build_parser().parse_args(["rollback", "--scope", "s", "--no-redact"])


def test_rollback_over_rest_builds_its_destination_from_its_own_options(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    layout = DataLayout.at(data)
    ingest(layout, SAMPLE, ScopeMapping())
    scope = read_scopes(layout)["scope"][0]
    monkeypatch.setenv("ROLLBACK_KEY", "not-used")
    args = build_parser().parse_args(
        [
            "rollback",
            "--data-dir",
            str(data),
            "--scope",
            scope,
            "--engramia-url",
            "http://127.0.0.1:9",
            "--api-key-env",
            "ROLLBACK_KEY",
            "--dry-run",
            "--json",
        ]
    )
    # Nothing was loaded, so nothing is sent: the report is empty and the options were enough to build it.
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["scope"] == scope and report["items"] == []


@pytest.mark.parametrize(("option", "value"), [("--timeout", "0.0"), ("--max-retries", "-1")])
def test_rollback_refuses_an_option_out_of_range_in_one_line(tmp_path, monkeypatch, capsys, option, value):
    data = tmp_path / "data"
    layout = DataLayout.at(data)
    ingest(layout, SAMPLE, ScopeMapping())
    scope = read_scopes(layout)["scope"][0]
    monkeypatch.setenv("ROLLBACK_KEY", "not-used")
    server = ["--engramia-url", "http://127.0.0.1:9", "--api-key-env", "ROLLBACK_KEY"]
    args = build_parser().parse_args(
        ["rollback", "--data-dir", str(data), "--scope", scope, *server, option, value, "--dry-run"]
    )
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"error: {option} {value}: must be at least {0.001 if option == '--timeout' else 0}"
    ]
