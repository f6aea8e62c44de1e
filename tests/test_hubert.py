"""HuBERT encoder and batched features against transformers' HubertModel (PyTorch, CPU)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax import nnx
from tiny_models import randomize
from transformers import HubertConfig as HFHubertConfig
from transformers import HubertModel

from jaxslm.errors import JaxslmError
from jaxslm.hf.hubert_import import load_hubert
from jaxslm.hf.safetensors_io import WeightStore
from jaxslm.models.hubert import HubertConfig, abstract_hubert
from jaxslm.speech.hubert_features import HubertFeatures

TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
    conv_dim=(16, 16, 16, 16),
    conv_kernel=(10, 3, 3, 2),
    conv_stride=(5, 2, 2, 2),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
)
BASE = dict(TINY)
STABLE = dict(
    TINY,
    feat_extract_norm="layer",
    do_stable_layer_norm=True,
    conv_bias=True,
    num_conv_pos_embeddings=15,
    hidden_act="gelu_new",
    feat_proj_layer_norm=False,
)
BATCH_NORM = dict(TINY, conv_pos_batch_norm=True)
# slprl/mhubert-base-25hz: HuBERT-base plus one stride-2 conv (TWIST's 4th iteration) and
# BatchNorm instead of weight norm before the positional conv (transformers PR #34389).
MHUBERT_25HZ = dict(
    conv_kernel=(10, 3, 3, 3, 3, 2, 2, 2),
    conv_stride=(5, 2, 2, 2, 2, 2, 2, 2),
    conv_dim=(512,) * 8,
    conv_pos_batch_norm=True,
)
WEIGHT_NORM_RENAMES = {
    "parametrizations.weight.original0": "weight_g",
    "parametrizations.weight.original1": "weight_v",
}


def build_hf(config: dict, seed: int) -> HubertModel:
    """A HubertModel whose every parameter and BatchNorm statistic is random."""
    torch.manual_seed(seed)
    model = HubertModel(HFHubertConfig(**config)).eval()
    randomize(model, seed)
    batch_norm = model.encoder.pos_conv_embed.batch_norm
    if batch_norm is not None:
        generator = torch.Generator().manual_seed(seed)
        width = batch_norm.running_mean.shape[0]
        batch_norm.running_mean.copy_(0.1 * torch.randn(width, generator=generator))
        batch_norm.running_var.copy_(0.5 + torch.rand(width, generator=generator))
    return model


def save_hf(config: dict, directory, seed: int) -> HubertModel:
    model = build_hf(config, seed)
    model.save_pretrained(directory)
    return model


def audio(seconds: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(round(seconds * 16000)).astype(np.float32)


def hf_hidden_states(model: HubertModel, wave: np.ndarray, pad: int = 0):
    with torch.no_grad():
        out = model(F.pad(torch.from_numpy(wave)[None], (pad, pad)), output_hidden_states=True)
    return [h[0].numpy() for h in out.hidden_states], out.last_hidden_state[0].numpy()


def jax_layers(encoder, wave: np.ndarray, layers) -> list[np.ndarray]:
    """The encoder's output for each of `layers` on one utterance, in one compiled call."""
    graphdef, state = nnx.split(encoder)

    @jax.jit
    def run(state, waves, lengths):
        model = nnx.merge(graphdef, state)
        return [model(waves, lengths, layer) for layer in layers]

    outs = run(state, jnp.asarray(wave)[None], jnp.asarray([len(wave)]))
    return [np.asarray(o[0]) for o in outs]


@pytest.fixture(scope="module")
def base_hf(tmp_path_factory):
    directory = tmp_path_factory.mktemp("hubert_base")
    return directory, save_hf(BASE, directory, seed=11)


@pytest.fixture(scope="module")
def batch_norm_hf(tmp_path_factory):
    directory = tmp_path_factory.mktemp("hubert_bn")
    return directory, save_hf(BATCH_NORM, directory, seed=13)


