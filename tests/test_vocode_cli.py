"""`python -m jaxslm.vocode` (lines of generate and tokenize_audio to wavs; skipped lines; an
interrupted run resumed against an uninterrupted one) and `python -m jaxslm.generate --vocoder`
(wav lengths restated from the toy renderer's rule)."""

import json

import numpy as np
import pytest
import soundfile
from vocoder_oracle import random_state_dict, textless_config, write_vocoder

from jaxslm import generate, vocode
from jaxslm.speech import vocode_lines
from jaxslm.speech.vocoder import UnitVocoder

UNITS = 20
LINES = [
    {"prompt": "a.wav", "sample": 0, "units": [3, 4, 4, 9], "units_str": "3 4 4 9"},
    {"prompt": "a.wav", "sample": 1, "units_str": "1 2 3 5 8 13"},
    {"file_name": "sub/b.flac", "units": [7, 2, 11], "duration": [3, 1, 2]},
    {"file_name": "c.wav", "units": [0, 19, 5, 6, 7]},
]
BAD = ["not json", {"file_name": "d.wav", "units": [1, 25]}, {"file_name": "e.wav", "units": []}]
NAMES = ["a-0.wav", "a-1.wav", "sub/b.wav", "c.wav"]


def _units_file(path):
    rows = [*LINES[:2], BAD[0], *LINES[2:], *BAD[1:]]
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def vocoder_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("vocoder") / "tiny"
    cfg = textless_config(UNITS, duration=True)
    write_vocoder(directory, cfg, random_state_dict(cfg, seed=11))
    return directory


def _units(line):
    return np.asarray(line.get("units") or [int(u) for u in line["units_str"].split()])


def test_vocode_cli_writes_each_line_as_alone_and_skips_bad_ones(vocoder_dir, tmp_path, capsys):
    units = _units_file(tmp_path / "units.jsonl")
    out = tmp_path / "wavs"
    argv = ["--units", str(units), "--vocoder", str(vocoder_dir), "--out", str(out)]
    assert vocode.main([*argv, "--no-progress"]) == 0
    assert "4 wav(s) written, 3 line(s) skipped" in capsys.readouterr().out
    model = UnitVocoder.load(vocoder_dir)
    for line, name in zip(LINES, NAMES, strict=True):
        wave, rate = soundfile.read(out / name, dtype="float32")
        assert rate == 16000
        np.testing.assert_allclose(wave, model.vocode([_units(line)])[0], atol=1e-6, rtol=0)
    errors = [json.loads(e)["error"] for e in (out / "errors.jsonl").read_text().splitlines()]
    assert len(errors) == 3 and "not JSON" in errors[0] and "outside [0, 20)" in errors[1]
    assert vocode.main([*argv, "--no-progress"]) == 0
    assert "0 wav(s) written, 3 line(s) skipped, 4 already done" in capsys.readouterr().out


def test_interrupted_vocode_resumes_to_the_uninterrupted_result(
    vocoder_dir, tmp_path, monkeypatch, capsys
):
    units = _units_file(tmp_path / "units.jsonl")
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    common = ["--units", str(units), "--vocoder", str(vocoder_dir), "--no-progress"]
    assert vocode.main([*common, "--out", str(whole), "--durations", "once"]) == 0
    model = UnitVocoder.load(vocoder_dir)
    calls = []

    def failing_vocode(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return UnitVocoder.vocode(model, *args, **kwargs)

    monkeypatch.setattr(model, "vocode", failing_vocode)
    monkeypatch.setattr(vocode_lines, "CHUNK_LINES", 1)
    with pytest.raises(KeyboardInterrupt):
        vocode_lines.vocode_file(units, lambda: model, resumed, "once", progress=False)
    assert len(list(resumed.rglob("*.wav"))) == 2
    monkeypatch.undo()
    assert vocode.main([*common, "--out", str(resumed), "--durations", "once"]) == 0
    assert "2 wav(s) written, 3 line(s) skipped, 2 already done" in capsys.readouterr().out
    for name in NAMES:  # other batch shapes: equal up to float32 rounding
        wave, expected = (soundfile.read(d / name, dtype="float32")[0] for d in (resumed, whole))
        np.testing.assert_allclose(wave, expected, atol=1e-6, rtol=0)
    manifest = [json.loads(line) for line in (resumed / "manifest.jsonl").read_text().splitlines()]
    assert sorted(m["file_name"] for m in manifest) == sorted(NAMES)


def test_generate_writes_toy_wavs(llama_ckpt, tmp_path, capsys):
    from jaxslm.speech.toy_vocoder import DEFAULT_FRAMES, FRAME_SECONDS, SAMPLE_RATE

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"file_name": "p.wav", "units": [1, 5, 9]}) + "\n")
    out, audio = tmp_path / "out.jsonl", tmp_path / "audio"
    argv = ["--checkpoint", str(llama_ckpt), "--out", str(out), "--no-progress"]
    argv += ["--prompt-units", str(prompts), "--modality", "speech", "--max-new-tokens", "8"]
    assert generate.main([*argv, "--vocoder", "toy"]) == 2
    assert "--vocoder and --audio-out go together" in capsys.readouterr().err
    clash = tmp_path / "clash.jsonl"
    clash.write_text(
        "".join(
            json.dumps({"file_name": f"p{s}", "units": [1, 5]}) + "\n" for s in (".wav", ".flac")
        )
    )
    clash_argv = [*argv, "--prompt-units", str(clash), "--vocoder", "toy"]
    assert generate.main([*clash_argv, "--audio-out", str(tmp_path / "clash")]) == 2
    assert "would both be vocoded to p-0.wav" in capsys.readouterr().err
    per_unit = DEFAULT_FRAMES * round(FRAME_SECONDS * SAMPLE_RATE)  # the toy rule, restated
    for prompt_too in (False, True):
        extra = ["--audio-prompt"] if prompt_too else []
        assert (
            generate.main(
                [*argv, "--n", "2", "--vocoder", "toy", "--audio-out", str(audio), *extra]
            )
            == 0
        )
        records = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["audio"] for r in records] == ["p-0.wav", "p-1.wav"]
        for record in records:
            wave, rate = soundfile.read(audio / record["audio"], dtype="float32")
            units = len(record["units"]) + (3 if prompt_too else 0)
            assert rate == SAMPLE_RATE and wave.size == units * per_unit
