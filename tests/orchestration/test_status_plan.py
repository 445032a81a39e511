"""``status`` and ``plan`` from the command line, around one real run of the bundled sample: figures that
add up and agree with the run's summary, a data folder left byte for byte and mtime for mtime as it was,
clear refusals, and no Dagster import on the way to a status."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from assets.cli.main import main
from tests.quality.test_status import tree
from tests.support.engramia_server import SAMPLE

SAMPLE_LINES = 31


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as ex:
        main(list(args))
    return int(ex.value.code or 0), out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One run of the sample (embedded store) and its JSON summary; tests only read the folder."""
    data = tmp_path_factory.mktemp("cli") / "data"
    saved = os.environ.pop("DAGSTER_HOME", None)
    try:
        code, out, err = cli("run", "--input", str(SAMPLE), "--data-dir", str(data), "--json")
    finally:
        if saved is not None:
            os.environ["DAGSTER_HOME"] = saved
    assert code == 0, err
    return data, json.loads(out)


def test_plan_before_a_run_writes_nothing(tmp_path):
    data = tmp_path / "data"
    code, out, err = cli("plan", "--input", str(SAMPLE), "--data-dir", str(data), "--json")
    assert code == 0, err
    assert not data.exists()
    plan = json.loads(out)
    assert [Path(d["file"]).name for d in plan["pending_dumps"]] == sorted(
        p.name for p in SAMPLE.glob("*.ndjson")
    )
    assert sum(d["lines"] for d in plan["pending_dumps"]) == SAMPLE_LINES
    assert all(s["already_loaded"] == 0 and s["new"] for s in plan["scopes"].values())
    assert all("to_load" in s["estimated"] for s in plan["scopes"].values())

    code, out, _ = cli("plan", "--input", str(SAMPLE), "--data-dir", str(data))
    assert code == 0 and "dumps to ingest: 2" in out and "~ marks an estimate" in out
    assert not data.exists()


def test_status_after_a_run_adds_up(ran):
    data, summary = ran
    before = tree(data)
    code, out, err = cli("status", "--data-dir", str(data), "--json")
    assert code == 0, err
    status = json.loads(out)
    assert tree(data) == before  # not a file, folder or mtime changed (the Dagster instance included)
    assert set(status["scopes"]) == set(summary["scopes"])
    assert status["unscoped_quarantined"] == summary["unscoped_quarantined"] == 1
    assert (
        status["lines"]
        == SAMPLE_LINES
        == status["unscoped_quarantined"] + sum(s["lines_in"] for s in status["scopes"].values())
    )
    for scope, s in status["scopes"].items():
        run = summary["scopes"][scope]
        for name in ("lines_in", "messages", "quarantined", "repeats", "patterns", "unpaired", "kept"):
            assert s[name] == run[name], (scope, name)
        assert s["lines_in"] == s["messages"] + s["quarantined"] + s["repeats"]
        assert s["patterns"] == s["kept"] + s["duplicates"]
        (dest,) = s["destinations"]
        assert dest["loaded"] == s["kept"] == run["loaded"] and dest["pending"] == 0
        assert s["pending_dumps"] == [] and s["pending_load"] == 0 and s["up_to_date"]
        assert s["last_load"]["stored"] == s["kept"] and s["last_run_at"]

    code, out, _ = cli("status", "--data-dir", str(data))
    assert code == 0 and tree(data) == before
    assert out.count("up to date") == len(summary["scopes"])
    for scope in summary["scopes"]:
        assert scope in out