def test_base_layout_layers_match_transformers(base_hf):
    directory, model = base_hf
    saved = WeightStore(directory).names()
    assert "encoder.pos_conv_embed.conv.parametrizations.weight.original0" in saved
    norm = model.encoder.pos_conv_embed.conv.parametrizations.weight
    assert not torch.allclose(norm.original0, norm.original1.norm(dim=(0, 1), keepdim=True))
    wave = audio(3.0, seed=1)
    hidden, last = hf_hidden_states(model, wave)
    ours = jax_layers(load_hubert(directory), wave, [0, 1, 2, None])
    for got, want in zip(ours, [*hidden, last], strict=True):
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_stable_layout_layers_match_transformers(tmp_path):
    model = save_hf(STABLE, tmp_path, seed=12)
    wave = audio(2.5, seed=2)
    hidden, last = hf_hidden_states(model, wave)
    assert np.abs(hidden[-1] - last).max() > 0.1  # the final LayerNorm is only in last_hidden
    ours = jax_layers(load_hubert(tmp_path), wave, [0, 1, 2, None])
    for got, want in zip(ours, [*hidden, last], strict=True):
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_final_norm_reads_the_stable_layouts_last_layer_as_transformers_4_did(tmp_path):
    """transformers 4.x put the stable layout's final LayerNorm into hidden_states[L] (equal
    to last_hidden_state there); transformers 5 leaves it out. `final_norm` gives the former."""
    model = save_hf(STABLE, tmp_path, seed=14)
    encoder = load_hubert(tmp_path)
    waves = [audio(s, seed=40 + i) for i, s in enumerate([1.1, 0.6])]
    plain = HubertFeatures(encoder, layer=2, batch_seconds=4.0).extract(waves)
    normed = HubertFeatures(encoder, layer=2, batch_seconds=4.0, final_norm=True).extract(waves)
    for wave, without, with_norm in zip(waves, plain, normed, strict=True):
        hidden, last = hf_hidden_states(model, wave, pad=40)
        np.testing.assert_allclose(without, hidden[2], atol=1e-4, rtol=0)
        np.testing.assert_allclose(with_norm, last, atol=1e-4, rtol=0)
        assert np.abs(with_norm - without).max() > 0.1


@pytest.mark.parametrize("layout, layer", [("stable", 1), ("base", 2)])
def test_final_norm_is_refused_where_no_layer_norm_follows(layout, layer, base_hf, tmp_path):
    if layout == "stable":
        save_hf(STABLE, tmp_path, seed=15)
        directory = tmp_path
    else:
        directory, _ = base_hf
    with pytest.raises(JaxslmError, match=f"--final-norm.*layer {layer} of a {layout}-layout"):
        HubertFeatures(load_hubert(directory), layer=layer, final_norm=True)


def test_bin_weight_g_and_ctc_prefix(base_hf, tmp_path):
    """pytorch_model.bin with `hubert.` keys and the old weight_g / weight_v names."""
    directory, model = base_hf
    state = {}
    for name, tensor in model.state_dict().items():
        for new, old in WEIGHT_NORM_RENAMES.items():
            name = name.replace(new, old)
        state[f"hubert.{name}"] = tensor
    state["lm_head.weight"] = torch.zeros(5, 32)
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text((directory / "config.json").read_text())
    wave = audio(1.0, seed=3)
    hidden, _ = hf_hidden_states(model, wave)
    (ours,) = jax_layers(load_hubert(tmp_path), wave, [2])
    np.testing.assert_allclose(ours, hidden[2], atol=1e-4, rtol=0)


def test_batched_features_equal_one_by_one(batch_norm_hf):
    """Different lengths in padded batches give each utterance its lone-run features."""
    directory, model = batch_norm_hf
    features = HubertFeatures(
        load_hubert(directory), layer=1, batch_seconds=4.5, bucket_seconds=0.25
    )
    # padded shapes: [3, 24000] (1.3, 1.2, 1.1 s), [2, 12000] (0.7, 0.55 s), [1, 4000] (0.02 s)
    seconds = [1.3, 0.7, 1.2, 0.02, 1.1, 0.55]
    waves = [audio(s, seed=i) for i, s in enumerate(seconds)]
    got = features.extract(waves)
    for wave, ours in zip(waves, got, strict=True):
        want = hf_hidden_states(model, wave, pad=40)[0][1]
        assert ours.dtype == np.float32
        assert ours.shape == want.shape == (features.frames(len(wave)), 32)
        np.testing.assert_allclose(ours, want, atol=1e-4, rtol=0)


