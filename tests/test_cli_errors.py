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
from jaxslm.textfiles import read_yaml_mapping

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
    (tmp_path / "x.yaml").write_text("{}\n")
    config.write_text(f"base: {tmp_path / 'x.yaml'}\nout: o\nparams: [1e5]\nflops: [1e9]\n")
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


def test_plan_names_a_shape_flag_that_is_not_positive(capsys):
    plan = ["plan", "--flops", "1e20", "--law", "speech"]
    bad = [("--kv-ratio", "0"), ("--head-dim", "-64"), ("--aspect", "-5"), ("--aspect", "0")]
    for flag, value in [*bad, ("--aspect", "nan")]:
        _fails(scaling([*plan, flag, value]), capsys, "must be positive", f"got {flag} ")


def test_a_sweep_shape_rule_that_is_not_positive(tmp_path, capsys):
    config = tmp_path / "sweep.yaml"
    config.write_text("base: x.yaml\nout: o\nparams: [1e5]\nflops: [1e9]\nkv_ratio: 0\n")
    _fails(scaling(["sweep", str(config)]), capsys, "aspect, head_dim and kv_ratio", "kv_ratio 0")


def test_a_yaml_key_given_twice_is_refused(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text("model:\n  hidden_size: 64\noptimizer: {lr: 1.0e-3, lr: 2.0e-3}\n")
    argv = ["--config", str(config)]
    _fails(train.main(argv), capsys, f"{config}, line 3", "'lr' is given twice", "first on line 3")
    config.write_text("budget:\n  max_steps: 10\nmodel: {}\nbudget:\n  max_seconds: 5\n")
    _fails(train.main(argv), capsys, f"{config}, line 4", "'budget' is given twice", "line 1")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("base: x.yaml\nout: o\nparams: [1e5]\nflops: [1e9]\nparams: [2e5]\n")
    _fails(scaling(["sweep", str(sweep)]), capsys, f"{sweep}, line 5", "'params' is given twice")
    merged = tmp_path / "merged.yaml"
    merged.write_text("base: &b {lr: 1, wd: 2}\nopt:\n  <<: *b\n  lr: 3\n")
    assert read_yaml_mapping(merged, "config file", "sections")["opt"] == {"lr": 3, "wd": 2}


def test_a_mistyped_corpus_is_refused_not_built(tmp_path, capsys, monkeypatch):
    from jaxslm.training import setup

    monkeypatch.setattr(setup, "build_synthetic", _no_work)
    typo = tmp_path / "tyo"
    argv = [f"data.corpus={typo}", f"run_dir={tmp_path / 'run'}", "budget.max_steps=3"]
    _fails(train.main(argv), capsys, f"data.corpus={typo}: no such corpus")
    assert not typo.exists()


def test_build_refuses_input_files_with_a_builtin_corpus(tmp_path, capsys, monkeypatch):
    from jaxslm.data import build, preference_store

    monkeypatch.setattr(build, "build_synthetic", _no_work)
    monkeypatch.setattr(preference_store, "build_synthetic_preferences", _no_work)
    units = tmp_path / "units.jsonl"
    units.write_text('{"file_name": "a.wav", "units": [1], "duration": [1]}\n')
    out = ["--out", str(tmp_path / "corpus")]
    argv = ["--synthetic", "--units", str(units), *out]
    _fails(build.main(argv), capsys, "--synthetic builds", "--units was given")
    files = ["--text", str(units), "--alignments", str(units), "--audio", str(tmp_path)]
    _fails(build.main(["--synthetic", *files, *out]), capsys, "--text, --alignments, --audio")
    argv = ["--synthetic-preference", "--preference", str(units), *out]
    _fails(build.main(argv), capsys, "--synthetic-preference builds", "--preference was given")
    _fails(build.main(["--synthetic", "--synthetic-preference", *out]), capsys, "give one of")
    assert not (tmp_path / "corpus").exists()


def test_export_refuses_a_shard_size_that_is_not_positive(tmp_path, capsys, monkeypatch):
    from jaxslm.hf import cli, exporter

    with pytest.raises(jaxslm.JaxslmError, match="max_shard_bytes"):
        exporter.export_hf(tmp_path, tmp_path / "hf", max_shard_bytes=0)
    monkeypatch.setattr(exporter, "export_hf", _no_work)
    for size in ("0", "-1", "nan"):
        argv = ["export-hf", str(tmp_path), str(tmp_path / "hf"), "--max-shard-size", size]
        _fails(cli.main(argv), capsys, f"--max-shard-size {size}: give a positive number")
    assert not (tmp_path / "hf").exists()


def test_vocode_checks_the_vocoder_before_making_its_folder(tmp_path, capsys):
    from jaxslm import vocode

    units = tmp_path / "units.jsonl"
    units.write_text('{"file_name": "a.wav", "units": [1, 2]}\n')
    out = tmp_path / "new" / "wavs"
    base = ["--units", str(units), "--out", str(out), "--no-progress"]
    absent = str(tmp_path / "absent")
    _fails(vocode.main([*base, "--vocoder", absent]), capsys, absent, "no such folder")
    _fails(vocode.main([*base, "--vocoder", "toy", "--speaker", "3"]), capsys, "--speaker 3")
    _fails(vocode.main([*base, "--vocoder", "toy", "--style", "2"]), capsys, "--style 2")
    argv = [*base, "--vocoder", "toy", "--durations", "predict"]
    _fails(vocode.main(argv), capsys, "--durations predict", "no duration predictor")
    assert not (tmp_path / "new").exists()


def test_vocode_durations_file_refuses_a_line_without_durations(tmp_path, capsys):
    from jaxslm import vocode

    units = tmp_path / "units.jsonl"
    units.write_text(
        '{"file_name": "a.wav", "units": [1, 2], "duration": [2, 1]}\n'
        '{"file_name": "b.wav", "units": [1, 2]}\n'
    )
    out = tmp_path / "wavs"
    argv = ["--units", str(units), "--vocoder", "toy", "--out", str(out), "--no-progress"]
    message = _fails(vocode.main([*argv, "--durations", "file"]), capsys, f"{units}:2")
    assert "no 'duration'" in message and "--durations auto or once" in message
    assert not out.exists()


def test_tokenize_audio_checks_batch_seconds_and_its_model_before_making_a_folder(
    tmp_path, capsys, monkeypatch
):
    import numpy as np
    import soundfile

    from jaxslm import tokenize_audio
    from jaxslm.speech.tokenizer import SpeechTokenizer

    audio = tmp_path / "audio"
    audio.mkdir()
    soundfile.write(audio / "a.wav", np.full(8000, 0.1, np.float32), 16000)
    out = tmp_path / "new" / "units.jsonl"
    argv = ["--audio", str(audio), "--hubert", str(tmp_path), "--codebook", str(tmp_path / "km")]
    argv += ["--out", str(out), "--no-progress"]
    monkeypatch.setattr(SpeechTokenizer, "load", _no_work)
    for seconds in ("0", "-1", "nan"):
        argv_seconds = [*argv, "--batch-seconds", seconds]
        _fails(tokenize_audio.main(argv_seconds), capsys, "--batch-seconds must be positive")
    monkeypatch.setenv("JAXSLM_HUBERT_BUCKET_SECONDS", "0.5")
    argv_seconds = [*argv, "--batch-seconds", "0.1"]
    _fails(tokenize_audio.main(argv_seconds), capsys, "--batch-seconds 0.1: must be at least 0.5")

    def bad_layer(*args, **kwargs):
        raise jaxslm.JaxslmError("HuBERT layer 99 does not exist; use 0..2")

    monkeypatch.setattr(SpeechTokenizer, "load", bad_layer)
    _fails(tokenize_audio.main(argv), capsys, "HuBERT layer 99")
    assert not (tmp_path / "new").exists()


def test_train_without_a_config_trains_the_tiny_default(monkeypatch):
    """The tiny default ships in the package, so `python -m jaxslm.train` runs anywhere."""
    from jaxslm.training import trainer

    seen = []
    monkeypatch.setattr(
        trainer, "train", lambda cfg: seen.append(cfg) or {"losses": {}, "start_step": 0}
    )
    assert train.main(["budget.max_steps=3"]) == 0
    (cfg,) = seen
    shipped = jaxslm.config.load_config(Path("configs/tiny.yaml"), ["budget.max_steps=3"])
    assert cfg == shipped and cfg.run_dir == "runs/tiny" and cfg.data.build_synthetic


def test_the_commands_print_jaxslm_warnings_plainly(monkeypatch):
    """`warning: MESSAGE` for jaxslm's own warnings (no file, line or source line); other
    packages' warnings keep Python's format."""
    import warnings

    from jaxslm import cli_warnings

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)
    cli_warnings.plain_jaxslm_warnings()
    inside = str(cli_warnings.PACKAGE_DIR / "training" / "trainer.py")
    shown = warnings.formatwarning("budget changed", UserWarning, inside, 292, "self._check()")
    assert shown == "warning: budget changed\n"
    outside = warnings.formatwarning("deprecated", FutureWarning, "/elsewhere/x.py", 3, "x()")
    assert outside.startswith("/elsewhere/x.py:3: FutureWarning: deprecated")
