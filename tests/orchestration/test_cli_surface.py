"""The command line a new user meets: help with defaults, --version, synth's own help, one JSON object
with --json even for a command line argparse refuses, and a refused feedback file."""

from __future__ import annotations

import json
import re

import pytest

from assets.cli.main import build_parser, main


def _exit(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_run_help_explains_every_option_with_its_default(capsys):
    code, out, _ = _exit(capsys, "run", "--help")
    assert code == 0
    options = re.findall(r"^  (--[a-z-]+)", out, flags=re.MULTILINE)
    assert {"--input", "--data-dir", "--pairing", "--task-max-chars", "--max-quarantine-pct"} <= set(options)
    parsers = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in ("run", "plan", "rollback", "status"):
        silent = [a.option_strings for a in parsers[name]._actions if not a.help]
        assert silent == [], (name, silent)
    compact = " ".join(out.split())
    assert "(default: 2000)" in compact and "(default: merge)" in compact and "(default: None)" not in compact


def test_version_and_synth_help(capsys):
    code, out, _ = _exit(capsys, "--version")
    assert code == 0 and re.fullmatch(r"assistants-backfill \d+\.\d+\.\d+\n", out)
    code, out, _ = _exit(capsys, "synth", "--help")
    assert code == 0 and out.startswith("usage: assistants-backfill synth")
    assert "--messages" in out and "--bad-line-rate" in out


def test_an_invalid_command_line_with_json_still_prints_json(capsys, tmp_path):
    code, out, err = _exit(capsys, "run", "--input", str(tmp_path), "--scope-by", "nope", "--json")
    assert code == 2 and "invalid choice: 'nope'" in err
    report = json.loads(out)
    assert report["ok"] is False and "--scope-by" in report["failures"][0]


def test_a_feedback_rating_off_its_scale_is_refused_before_any_work(capsys, tmp_path, sample_dir):
    feedback = tmp_path / "fb.csv"
    feedback.write_text("message_id,rating\nmsg_abc_2,10\n")
    code, out, _ = _exit(
        capsys, "run", "--input", str(sample_dir), "--data-dir", str(tmp_path / "d"), "--feedback",
        str(feedback), "--json",
    )  # fmt: skip
    [failure] = json.loads(out)["failures"]
    assert code == 2 and failure.startswith(f"--feedback {feedback}: ") and "10" in failure
    assert f"{feedback}: {feedback}" not in failure
    assert not (tmp_path / "d").exists()


def test_the_table_names_reasons_and_the_instance_has_no_telemetry(capsys, tmp_path, sample_dir, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    data = tmp_path / "d"
    code, out, _ = _exit(capsys, "run", "--input", str(sample_dir), "--data-dir", str(data), "--no-progress")
    assert code == 0
    assert "default__asst_coder unpaired: tool message: not part of a (user, assistant) exchange (1)" in out
    assert (
        "default__asst_support unpaired: empty text (1), system message (1), unanswered last turn (1)" in out
    )
    assert "lines quarantined without a scope: 1 (malformed JSON (1))" in out
    assert "telemetry:\n  enabled: false" in (data / "dagster_home" / "dagster.yaml").read_text()
