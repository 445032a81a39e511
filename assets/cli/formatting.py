"""Help texts that show each option's default, and only where there is one to show."""

from __future__ import annotations

import argparse


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Like ``ArgumentDefaultsHelpFormatter``, without "(default: None)" on optional values and
    "(default: False)" on flags, which tell the reader nothing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)