def test_plan_after_a_run(ran):
    data, summary = ran
    # The run closed its run storage's connection: its write-ahead log folded in, as Dagster leaves it,
    # so a command that only reads the folder changes nothing (the last connection to close folds it in).
    assert not (data / "dagster_home" / "history" / "runs.db-wal").exists()
    before = tree(data)
    code, out, err = cli("plan", "--input", str(SAMPLE), "--data-dir", str(data), "--json")
    assert code == 0, err
    assert tree(data) == before
    plan = json.loads(out)
    assert plan["pending_dumps"] == [] and plan["ingested_dumps"] == 2
    for scope, s in plan["scopes"].items():
        kept = summary["scopes"][scope]["kept"]
        assert (s["to_load"], s["to_update"], s["already_loaded"], s["estimated"]) == (0, 0, kept, [])
        assert s["capacity"]["pattern_count"] == kept and s["capacity"]["fits"]


def test_status_of_an_empty_folder(tmp_path):
    code, out, err = cli("status", "--data-dir", str(tmp_path))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "nothing staged" in err and "Traceback" not in err
    missing = tmp_path / "missing"
    assert not missing.exists()


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ((), "nothing staged"),
        (("--data-dir", "s3://bucket/data"), "status reads a local data directory"),
        (("--no-such-option",), "unrecognized arguments: --no-such-option"),
    ],
)
def test_status_json_answers_a_refusal_in_json(tmp_path, extra, says):
    missing = tmp_path / "missing"
    code, out, _ = cli("status", "--data-dir", str(missing), *extra, "--json")
    report = json.loads(out)
    assert code == 2 and report["ok"] is False and report["exit_code"] == 2
    assert len(report["failures"]) == 1 and says in report["failures"][0]
    assert not missing.exists()


def test_plan_refuses_bad_options(tmp_path):
    code, _, err = cli("plan", "--input", str(tmp_path / "nope"), "--data-dir", str(tmp_path / "d"))
    assert code == 2 and "input not found" in err
    code, _, err = cli("plan", "--input", str(SAMPLE), "--destination", "rest-import")
    assert code == 2 and "--engramia-url" in err


def test_status_does_not_import_dagster(ran, tmp_path):
    """``status`` answers without importing Dagster (seconds on its own) through the real entry point."""
    data, _ = ran
    probe = (
        "import sys\n"
        "from assets.cli.main import main\n"
        "try:\n"
        f"    main(['status', '--data-dir', {str(data)!r}, '--json'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "assert 'dagster' not in sys.modules, 'dagster imported'\n"
        "assert 'engramia' not in sys.modules, 'engramia imported'\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["scopes"]


@pytest.mark.server
def test_plan_against_a_real_server(ran, engramia_server, api_key_env):
    data, summary = ran
    env = api_key_env(engramia_server)
    before = tree(data)
    code, out, err = cli(
        "plan",
        "--input",
        str(SAMPLE),
        "--data-dir",
        str(data),
        "--scope-by",
        "assistant",
        "--destination",
        "rest-learn",
        "--servers",
        str(_servers_file(data.parent, engramia_server.url, env, summary["scopes"])),
        "--requests-per-minute",
        "20",
        "--json",
    )
    assert code == 0, err
    assert tree(data) == before and engramia_server.pattern_count() == 0
    for scope, s in json.loads(out)["scopes"].items():
        kept = summary["scopes"][scope]["kept"]
        c = s["capacity"]
        # Nothing is in this server's ledger yet: every kept pattern is one learn request.
        assert (s["to_load"], c["requests"], c["requests_per_minute"]) == (kept, kept, 20)
        assert c["minutes"] == pytest.approx(kept / 20) and c["pattern_count"] == 0 and c["fits"]
        assert c["quota"] and c["scope_cap"] == 100_000

    code, out, _ = cli(
        "plan",
        "--input",
        str(SAMPLE),
        "--data-dir",
        str(data),
        "--destination",
        "rest-import",
        "--servers",
        str(data.parent / "servers.json"),
    )
    assert code == 0 and "requests at 60/min" in out and "quota" in out


def _servers_file(folder: Path, url: str, env: str, scopes: dict) -> Path:
    path = folder / "servers.json"
    path.write_text(json.dumps({"scopes": [{"scope": s, "url": url, "api_key_env": env} for s in scopes]}))
    return path
