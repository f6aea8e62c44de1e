"""The unit HiFi-GAN vocoder against an independent PyTorch implementation of the same
architecture: transformers' `SeamlessM4TCodeHifiGan` with the same random weights (see
tests/vocoder_oracle.py for why it is the same network), with and without the duration
predictor and the speaker (and style) embeddings; batches of different lengths against each
utterance alone; the importer's layouts and its refusals."""

import json

import numpy as np
import pytest
import torch
from vocoder_oracle import SeamlessOracle, random_state_dict, textless_config, write_vocoder

from jaxslm.errors import JaxslmError
from jaxslm.hf.vocoder_import import load_code_hifigan
from jaxslm.speech.vocoder import UnitVocoder, batches, bucket_length

UNITS = 20
LENGTHS = (5, 13, 29)  # three buckets once durations spread them


@pytest.mark.parametrize(
    ("duration", "speakers", "styles"),
    [(False, 0, 0), (True, 0, 0), (True, 3, 0), (False, 3, 2)],
    ids=["plain", "durations", "durations+speaker", "speaker+style"],
)
def test_vocoder_equals_pytorch_oracle(tmp_path, duration, speakers, styles):
    cfg = textless_config(UNITS, duration, speakers, styles)
    sd = random_state_dict(cfg, seed=7)
    write_vocoder(tmp_path / "vocoder", cfg, sd)
    vocoder = UnitVocoder.load(tmp_path / "vocoder")
    speaker, style = (2 if speakers else 0), (1 if styles else 0)
    oracle = SeamlessOracle(cfg, sd, speaker, style)
    rng = np.random.default_rng(0)
    units = [rng.integers(0, UNITS, n) for n in LENGTHS]

    batched = vocoder.vocode(units, speaker=speaker, style=style)
    for sequence, wave in zip(units, batched, strict=True):
        expected = oracle.wave(sequence)
        assert wave.shape == expected.shape
        assert expected.std() > 0.1 and np.abs(expected).max() < 1  # tanh's bend is reached
        np.testing.assert_allclose(wave, expected, atol=1e-5, rtol=0)
        if duration and speakers:  # one case is enough: the padding masks are shared code
            alone = vocoder.vocode([sequence], speaker=speaker, style=style)[0]
            np.testing.assert_allclose(wave, alone, atol=1e-5, rtol=0)
    if duration:
        predicted = vocoder.durations(units)
        for sequence, frames in zip(units, predicted, strict=True):
            np.testing.assert_array_equal(frames, oracle.durations(sequence))
        assert len(np.unique(np.concatenate(predicted))) >= 3  # the test spreads durations


def test_given_durations_repeat_units(tmp_path):
    cfg = textless_config(UNITS, duration=True)
    sd = random_state_dict(cfg, seed=5)
    write_vocoder(tmp_path / "vocoder", cfg, sd)
    vocoder = UnitVocoder.load(tmp_path / "vocoder")
    without = {k: v for k, v in sd.items() if not k.startswith("dur_predictor.")}
    plain = SeamlessOracle(textless_config(UNITS, duration=False), without)
    units, frames = np.array([3, 7, 1]), np.array([2, 1, 4])
    wave = vocoder.vocode([units], [frames])[0]
    np.testing.assert_allclose(wave, plain.wave(np.repeat(units, frames)), atol=1e-5, rtol=0)


