"""Prompt layouts (checked against slamkit's strings through the HF tokenizer), prompt cutting,
and `python -m jaxslm.generate` end to end with its bad inputs."""

import json

import numpy as np
import pytest

from jaxslm import generate
from jaxslm.errors import JaxslmError
from jaxslm.generation.prompts import Piece, PromptBuilder, cut_units
from jaxslm.model_dir import TOKENIZER_DIR, load_tokenizer, read_metadata
from jaxslm.vocab import SpeechVocab


def test_prompts_equal_slamkit_strings(llama_ckpt):
    from transformers import AutoTokenizer

    _, vocab, _ = read_metadata(llama_ckpt)
    hf = AutoTokenizer.from_pretrained(llama_ckpt / TOKENIZER_DIR)
    builder = PromptBuilder(vocab, load_tokenizer(llama_ckpt, vocab))
    speech = Piece("speech", units=(3, 4, 7))
    text = Piece("text", text="the cat sat")
    units = "<Un3><Un4><Un7>"
    cases = {
        ((speech,), "speech"): f"{units}<speech>",
        ((speech,), "text"): f"<speech>{units}<text>",
        ((text,), "speech"): "<text>the cat sat<speech>",
        ((text, speech), "text"): f"<text>the cat sat<speech>{units}<text>",
    }
    for (pieces, output), string in cases.items():
        assert builder.ids(list(pieces), output) == hf(string)["input_ids"], string
    generated = hf(f"{units}<text> the dog")["input_ids"][1:]
    assert builder.units_of(generated) == [3, 4, 7]
    assert builder.text_of(generated) == hf.decode(hf(" the dog")["input_ids"][1:])


def test_speech_only_prompts_and_cutting():
    builder = PromptBuilder(SpeechVocab.speech_only(10), None)
    assert builder.ids([Piece("speech", units=(0, 9))], "speech") == [1, 2, 11]
    with pytest.raises(JaxslmError, match="speech-only model reads and writes speech"):
        builder.ids([Piece("speech", units=(0,))], "text")
    assert cut_units([5, 6, 7, 8], [25, 25, 25, 25], 0.04, 2.0) == [5, 6]
    assert cut_units([5, 6], [100, 1], 0.04, 3.0) == [5]
    assert cut_units([5, 6], [1, 1], 0.04, None) == [5, 6]


def test_cli_writes_continuations_and_refuses_bad_input(llama_ckpt, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    lines = [
        {"file_name": f"{i}.wav", "units": [1, 5, 9, 2][: i + 2], "duration": [2] * (i + 2)}
        for i in range(3)
    ]
    prompts.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "out.jsonl"
    base = [
        "--checkpoint",
        str(llama_ckpt),
        "--out",
        str(out),
        "--no-progress",
        "--max-new-tokens",
        "6",
    ]
    argv = [*base, "--prompt-units", str(prompts), "--modality", "speech", "--n", "2"]
    assert generate.main(argv) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["prompt"], r["sample"]) for r in records] == [
        (f"{i}.wav", s) for i in range(3) for s in range(2)
    ]
    assert all(r["units_str"] == " ".join(map(str, r["units"])) for r in records)
    assert all(
        r["settings"]["top_k"] == 25 and r["settings"]["temperature"] == 0.8 for r in records
    )
    text_argv = [*base, "--prompt-text", "the cat", "--modality", "text", "--temperature", "0"]
    assert generate.main(text_argv) == 0
    assert isinstance(json.loads(out.read_text())["text"], str)
    speech = ["--prompt-units", str(prompts), "--modality", "speech"]
    uneven = tmp_path / "uneven.jsonl"
    uneven.write_text(json.dumps({**lines[0], "duration": [200]}) + "\n")
    not_json = tmp_path / "not_json.jsonl"
    not_json.write_text(json.dumps(lines[0]) + "\n{units: [1]}\n")
    bad = [
        (["--prompt-units", str(tmp_path / "none.jsonl"), "--modality", "speech"], "no such file"),
        (["--prompt-units", str(not_json), "--modality", "speech"], f"{not_json}:2: not valid"),
        (["--prompt-audio", str(tmp_path), "--modality", "speech"], "needs --hubert"),
        (
            ["--prompt-text", "x", "--modality", "speech", "--max-new-tokens", "100000"],
            "passes the model's context",
        ),
        (["--prompt-units", str(uneven), "--modality", "speech"], f"{uneven}:1: 'duration' has 1"),
        ([*speech, "--prompt-seconds", "-2"], "--prompt-seconds -2.0"),
        ([*speech, "--frame-seconds", "0"], "--frame-seconds 0.0"),
    ]
    for extra, message in bad:
        assert generate.main([*base[:-2], *extra]) == 2
        assert message in capsys.readouterr().err
    assert np.all([r["prompt_ids"][-1] for r in records])


def test_runs_with_different_seeds_share_no_batch(llama_ckpt, tmp_path):
    """Each batch samples from (seed, batch): seed 1 is not seed 0 shifted by a batch."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"file_name": "a.wav", "units": [1, 5, 9, 2]}) + "\n")
    samples = {}
    for seed in (0, 1):
        out = tmp_path / f"seed{seed}.jsonl"
        argv = ["--checkpoint", str(llama_ckpt), "--prompt-units", str(prompts), "--n", "4"]
        argv += ["--batch-size", "1", "--modality", "speech", "--seed", str(seed)]
        assert (
            generate.main([*argv, "--max-new-tokens", "8", "--out", str(out), "--no-progress"]) == 0
        )
        samples[seed] = [json.loads(line)["units"] for line in out.read_text().splitlines()]
    assert len({tuple(u) for u in samples[0]}) == 4
    assert not {tuple(u) for u in samples[0]} & {tuple(u) for u in samples[1]}
