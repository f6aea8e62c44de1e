"""The DPO objective against TRL's DPOTrainer (the oracle): a tiny speech-only Llama is
exported to HF twice (the reference, and a perturbed policy), both sides score the same pairs,
built by slamkit's DPO `tokenize_row` rule restated here, and the loss, the rewards and metrics
and every parameter gradient must agree within float32 tolerance.

TRL 1.16's `sigmoid` loss has no label smoothing; jaxslm smooths as conservative DPO,
(1 - e) L(x) + e L(-x). That equals
2 (1 - e) x TRL's `sigmoid` - (1 - 2 e) x TRL's `robust` (both at smoothing e), which TRL
computes as a weighted sum of loss types: the oracle for label smoothing.
"""

import jax
import numpy as np
import pytest
from flax import nnx
from trl_oracle import trl_batch, trl_dpo_trainer

from jaxslm.config.dpo_section import DpoSection
from jaxslm.data.preference import PreferencePair, Side
from jaxslm.data.preference_batches import (
    EncodedPairs,
    PreferenceBatches,
    RowLayout,
    SequenceRules,
)
from jaxslm.data.preference_store import PreferenceSet, preference_arrays
from jaxslm.hf.param_map import param_maps
from jaxslm.training.dpo import dpo_means, dpo_sums, pair_terms

UNITS = 20
MAX_PROMPT, MAX_COMPLETION = 8, 6


@pytest.fixture(scope="module")
def models(llama_hf, tmp_path_factory):
    """(jaxslm reference model, jaxslm policy params, HF reference, HF policy, tokenizer)."""
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    import jaxslm
    from jaxslm.hf.exporter import export_hf
    from jaxslm.hf.importer import import_hf
    from jaxslm.model_dir import write_checkpoint

    root = tmp_path_factory.mktemp("dpo_models")
    reference_dir = import_hf(llama_hf[0], root / "ref", speech_units=UNITS, mode="speech-only")
    reference = jaxslm.load(reference_dir)
    params = nnx.to_pure_dict(nnx.state(reference.model, nnx.Param))
    keys = iter(jax.random.split(jax.random.key(3), len(jax.tree.leaves(params))))
    policy = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(next(keys), p.shape), params)
    write_checkpoint(root / "policy", policy, reference.config, reference.vocab, {})
    hf = {}
    for name, directory in (("ref", reference_dir), ("policy", root / "policy")):
        export_hf(directory, root / f"hf_{name}")
        hf[name] = AutoModelForCausalLM.from_pretrained(root / f"hf_{name}").float()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(llama_hf[0])
    return reference, policy, hf["ref"], hf["policy"], tokenizer


def random_pairs(count: int, seed: int) -> list[PreferencePair]:
    """Pairs of random units, some longer than the truncation limits."""
    rng = np.random.default_rng(seed)

    def side(low: int, high: int) -> Side:
        return Side(rng.integers(0, UNITS, rng.integers(low, high)).astype(np.int32))

    return [PreferencePair(f"p{i}", side(1, 12), side(1, 9), side(1, 9)) for i in range(count)]


def slamkit_rows(pair: PreferencePair, vocab) -> dict[str, list[int]]:
    """slamkit's SLAMDPOTrainer.tokenize_row (slamkit/trainer/slam_dpo_trainer.py) restated:
    BOS + prompt then its last max_prompt_length ids; completion + EOS then its first
    max_completion_length ids. Speech-only ids: <S> = 1 is BOS and EOS, unit u is u + 2."""
    ids = {
        name: [int(u) + 2 for u in getattr(pair, name).units]
        for name in ("prompt", "chosen", "rejected")
    }
    return {
        "prompt_ids": ([1] + ids["prompt"])[-MAX_PROMPT:],
        "chosen_ids": (ids["chosen"] + [1])[:MAX_COMPLETION],
        "rejected_ids": (ids["rejected"] + [1])[:MAX_COMPLETION],
    }


def jaxslm_side(models, pairs, settings, rows=4, length=64):
    """(mean metrics, per-pair (chosen, rejected) log-probs, gradients of the mean loss)."""
    reference, policy = models[0], models[1]
    graphdef = nnx.graphdef(reference.model)
    ref_params = nnx.to_pure_dict(nnx.state(reference.model, nnx.Param))
    rules = SequenceRules((1,), 1, MAX_PROMPT, MAX_COMPLETION)
    encoded = EncodedPairs(
        PreferenceSet(preference_arrays(pairs)), "speech", reference.vocab, None, rules
    )
    layout = RowLayout(rows, length, len(pairs), settings.share_prompt)
    batch = next(PreferenceBatches(encoded, layout, len(pairs), seed=0, shuffle=False))

    def loss(params):
        sums = dpo_sums(graphdef, params, batch, ref_params, settings)
        return sums["loss"] / sums["pairs"], sums

    grads, sums = jax.grad(loss, has_aux=True)(policy)
    return dpo_means(sums), grads


