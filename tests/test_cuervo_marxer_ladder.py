"""Cuervo & Marxer's ladder: presets, configs/cuervo_marxer recipes and the sweep family against
their published configs and batch arithmetic, restated here from github
tiagoCuervo/slm_scaling (configs/scaling/*.json, their README and configs/scaling/README.md)."""

import math
from pathlib import Path

import numpy as np
import pytest

from jaxslm.config import load_config
from jaxslm.models.presets import speech_model_config
from jaxslm.scaling.flops import nanogpt_flops_per_token
from jaxslm.scaling.sweep import SweepConfig, plan_runs

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# size: dim, n_layers, n_heads, sequences per update, accumulation, warmup, max_steps (configs)
THEIR_CONFIGS = {
    "20m": (512, 6, 8, 64, 1, 1000, 829800),
    "85m": (768, 12, 12, 128, 2, 1000, 414900),
    "155m": (1024, 12, 16, 256, 4, 1000, 124450),
    "309m": (1024, 24, 16, 252, 7, 588, 58850),
    "823m": (2048, 16, 32, 608, 32, 660, 66050),
}
THEIR_TOKENS_PER_UPDATE = {
    "20m": 131200,
    "85m": 262400,
    "155m": 524800,
    "309m": 516600,
    "823m": 1246400,
}
THEIR_CURVES = {  # README: curve max_steps
    "20m": (5050, 10100, 15750, 165950, 331900, 497900, 663850, 829800),
    "309m": (5850, 9550, 19100, 38250, 58850),
}


def _their_mlp(dim: int, multiple_of: int = 256) -> int:
    """FeedForward's hidden width with hidden_dim unset (src/slm/model.py)."""
    hidden = int(2 * (4 * dim) / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


@pytest.mark.parametrize("size", THEIR_CONFIGS)
def test_presets_are_their_shapes(size):
    dim, layers, heads, *_ = THEIR_CONFIGS[size]
    cfg = speech_model_config(size, 500)
    assert (cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads) == (
        dim,
        layers,
        heads,
        heads,
    )
    assert cfg.head_dim * heads == dim and cfg.intermediate_size == _their_mlp(dim)
    assert cfg.tie_word_embeddings and cfg.max_position_embeddings == 2050
    assert (cfg.rope_theta, cfg.rms_norm_eps, cfg.vocab_size) == (10000.0, 1e-5, 502)


@pytest.mark.parametrize("size", THEIR_CONFIGS)
def test_recipes_match_their_configs(size):
    _, _, _, sequences, accumulation, warmup, max_steps = THEIR_CONFIGS[size]
    cfg = load_config(CONFIGS / "cuervo_marxer" / f"{size}.yaml")
    assert cfg.tokens_per_step == sequences * 2050 == THEIR_TOKENS_PER_UPDATE[size]
    assert (cfg.data.seq_len, cfg.data.micro_batches) == (2050, accumulation)
    assert cfg.schedule.warmup(max_steps) == warmup and cfg.schedule.decay == "cosine"
    assert cfg.budget.max_steps == max_steps and cfg.seed == 1337
    o = cfg.optimizer
    assert (o.lr, o.min_lr, o.b1, o.b2, o.weight_decay, o.clip_norm) == (
        5e-4,
        5e-5,
        0.9,
        0.95,
        0.1,
        1.0,
    )
    assert (cfg.model.param_dtype, cfg.model.dtype) == ("float32", "bfloat16")
    assert (cfg.vocab.mode, cfg.vocab.num_units, cfg.vocab.speech_layout) == (
        "speech-only",
        500,
        "cuervo-marxer",
    )


def test_sweep_family_plans_their_curve(tmp_path):
    sweep = SweepConfig(
        base=str(CONFIGS / "cuervo_marxer" / "20m.yaml"),
        out=str(tmp_path / "sweep"),
        family="cuervo-marxer",
        sizes=("20m", "309m"),
        curve_points=3,
    )
    runs = plan_runs(sweep)
    for size in ("20m", "309m"):
        planned = [run for run in runs if run.name.startswith(size)]
        assert sorted(run.steps for run in planned) == list(THEIR_CURVES[size][:3])
        for run in planned:
            cfg = load_config(sweep.base, list(run.overrides))
            assert cfg.tokens_per_step == THEIR_TOKENS_PER_UPDATE[size]
            assert cfg.budget.max_steps == run.steps
            assert cfg.schedule.warmup(run.steps) == THEIR_CONFIGS[size][5]
            assert cfg.model.hidden_size == THEIR_CONFIGS[size][0]
    explicit = SweepConfig(**{**vars(sweep), "sizes": ("85m",), "steps": (7.0,)})
    assert [run.steps for run in plan_runs(explicit)] == [7]


def test_their_mfu_convention_against_a_torch_model():
    """6 N + 12 L H Q T with N the parameters of their architecture built in transformers
    (tied: the table counted once)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = speech_model_config("20m", 500)
    hf = LlamaConfig(
        vocab_size=502,
        hidden_size=512,
        intermediate_size=_their_mlp(512),
        num_hidden_layers=6,
        num_attention_heads=8,
        tie_word_embeddings=True,
    )
    with __import__("torch").device("meta"):
        model = LlamaForCausalLM(hf)
    parameters = sum(p.numel() for p in model.parameters())
    expected = 6 * parameters + 12 * 6 * 8 * 64 * 2050
    assert math.isclose(nanogpt_flops_per_token(cfg, 2050), expected)


def test_their_layout_in_the_pipeline(tmp_path):
    """vocab.speech_layout=cuervo-marxer gives the batches of slamkit's layout with every id
    moved by the two rules (their configs/scaling/README.md: units 0-499, EOS 500; slamkit's
    unit_tokeniser: `<S>` 1, unit i at i + 2)."""
    from jaxslm.data.pipeline import make_pipeline
    from jaxslm.data.synthetic import SyntheticConfig
    from jaxslm.data.synthetic_corpus import build_synthetic
    from jaxslm.training.setup import pipeline_config, plan_run

    config = SyntheticConfig(num_utterances=40, num_text_documents=10, num_validation=4)
    corpus = build_synthetic(tmp_path / "toy", config)
    batches = {}
    for layout in ("slamkit", "cuervo-marxer"):
        overrides = [f"data.corpus={corpus}", "vocab.mode=speech-only", "budget.max_steps=1"]
        cfg = load_config(None, [*overrides, f"vocab.speech_layout={layout}"])
        plan = plan_run(cfg)
        pipeline = make_pipeline(plan.corpus, None, plan.vocab, pipeline_config(cfg, "train", None))
        batches[layout] = next(iter(pipeline))
    assert plan.model.vocab_size == 102 and (plan.vocab.bos_id, plan.vocab.pad_id) == (100, 101)
    slamkit, theirs = batches["slamkit"], batches["cuervo-marxer"]
    for key in ("segment_ids", "positions", "loss_mask"):
        np.testing.assert_array_equal(slamkit[key], theirs[key])
    real = slamkit["segment_ids"] > 0
    for key in ("tokens", "targets"):
        moved = np.where(slamkit[key] == 1, 100, slamkit[key] - 2)
        np.testing.assert_array_equal(theirs[key][real], moved[real])