def test_weight_norm_layouts_and_safetensors_load_the_same(tmp_path):
    from safetensors.torch import save_file

    cfg = textless_config(UNITS, duration=True, speakers=2)
    sd = random_state_dict(cfg, seed=3)
    write_vocoder(tmp_path / "old", cfg, sd)
    parametrized = {}
    for name, value in sd.items():
        name = name.replace(".weight_g", ".parametrizations.weight.original0")
        parametrized[name.replace(".weight_v", ".parametrizations.weight.original1")] = value
    write_vocoder(tmp_path / "new", cfg, parametrized)
    folded = {}
    for name, value in sd.items():
        if name.endswith(".weight_g"):
            continue
        if name.endswith(".weight_v"):
            stem = name[: -len(".weight_v")]
            folded[f"{stem}.weight"] = torch._weight_norm(value, sd[f"{stem}.weight_g"], 0)
        else:
            folded[name] = value
    (tmp_path / "st").mkdir()
    (tmp_path / "st" / "vocoder_config.json").write_text(json.dumps(cfg))
    save_file(folded, tmp_path / "st" / "generator.safetensors")
    (tmp_path / "st" / "speakers.txt").write_text("ana\nbo\n")
    units = [np.arange(9) % UNITS]
    waves = [UnitVocoder.load(tmp_path / k).vocode(units, speaker=1)[0] for k in ("old", "new")]
    safetensors = UnitVocoder.load(tmp_path / "st")
    np.testing.assert_array_equal(waves[0], waves[1])
    speaker = safetensors.speaker_id("bo")
    np.testing.assert_allclose(safetensors.vocode(units, speaker=speaker)[0], waves[0], atol=1e-6)
    (tmp_path / "st" / "speakers.txt").write_text("1088\n0\n")  # speakers named by numbers
    numbered = UnitVocoder.load(tmp_path / "st")
    assert [numbered.speaker_id(name) for name in ("1088", "0", "1")] == [0, 1, 1]


def _refusal(tmp_path, cfg, sd, match, weights_name="generator.pt"):
    directory = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(cfg))
    torch.save(sd, directory / weights_name)
    with pytest.raises(JaxslmError, match=match):
        load_code_hifigan(directory)


def test_unknown_layouts_are_refused_in_one_line(tmp_path):
    cfg = textless_config(UNITS, duration=True)
    sd = random_state_dict(cfg, seed=2)
    extra = {**sd, "f0_quant_embed.weight": torch.zeros(4, 16)}
    _refusal(tmp_path, cfg, {"generator": extra}, "f0_quant_embed.weight are not part")
    missing = {k: v for k, v in sd.items() if not k.startswith("dur_predictor.proj")}
    _refusal(tmp_path, cfg, missing, "dur_predictor.proj.(weight|bias) is missing")
    _refusal(tmp_path, {**cfg, "num_embeddings": 30}, sd, "units has shape .20, 16.")
    _refusal(tmp_path, {**cfg, "f0": True}, sd, "F0-conditioned")
    _refusal(tmp_path, {**cfg, "resblock_kernel_sizes": [3, 6]}, sd, "even width")
    params = {**cfg["dur_predictor_params"], "var_pred_kernel_size": 5}
    _refusal(tmp_path, {**cfg, "dur_predictor_params": params}, sd, "only 3 keeps")
    _refusal(tmp_path, {**cfg, "model_in_dim": 80}, sd, "model_in_dim=80")
    _refusal(tmp_path, {k: v for k, v in cfg.items() if k != "num_embeddings"}, sd, "no 'num_emb")
    _refusal(tmp_path, cfg, {"generator": sd, "opt": torch.nn.Linear(2, 2)}, "weights-only")
    two = tmp_path / "two"
    two.mkdir()
    (two / "a.json").write_text("{}")
    (two / "b.json").write_text("{}")
    with pytest.raises(JaxslmError, match="one vocoder JSON config"):
        load_code_hifigan(two)
    for error in (JaxslmError,):
        with pytest.raises(error, match="no such folder"):
            load_code_hifigan(tmp_path / "absent")


def test_buckets_compile_few_shapes():
    assert [bucket_length(n) for n in (1, 16, 17, 33, 49, 65, 97, 129)] == [
        16,
        16,
        32,
        48,
        64,
        96,
        128,
        192,
    ]
    lengths = [40, 3, 500, 41, 17, 45]
    groups = list(batches(lengths, batch_frames=128))
    assert sorted(i for group, _, _ in groups for i in group) == list(range(6))
    for group, width, rows in groups:
        assert all(bucket_length(lengths[i]) == width for i in group)
        assert len(group) <= rows and (rows & (rows - 1)) == 0
        assert rows * width <= max(128, width)
