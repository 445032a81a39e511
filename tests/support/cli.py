"""Calling the ``assistants-backfill`` command in-process, and keeping what each call printed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assets.cli.main import main
from tests.support.engramia_server import SAMPLE


class Console:
    """A capture fixture (capsys or capfd) that keeps the stdout and stderr of every read, so a test can
    scan all that was printed after the calls that printed it have been read."""

    def __init__(self, capture: pytest.CaptureFixture[str]) -> None:
        self.capture = capture
        self.printed: list[str] = []

    def readouterr(self) -> tuple[str, str]:
        out, err = self.capture.readouterr()
        self.printed += [out, err]
        return out, err


def cli(capture: pytest.CaptureFixture[str] | Console, *args: str, code: int = 0) -> dict:
    """Run the command with ``--json``; its summary, with what it wrote to stderr as ``_stderr``."""
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--json"])
    out, err = capture.readouterr()
    assert exit_info.value.code == code, f"{out}\n{err}"
    return {**(json.loads(out) if out.strip().startswith("{") else {}), "_stderr": err}


def run(capture: pytest.CaptureFixture[str] | Console, data: Path, *extra: str, code: int = 0) -> dict:
    """``run`` on the demo sample into ``data``, unpaced."""
    return cli(
        capture,
        "run",
        "--input",
        str(SAMPLE),
        "--data-dir",
        str(data),
        "--requests-per-minute",
        "0",
        *extra,
        code=code,
    )
