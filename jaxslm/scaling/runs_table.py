"""The runs table of a scaling report: RUNS.csv read and checked.

RUNS.csv has one row per training run with columns `params` (N), `tokens` (D) and `loss`, and
optionally `flops` (C; else 6 N D), `unique_tokens` or `epochs` (multi-epoch data) and metric
columns. Every other numeric column is a downstream metric (an empty cell: not measured for that
run), except names and the bookkeeping columns sweeps write (`total_params`, `model_flops`,
`steps`, and a speech-only sweep's per-second-of-audio columns `AUDIO_COLUMNS`). Text columns are
ignored. `per_audio_second` fits over audio instead of tokens: D is `audio_seconds` and the loss
`loss_per_audio_second` (nats per second of audio); C stays the table's (or 6 N x tokens).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jaxslm.errors import JaxslmError
from jaxslm.textfiles import read_utf8

REQUIRED = ("params", "tokens", "loss")
AUDIO_COLUMNS = (
    "tokens_per_audio_second",
    "audio_seconds",
    "loss_per_audio_second",
    "flops_per_audio_second",
)
NOT_METRICS = {
    *REQUIRED,
    "flops",
    "epochs",
    "unique_tokens",
    "name",
    "run",
    "total_params",
    "model_flops",
    "steps",
    *AUDIO_COLUMNS,
}


@dataclass(frozen=True)
class RunTable:
    """The runs of a table: arrays over runs, metrics with NaN where not measured."""

    path: str
    params: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray
    flops: np.ndarray
    unique_tokens: np.ndarray | None = None
    metrics: dict[str, np.ndarray] = field(default_factory=dict)
    flops_per_nd: float = 6.0  # C = flops_per_nd x N x D, D in the law's units

    def __len__(self) -> int:
        return len(self.loss)

    def drop_highest_loss(self, count: int) -> RunTable:
        """The table without its `count` highest-loss runs."""
        keep = np.sort(np.argsort(self.loss, kind="stable")[: len(self) - count])
        return RunTable(
            self.path,
            self.params[keep],
            self.tokens[keep],
            self.loss[keep],
            self.flops[keep],
            None if self.unique_tokens is None else self.unique_tokens[keep],
            {name: values[keep] for name, values in self.metrics.items()},
            self.flops_per_nd,
        )


def _number(path: Path, run: int, line: int, column: str, text: str | None) -> float:
    """A positive finite number from one cell, or an error naming the file, line and column."""
    where = f"{path}, run {run} (line {line}), column {column!r}"
    if text is None or not text.strip():
        raise JaxslmError(f"{where}: the value is missing")
    try:
        value = float(text)
    except ValueError:
        raise JaxslmError(f"{where}: {text!r} is not a number") from None
    if math.isnan(value):
        raise JaxslmError(f"{where}: the value is NaN")
    if not (value > 0 and math.isfinite(value)):
        raise JaxslmError(f"{where}: {text!r} must be a positive finite number")
    return value


def read_runs(path: str | Path, per_audio_second: bool = False) -> RunTable:
    """Read and check RUNS.csv (over audio seconds with `per_audio_second`); errors name the
    file, the line and the column."""
    path = Path(path)
    if not path.is_file():
        raise JaxslmError(f"{path}: no such runs table")
    text = read_utf8(path, "runs table")
    if text.lstrip().startswith(("{", "[")):
        raise JaxslmError(
            f"{path}: JSON, not a CSV table of runs; fit reads a CSV whose header names the "
            f"columns {', '.join(REQUIRED)}, then one row per run (as a sweep's runs.csv). "
            "A report's fit.json is read by `plan --fit REPORT_DIR`"
        )
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        columns = [c.strip() for c in reader.fieldnames or []]
        rows, lines = [], []  # each run and the file line it ends on (blank lines skipped)
        for row in reader:
            rows.append({k.strip(): v for k, v in row.items() if k is not None})
            lines.append(reader.line_num)
    except csv.Error as err:
        raise JaxslmError(f"{path}, line {reader.line_num}: not a CSV table ({err})") from None
    required = REQUIRED + (AUDIO_COLUMNS[1:3] if per_audio_second else ())
    missing = [c for c in required if c not in columns]
    if missing:
        raise JaxslmError(
            f"{path}: missing column(s) {', '.join(missing)} (found: "
            f"{', '.join(columns) or 'none'}); required: {', '.join(required)}"
        )
    if not rows:
        raise JaxslmError(f"{path}: no runs, only the header; add one row per run")
    numeric = [c for c in required + ("flops", "epochs", "unique_tokens") if c in columns]
    values = {
        c: np.array([_number(path, i + 1, lines[i], c, row[c]) for i, row in enumerate(rows)])
        for c in numeric
    }
    unique = values.get("unique_tokens")
    if unique is None and "epochs" in values:
        bad = np.flatnonzero(values["epochs"] < 1)
        if len(bad):
            raise JaxslmError(
                f"{path}, run {bad[0] + 1} (line {lines[bad[0]]}), column 'epochs': must be >= 1"
            )
        unique = values["tokens"] / values["epochs"]
    if unique is not None:
        bad = np.flatnonzero(unique > values["tokens"] * (1 + 1e-9))
        if len(bad):
            raise JaxslmError(
                f"{path}, run {bad[0] + 1} (line {lines[bad[0]]}), column 'unique_tokens': more "
                "unique tokens than tokens"
            )
        unique = np.minimum(unique, values["tokens"])
        if np.allclose(unique, values["tokens"]):
            unique = None  # no run repeats data: the plain law
    flops = values.get("flops", 6 * values["params"] * values["tokens"])
    data, loss, flops_per_nd = values["tokens"], values["loss"], 6.0
    if per_audio_second:
        data, loss = values["audio_seconds"], values["loss_per_audio_second"]
        unique = None if unique is None else unique * data / values["tokens"]
        flops_per_nd = 6.0 * float(np.median(values["tokens"] / data))  # 6 N x tokens
    return RunTable(
        str(path),
        values["params"],
        data,
        loss,
        flops,
        unique,
        _metrics(rows, columns),
        flops_per_nd,
    )


def _metrics(rows: list[dict[str, str]], columns: list[str]) -> dict[str, np.ndarray]:
    """Columns whose non-empty cells are all numbers; empty cells become NaN."""
    out = {}
    for column in columns:
        if column in NOT_METRICS:
            continue
        cells = [(row.get(column) or "").strip() for row in rows]
        try:
            values = np.array([float(c) if c else math.nan for c in cells])
        except ValueError:
            continue
        if np.isfinite(values).any():
            out[column] = values
    return out
