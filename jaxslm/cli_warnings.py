"""How the commands print jaxslm's own warnings: `warning: MESSAGE`, without the file, line
and source line Python adds by default; other packages' warnings keep Python's format."""

from __future__ import annotations

import warnings
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def plain_jaxslm_warnings() -> None:
    """Print warnings raised in jaxslm's code as `warning: MESSAGE`."""
    python_format = warnings.formatwarning

    def format_warning(message, category, filename, lineno, line=None) -> str:
        if Path(filename).resolve().is_relative_to(PACKAGE_DIR):
            return f"warning: {message}\n"
        return python_format(message, category, filename, lineno, line)

    warnings.formatwarning = format_warning
