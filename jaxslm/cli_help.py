"""The help layout of every command: descriptions kept as written, and each option's default
shown after its help (when it has one to show)."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions and epilogs as written; `(default: X)` after the help of each option whose
    default is a value: not None, not an off switch, not empty, and not already described in
    its help (`default:` or `%(default)s` there). A list default shows as its items. (argparse
    prints nothing for an option without help, so each option with a default needs one.)"""

    def _get_help_string(self, action: argparse.Action) -> str:
        help = action.help or ""
        default = action.default
        if (
            "%(default)" in help
            or "default:" in help
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or (isinstance(default, str | list | tuple) and not default)
            or action.nargs == 0  # switches: store_true, store_const, help, version
            or not (action.option_strings or action.nargs in (argparse.OPTIONAL, "*"))
        ):
            return help
        if isinstance(default, list | tuple):
            shown = " ".join(str(item) for item in default).replace("%", "%%")
        else:
            shown = "%(default)s"
        return f"{help} (default: {shown})"
