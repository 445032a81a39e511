"""How the command line speaks: help texts that show each option's default (only where there is one to
show), and argparse's complaints as one JSON object on stdout under ``--json``."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Like ``ArgumentDefaultsHelpFormatter``, without "(default: None)" on optional values and
    "(default: False)" on flags, which tell the reader nothing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def parse_args(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``parser.parse_args(argv)``; with ``--json``, a refused command line also prints
    ``{"ok": false, "exit_code": 2, "failures": [...]}``, so a caller that parses stdout gets an answer."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            args = parser.parse_args(argv)
    except SystemExit as exc:
        sys.stderr.write(captured.getvalue())
        if exc.code not in (0, None) and "--json" in argv:
            complaint = captured.getvalue().strip().splitlines()[-1:] or ["invalid command line"]
            print(json.dumps({"ok": False, "exit_code": exc.code, "failures": complaint}))
        raise
    sys.stderr.write(captured.getvalue())
    return args
