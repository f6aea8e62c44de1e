"""Bad files and impossible outputs given to the commands: one error line naming the file and
the fix, exit 2, and for outputs, before any work (the work is replaced by a failure here)."""

import os
from pathlib import Path

import pytest

import jaxslm
from jaxslm import evaluate, fsutil, generate, train
from jaxslm.scaling import report
from jaxslm.scaling import sweep as sweep_module
from jaxslm.scaling.__main__ import main as scaling

RUNS = "params,tokens,loss\n" + "".join(f"{n},{20 * n},{3 - i / 10}\n" for i, n in enumerate(
    [1e6, 2e6, 4e6, 8e6, 1.6e7]
))  # fmt: skip


def _fails(code: int, capsys, *fragments: str) -> str:
    assert code == 2
    message = capsys.readouterr().err
    assert message.startswith("error: ") and message.count("\n") == 1, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def _no_work(*args, **kwargs):
    pytest.fail("the work started before the output was checked")


@pytest.fixture
def under_a_file(tmp_path) -> Path:
    (tmp_path / "file").write_text("")
    return tmp_path / "file" / "out"


@pytest.fixture
def read_only(tmp_path, monkeypatch) -> Path:
    """A folder that `os.access` reports read-only (root writes anywhere, so the check is what
    is tested here; tests/test_fsutil.py makes a real read-only folder when not root)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    access = os.access
    monkeypatch.setattr(fsutil.os, "access", lambda p, mode: Path(p) != folder and access(p, mode))
    return folder


def test_a_config_that_is_not_utf8_or_not_yaml(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"model:\n  hidden_size: 64 \xff\n")
    _fails(train.main(["--config", str(bad)]), capsys, f"{bad}, line 2", "not UTF-8", "0xff")
    bad.write_text("model: [\n")
    _fails(train.main(["--config", str(bad)]), capsys, f"{bad}, line 2", "not valid YAML")
    bad.write_text(RUNS)
    _fails(train.main(["--config", str(bad)]), capsys, "must be a YAML mapping of sections")


def test_a_runs_table_that_is_not_utf8_or_has_no_runs(tmp_path, capsys):
    table = tmp_path / "runs.csv"
    table.write_bytes(RUNS.encode() + b"1e8,2e9,\xe92.5\n")
    out = str(tmp_path / "report")
    _fails(scaling(["fit", str(table), "--out", out]), capsys, f"{table}, line 7", "not UTF-8")
    table.write_text("params,tokens,loss\n")
    _fails(scaling(["fit", str(table), "--out", out]), capsys, f"{table}: no runs")
    assert [p.name for p in tmp_path.iterdir()] == ["runs.csv"]


def test_sweep_given_a_table_or_a_bad_yaml(tmp_path, capsys):
    table = tmp_path / "runs.csv"
    table.write_text(RUNS)
    _fails(scaling(["sweep", str(table)]), capsys, "YAML sweep config", "jaxslm.scaling fit")
    renamed = table.rename(tmp_path / "runs.txt")
    _fails(scaling(["sweep", str(renamed)]), capsys, "YAML mapping of keys base, out, params")
    config = tmp_path / "sweep.yaml"
    config.write_bytes(b"base: x.yaml # \xff\n")
    _fails(scaling(["sweep", str(config)]), capsys, f"{config}, line 1", "not UTF-8")
    config.write_text("base: x.yaml\nout: o\nparams: 1e5\nflops: [1e9]\n")
    _fails(scaling(["sweep", str(config)]), capsys, "params must be a YAML list")
    config.write_text("base: x.yaml\nout: o\nparams: [1e5]\nflops: [.nan]\n")
    _fails(scaling(["sweep", str(config)]), capsys, "flops must list finite numbers")
    config.write_text("base: x.yaml\nout: o\nparams: [1e5]\nflops: [1e9]\n")
    assert sweep_module.load_sweep(config).flops == (1e9,)  # YAML reads 1e9 as a string


def test_plan_given_a_json_that_is_not_a_fit(tmp_path, capsys):
    fit = tmp_path / "fit.json"
    fit.write_text("[1, 2]")
    _fails(scaling(["plan", "--flops", "1e20", "--fit", str(fit)]), capsys, "is it a fit.json?")


def test_fit_output_checked_before_fitting(tmp_path, under_a_file, read_only, capsys, monkeypatch):
    table = tmp_path / "runs.csv"
    table.write_text(RUNS)
    monkeypatch.setattr(report, "analyse", _no_work)
    for out in (under_a_file, read_only / "report"):
        _fails(scaling(["fit", str(table), "--out", str(out)]), capsys, f"error: {out}")


def test_sweep_output_checked_before_any_run(
    tmp_path, under_a_file, read_only, capsys, monkeypatch
):
    monkeypatch.setattr(sweep_module, "plan_runs", _no_work)
    config = tmp_path / "sweep.yaml"
    for out in (under_a_file, read_only, read_only / "sweep"):
        config.write_text(f"base: configs/tiny.yaml\nout: {out}\nparams: [2.0e+4]\nflops: [1e9]\n")
        for mode in ([], ["--write-only"], ["--collect-only"]):
            _fails(scaling(["sweep", str(config), *mode]), capsys, f"error: {out}: cannot be")


def test_evaluate_outputs_checked_before_scoring(
    tmp_path, under_a_file, read_only, capsys, monkeypatch
):
    monkeypatch.setattr(jaxslm, "load", _no_work)
    data = tmp_path / "swuggy.jsonl"
    data.write_text("")
    argv = ["--checkpoint", str(tmp_path), "--task", "swuggy", "--data", str(data)]
    for option in ("--out", "--pairs-out"):
        for out in (under_a_file, read_only / "results.json", tmp_path):
            _fails(evaluate.main([*argv, option, str(out)]), capsys, f"error: {out}")
    same = str(tmp_path / "results.json")
    _fails(evaluate.main([*argv, "--out", same, "--pairs-out", same]), capsys, "two different")


def test_generate_output_checked_before_generating(
    tmp_path, under_a_file, read_only, capsys, monkeypatch
):
    monkeypatch.setattr(jaxslm, "load", _no_work)
    argv = ["--checkpoint", str(tmp_path), "--prompt-text", "hi", "--modality", "text"]
    for out in (under_a_file, read_only / "out.jsonl", tmp_path):
        _fails(generate.main([*argv, "--out", str(out)]), capsys, f"error: {out}")


def test_vocode_refuses_bad_inputs_and_checks_its_output_first(
    tmp_path, under_a_file, capsys, monkeypatch
):
    from jaxslm import vocode
    from jaxslm.speech import vocode_lines

    units = tmp_path / "units.jsonl"
    units.write_text('{"file_name": "a.wav", "units": [1, 2]}\n')
    base = ["--units", str(units), "--no-progress"]
    absent = str(tmp_path / "absent")
    _fails(
        vocode.main([*base, "--vocoder", absent, "--out", str(tmp_path / "o")]),
        capsys,
        "no such folder",
    )
    missing = ["--units", absent, "--vocoder", "toy", "--out", str(tmp_path / "o")]
    _fails(vocode.main(missing), capsys, absent, "no such file")
    monkeypatch.setattr(vocode_lines, "vocode_file", _no_work)
    _fails(vocode.main([*base, "--vocoder", "toy", "--out", str(under_a_file)]), capsys, "file")
