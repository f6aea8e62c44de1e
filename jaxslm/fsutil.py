"""Output directories that appear complete or not at all."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from jaxslm.errors import JaxslmError


def refuse_existing(out_dir: str | Path, overwrite: bool) -> Path:
    """`out_dir` as a Path, refusing an existing one unless `overwrite`."""
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not overwrite:
        raise JaxslmError(f"{out_dir} already exists; choose a new path or pass --overwrite")
    return out_dir


@contextlib.contextmanager
def atomic_directory(out_dir: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `out_dir`; rename it into place only if the block succeeds.

    On any error the temporary directory is removed and an existing `out_dir` is left untouched.
    """
    out_dir = refuse_existing(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        yield staging
        if out_dir.exists():
            retired = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, retired)
            os.replace(staging, out_dir)
            shutil.rmtree(retired)
        else:
            os.replace(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` through a temporary sibling, so readers see old or new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.partial-{os.getpid()}")
    staging.write_text(text, encoding="utf-8")
    staging.replace(path)
    return path
