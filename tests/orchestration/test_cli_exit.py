"""The command ends its process without tearing the interpreter down, and loses nothing by it: its exit
code, everything it printed, the threads it started and the ``atexit`` handlers all come through."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

COMMAND = Path(sys.executable).with_name("assistants-backfill")
ENV = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=Path.cwd()
    )


def test_exit_code_output_threads_and_atexit_handlers_come_through(tmp_path):
    done, handled = tmp_path / "thread-done", tmp_path / "atexit-ran"
    result = _python(
        f"""
        import atexit, pathlib, sys, threading, time
        from assets.cli.exit import run_and_exit

        def work():
            time.sleep(0.5)
            pathlib.Path({str(done)!r}).write_text("written after main returned")

        def main():
            threading.Thread(target=work).start()
            atexit.register(lambda: pathlib.Path({str(handled)!r}).write_text("ran"))
            print("x" * 100_000, end="")
            sys.exit(3)

        run_and_exit(main)
        """
    )
    assert result.returncode == 3, result.stderr
    assert result.stdout == "x" * 100_000
    assert done.read_text() == "written after main returned"
    assert handled.read_text() == "ran"


def test_sys_exit_rules_hold():
    for body, code, err in (
        ("pass", 0, ""),
        ("sys.exit()", 0, ""),
        ("sys.exit('no such folder')", 1, "no such folder\n"),
        ("sys.exit(130)", 130, ""),
    ):
        result = _python(
            f"""
            import sys
            from assets.cli.exit import run_and_exit

            def main():
                {body}

            run_and_exit(main)
            """
        )
        assert (result.returncode, result.stderr) == (code, err), body


def test_an_unexpected_error_is_reported_as_python_reports_it():
    result = _python(
        """
        from assets.cli.exit import run_and_exit

        def main():
            raise RuntimeError("a bug")

        run_and_exit(main)
        """
    )
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "RuntimeError: a bug" in result.stderr


def test_the_installed_command_reports_whole_and_exits_with_its_code(tmp_path, sample_dir):
    data = tmp_path / "d"
    ran = subprocess.run(
        [str(COMMAND), "run", "--input", str(sample_dir), "--data-dir", str(data), "--json", "--no-progress"],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    assert report["ok"] and report["scopes"] and all(s["load_reconciles"] for s in report["scopes"].values())
    again = subprocess.run(
        [str(COMMAND), "run", "--input", str(sample_dir), "--data-dir", str(data), "--json", "--no-progress"],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert again.returncode == 0 and all(
        s["up_to_date_since"] for s in json.loads(again.stdout)["scopes"].values()
    )
    refused = subprocess.run(
        [str(COMMAND), "run", "--input", str(tmp_path / "nope"), "--data-dir", str(data), "--json"],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert refused.returncode == 2 and json.loads(refused.stdout)["exit_code"] == 2