def test_bucket_size_from_the_environment_changes_nothing(batch_norm_hf, monkeypatch):
    """JAXSLM_HUBERT_BUCKET_SECONDS (the GPU check's alternative to the device's bucket size)
    pads these waves into one shape; each still gets its lone-utterance features."""
    monkeypatch.setenv("JAXSLM_HUBERT_BUCKET_SECONDS", "2")
    directory, model = batch_norm_hf
    features = HubertFeatures(load_hubert(directory), layer=1, batch_seconds=8.0)
    waves = [audio(s, seed=20 + i) for i, s in enumerate([1.3, 0.02, 1.9, 0.7])]
    assert [width for _, width in features._batches([len(w) + 80 for w in waves])] == [32000]
    for wave, ours in zip(waves, features.extract(waves), strict=True):
        want = hf_hidden_states(model, wave, pad=40)[0][1]
        np.testing.assert_allclose(ours, want, atol=1e-4, rtol=0)


def test_a_second_extractor_of_the_model_compiles_nothing(batch_norm_hf):
    """The encoder's programs are shared by every HubertFeatures of one model: a second one
    (as each SpeechTokenizer.load makes) runs waves of the same shapes without compiling."""
    from compiles import backend_compiles

    directory, model = batch_norm_hf
    encoder = load_hubert(directory)
    waves = [audio(s, seed=30 + i) for i, s in enumerate([0.9, 0.3])]
    HubertFeatures(encoder, layer=1, batch_seconds=4.0).extract(waves)
    with backend_compiles() as compiled:
        got = HubertFeatures(encoder, layer=1, batch_seconds=4.0).extract(waves[::-1])
    assert compiled == []
    want = hf_hidden_states(model, waves[1], pad=40)[0][1]
    np.testing.assert_allclose(got[0], want, atol=1e-4, rtol=0)


def test_mhubert_25hz_shape_matches_transformers(tmp_path):
    """The full mHuBERT-25Hz shape (random weights): layer 11 on a 2 s utterance."""
    model = save_hf(MHUBERT_25HZ, tmp_path, seed=14)
    wave = audio(2.0, seed=4)
    want = hf_hidden_states(model, wave, pad=40)[0][11]
    features = HubertFeatures(load_hubert(tmp_path), layer=11)
    (got,) = features.extract([wave])
    assert got.shape == (50, 768) == (features.frames(len(wave)), 768)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_frame_seconds_and_frames():
    base = HubertConfig.from_hf(HFHubertConfig().to_dict())
    mhubert = HubertConfig.from_hf(HFHubertConfig(**MHUBERT_25HZ).to_dict())
    assert base.frame_seconds == pytest.approx(0.02)
    assert mhubert.frame_seconds == pytest.approx(0.04)
    model = HubertModel(HFHubertConfig(**MHUBERT_25HZ, num_hidden_layers=1))
    for n in (0, 399, 400, 639, 640, 1040, 32000, 48123):
        want = int(model._get_feat_extract_output_lengths(torch.tensor(n)))
        assert mhubert.num_frames(n) == max(want, 0)
    features = HubertFeatures(abstract_hubert(mhubert), layer=11)
    assert features.frame_seconds == pytest.approx(0.04)
    assert features.frames(32000) == mhubert.num_frames(32080) == 50


@pytest.mark.parametrize(
    "change, field",
    [
        ({"feat_extract_norm": "batch"}, "feat_extract_norm"),
        ({"hidden_act": "swish"}, "hidden_act"),
        ({"feat_extract_activation": "tanh"}, "feat_extract_activation"),
        ({"conv_stride": [5, 2]}, "conv_stride"),
        ({"model_type": "wav2vec2"}, "model_type"),
        ({"adapter_attn_dim": 16}, "adapter_attn_dim"),
        ({"num_attention_heads": 5}, "num_attention_heads"),
    ],
)
def test_unsupported_configs_are_refused(tmp_path, change, field):
    hf = {**HFHubertConfig().to_dict(), **change}
    (tmp_path / "config.json").write_text(json.dumps(hf))
    with pytest.raises(JaxslmError, match=field):
        load_hubert(tmp_path)
