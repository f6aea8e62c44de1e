"""What a run reports: `metrics.jsonl` (one JSON object per logged step), TensorBoard event
files beside it, and a progress bar with loss, tokens/s, MFU and ETA."""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

from tqdm import tqdm

from jaxslm.errors import JaxslmError
from jaxslm.fsutil import atomic_write_text
from jaxslm.strict_json import strict_json

METRICS_FILE = "metrics.jsonl"


class MetricsLog:
    """Appends logged steps to RUN_DIR/metrics.jsonl (and TensorBoard); on resume, drops lines
    of steps after the restored checkpoint, which the resumed run logs again, and a last line
    that a killed run left half-written."""

    def __init__(
        self,
        run_dir: Path,
        resume_step: int,
        total_steps: int,
        tensorboard: bool,
        progress_bar: bool,
        primary: bool = True,
    ):
        """Only the `primary` process writes files and shows the bar."""
        self.path = Path(run_dir) / METRICS_FILE
        self.file = None
        self.writer = None
        if primary:
            _truncate_after(self.path, resume_step)
            self.file = self.path.open("a")
        if tensorboard and primary:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(str(run_dir), purge_step=resume_step + 1)
        self.bar = tqdm(
            total=total_steps,
            initial=resume_step,
            desc="train",
            unit="step",
            disable=not (progress_bar and primary),
            dynamic_ncols=True,
        )

    def advance(self, steps: int = 1) -> None:
        """Move the progress bar."""
        self.bar.update(steps)

    def write(self, record: dict[str, Any]) -> None:
        """Log one step's record (must hold `step`); non-finite floats become null in JSON."""
        if self.file is None:
            return
        self.file.write(strict_json(record) + "\n")
        self.file.flush()
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float) and math.isfinite(value):
                    self.writer.add_scalar(key, value, record["step"])
        shown = {k: record[k] for k in ("loss", "eval_loss") if k in record}
        if "tokens_per_second" in record:
            shown["tok/s"] = f"{record['tokens_per_second']:.3g}"
        if record.get("mfu") is not None:
            shown["mfu"] = f"{record['mfu']:.1%}"
        if "tokens_text" in record:  # realised stream shares: text/interleaved/speech
            shares = (record[f"tokens_{name}"] for name in ("text", "interleaved", "speech"))
            shown["mix"] = "/".join(f"{share:.2f}" for share in shares)
        self.bar.set_postfix(
            {k: f"{v:.4f}" if isinstance(v, float) else v for k, v in shown.items()}, refresh=False
        )

    def sync(self) -> None:
        """Put every record written so far on disk (called before a checkpoint is saved)."""
        if self.file is not None:
            self.file.flush()
            os.fsync(self.file.fileno())
        if self.writer is not None:
            self.writer.flush()

    def message(self, text: str) -> None:
        """Print a line without breaking the progress bar."""
        self.bar.write(text)

    def close(self) -> None:
        self.bar.close()
        if self.file is not None:
            self.file.close()
        if self.writer is not None:
            self.writer.close()


def _truncate_after(path: Path, step: int) -> None:
    """Keep only the records of steps <= `step` (written atomically)."""
    if not path.is_file():
        return
    kept = [line for line, record in _records(path) if record["step"] <= step]
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def _records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(line, record) for each record of a metrics file. A broken last line (a run killed while
    writing it) is dropped with a warning; a broken line before it stops with an error."""
    lines = path.read_text().splitlines()
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    records = []
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append((line, record))
        elif index == last:
            warnings.warn(f"{path}: dropped a half-written last line: {line[:60]!r}", stacklevel=3)
        else:
            raise JaxslmError(
                f"{path}: line {index + 1} is not a metrics record ({line[:60]!r}); "
                "repair or delete that line, then rerun"
            )
    return records


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every record of RUN_DIR/metrics.jsonl (a half-written last line is left out)."""
    return [record for _, record in _records(Path(run_dir) / METRICS_FILE)]