def trl_side(models, pairs, loss_type, weights, label_smoothing, beta):
    """TRL's loss, metrics and the policy's gradients on the same pairs."""
    reference, _, hf_ref, hf_policy, tokenizer = models
    trainer = trl_dpo_trainer(
        hf_policy, hf_ref, tokenizer, beta, loss_type, weights, label_smoothing
    )
    batch = trl_batch([slamkit_rows(p, reference.vocab) for p in pairs])
    trainer.model.train()
    trainer.model.zero_grad()
    loss = trainer._compute_loss(trainer.model, batch, False)
    loss.backward()
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    grads = {n: p.grad.detach().numpy() for n, p in trainer.model.named_parameters()}
    return float(loss.detach()), metrics, grads


def assert_gradients_match(ours, theirs, cfg, vocab_size):
    """Every jaxslm gradient, put in HF layout, equals the HF parameter's gradient."""
    for entry in param_maps(cfg):
        grad = ours
        for key in entry.path:
            grad = grad[key]
        grad = np.asarray(grad)
        layers = range(cfg.num_layers) if entry.stacked else [None]
        for layer in layers:
            piece = grad[layer] if layer is not None else grad
            name = entry.hf_name.format(layer=layer)
            mine = entry.to_hf(piece.shape)(piece)
            if entry.is_vocab:
                mine = mine[:vocab_size]
            np.testing.assert_allclose(mine, theirs[name], rtol=2e-4, atol=2e-6, err_msg=name)


@pytest.mark.parametrize("share_prompt, label_smoothing", [(False, 0.0), (True, 0.1)])
def test_loss_rewards_and_gradients_equal_trl(models, share_prompt, label_smoothing):
    pairs = random_pairs(6, seed=1)
    beta = 0.1
    settings = DpoSection(
        beta=beta,
        label_smoothing=label_smoothing,
        max_prompt_length=MAX_PROMPT,
        max_completion_length=MAX_COMPLETION,
        share_prompt=share_prompt,
    )
    means, grads = jaxslm_side(models, pairs, settings)
    if label_smoothing:
        e = label_smoothing
        loss_type, weights = ["sigmoid", "robust"], [2 * (1 - e), -(1 - 2 * e)]
    else:
        loss_type, weights = ["sigmoid"], None
    loss, metrics, theirs = trl_side(models, pairs, loss_type, weights, label_smoothing, beta)
    np.testing.assert_allclose(means["loss"], loss, rtol=1e-5)
    for ours, trl in (
        ("rewards_chosen", "rewards/chosen"),
        ("rewards_rejected", "rewards/rejected"),
        ("reward_margin", "rewards/margins"),
        ("logps_chosen", "logps/chosen"),
        ("logps_rejected", "logps/rejected"),
    ):
        np.testing.assert_allclose(means[ours], metrics[trl], rtol=1e-4, atol=1e-6, err_msg=ours)
    assert means["reward_accuracy"] == pytest.approx(metrics["rewards/accuracies"], abs=1e-7)
    reference = models[0]
    assert_gradients_match(grads, theirs, reference.config, reference.vocab.size)


def test_pair_terms_by_hand():
    """Per-pair terms on hand-picked log-probabilities: the implicit rewards, their margin, the
    sigmoid loss, and the two accuracies (strict: a tie counts as wrong)."""
    policy = (np.array([-1.0, -5.0, -3.0]), np.array([-2.0, -4.0, -3.0]))
    reference = (np.array([-1.5, -4.0, -2.0]), np.array([-1.0, -4.5, -3.0]))
    terms = jax.device_get(pair_terms(policy, reference, beta=0.5, label_smoothing=0.0))
    chosen, rejected = 0.5 * np.array([0.5, -1.0, -1.0]), 0.5 * np.array([-1.0, 0.5, 0.0])
    np.testing.assert_allclose(terms["rewards_chosen"], chosen)
    np.testing.assert_allclose(terms["rewards_rejected"], rejected)
    np.testing.assert_allclose(terms["reward_margin"], chosen - rejected)
    np.testing.assert_allclose(terms["loss"], np.log1p(np.exp(-(chosen - rejected))), rtol=1e-6)
    np.testing.assert_array_equal(terms["reward_accuracy"], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(terms["likelihood_accuracy"], [1.0, 0.0, 0.0])
