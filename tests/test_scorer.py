"""The log-likelihood scorer against transformers (PyTorch, CPU) computed the slamkit way."""

import jax
import numpy as np
import pytest
import torch

from jaxslm.errors import JaxslmError
from jaxslm.evals.scorer import Scorer
from jaxslm.hf.exporter import export_hf
from jaxslm.vocab import allowed_tokens


@pytest.fixture(scope="module")
def qwen_torch(qwen_ckpt, tmp_path_factory):
    """The speech-extended Qwen checkpoint exported to HF and loaded by transformers."""
    from transformers import AutoModelForCausalLM

    export = export_hf(qwen_ckpt, tmp_path_factory.mktemp("export") / "qwen")
    return AutoModelForCausalLM.from_pretrained(export).eval()


def _sequences(vocab, seed: int) -> list[list[int]]:
    """Speech, text and mixed sequences of 2 to 70 tokens (several buckets, ragged)."""
    rng = np.random.default_rng(seed)
    sequences = []
    for length in (2, 5, 17, 17, 33, 70, 9, 40):
        units = vocab.units_to_ids(rng.integers(0, vocab.num_units, length - 1)).tolist()
        text = rng.integers(0, vocab.text_size, length - 1).tolist()
        kind = rng.integers(3)
        body = units if kind == 0 else text if kind == 1 else [*text[: length // 2], *units]
        sequences.append([int(rng.integers(vocab.text_size)), *body[: length - 1]])
    return sequences


def _slamkit_log_likelihood(model, vocab, sequences, mean: bool, modality) -> np.ndarray:
    """slamkit's UnitLM.log_likelihood: right-padded batch, banned logits -inf, masked CE."""
    length = max(map(len, sequences))
    tokens = torch.zeros((len(sequences), length), dtype=torch.long)
    mask = torch.zeros((len(sequences), length - 1))
    for row, sequence in enumerate(sequences):
        tokens[row, : len(sequence)] = torch.as_tensor(sequence)
        mask[row, : len(sequence) - 1] = 1
    with torch.no_grad():
        logits = model(input_ids=tokens).logits.float()
    if modality is not None:
        banned = ~torch.as_tensor(allowed_tokens(vocab, modality, vocab.size))
        logits[:, :, banned] = float("-inf")
    losses = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)), tokens[:, 1:].reshape(-1), reduction="none"
    ).view(mask.shape)
    losses = torch.where(mask.bool(), losses, torch.zeros(()))
    total = losses.sum(-1)
    return -(total / mask.sum(-1) if mean else total).numpy()


@pytest.mark.parametrize("normalize", ["mean", "sum"])
@pytest.mark.parametrize("modality", [None, "speech", "text"])
def test_log_likelihood_matches_transformers(qwen_lm, qwen_torch, normalize, modality):
    sequences = _sequences(qwen_lm.vocab, seed=3)
    ours = qwen_lm.log_likelihood(sequences, normalize=normalize, modality=modality)
    theirs = np.concatenate(
        [
            _slamkit_log_likelihood(qwen_torch, qwen_lm.vocab, [s], normalize == "mean", modality)
            for s in sequences
        ]
    )
    finite = np.isfinite(theirs)
    assert finite.sum() >= 3
    np.testing.assert_array_equal(np.isfinite(ours), finite)
    np.testing.assert_allclose(ours[finite], theirs[finite], rtol=1e-4)


def test_padded_batch_equals_slamkit_batch(qwen_lm, qwen_torch):
    sequences = _sequences(qwen_lm.vocab, seed=5)
    batched = _slamkit_log_likelihood(qwen_torch, qwen_lm.vocab, sequences, True, None)
    np.testing.assert_allclose(qwen_lm.log_likelihood(sequences), batched, rtol=1e-4)


def test_batching_and_order_do_not_change_scores(qwen_lm):
    sequences = _sequences(qwen_lm.vocab, seed=7) * 3
    lm = qwen_lm
    reference = np.asarray([lm.log_likelihood([s], "sum")[0] for s in sequences])
    permutation = np.random.default_rng(0).permutation(len(sequences))
    small = Scorer(
        lm._graphdef,
        lm._params,
        lm.vocab,
        lm.config.padded_vocab_size,
        batch_tokens=32,
        logits_bytes=4096,
    )
    shuffled = small.log_likelihood([sequences[i] for i in permutation], "sum")
    np.testing.assert_allclose(shuffled, reference[permutation], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(lm.log_likelihood(sequences, "sum"), reference, rtol=1e-5, atol=1e-4)


def test_sharded_scores_equal_single_device(qwen_ckpt, qwen_lm):
    import jaxslm
    from jaxslm.sharding import make_mesh

    sharded = jaxslm.load(qwen_ckpt, mesh=make_mesh(data=2, fsdp=2, tensor=2))
    sequences = _sequences(qwen_lm.vocab, seed=9)
    np.testing.assert_allclose(
        sharded.log_likelihood(sequences, modality="speech"),
        qwen_lm.log_likelihood(sequences, modality="speech"),
        rtol=1e-5,
    )


def test_load_without_a_mesh_computes_on_the_default_device(qwen_ckpt, qwen_torch):
    """Without a mesh, jaxslm.load puts the parameters on JAX's default device (the GPU on a
    GPU machine, not the host CPU; here the second virtual CPU device), where scoring and
    generation then run; the scores are transformers'."""
    import jaxslm

    device = jax.devices()[1]
    with jax.default_device(device):
        lm = jaxslm.load(qwen_ckpt)
    assert {d for leaf in jax.tree.leaves(lm._params) for d in leaf.devices()} == {device}
    sequences = _sequences(lm.vocab, seed=17)
    theirs = _slamkit_log_likelihood(qwen_torch, lm.vocab, sequences, True, None)
    np.testing.assert_allclose(lm.log_likelihood(sequences), theirs, rtol=1e-4)
    lm.generate(sequences[:2], 2)
    generator_params = jax.tree.leaves(lm._generator.params)
    assert {d for leaf in generator_params for d in leaf.devices()} == {device}


def test_speech_restriction_keeps_units_and_specials(qwen_lm, llama_lm):
    for lm in (qwen_lm, llama_lm):
        vocab = lm.vocab
        allowed = allowed_tokens(vocab, "speech", lm.config.padded_vocab_size)
        specials = {i for i in (vocab.bos_id, *vocab.eos_ids) if i is not None}
        expected = set(range(vocab.unit_offset, vocab.unit_offset + vocab.num_units)) | specials
        assert set(np.flatnonzero(allowed)) == expected
        text = allowed_tokens(vocab, "text", lm.config.padded_vocab_size)
        assert text[vocab.speech_marker_id] and text[0] and not text[vocab.unit_offset]
        assert not text[vocab.size :].any()


def test_bad_inputs_are_refused(qwen_lm):
    with pytest.raises(JaxslmError, match="sequence 1 has 1 tokens"):
        qwen_lm.log_likelihood([[1, 2], [3]])
    with pytest.raises(JaxslmError, match="outside the vocabulary"):
        qwen_lm.log_likelihood([[1, qwen_lm.vocab.size]])
    with pytest.raises(JaxslmError, match="normalize"):
        qwen_lm.log_likelihood([[1, 2]], normalize="max")
    with pytest.raises(JaxslmError, match="modality"):
        qwen_lm.log_likelihood([[1, 2]], modality="audio")


def test_short_sequences_fill_longer_rows(qwen_lm):
    scorer = qwen_lm.make_scorer(batch_tokens=128)
    batches = scorer._batches(np.asarray([40, 20, 4, 3, 70]))
    assert batches == [(32, [[1, 2, 3]]), (128, [[4, 0]])]  # best fit, longest first


def _story_sequences(vocab, seed: int) -> list[list[int]]:
    """Sequences sharing contexts the way StoryCloze pairs do, plus duplicates and near misses:
    a 40-token context with endings of 1-25 tokens (one sequence is the context alone), a copy,
    a sequence sharing only 10 tokens with the context, and an unrelated one."""
    rng = np.random.default_rng(seed)

    def units(n: int) -> list[int]:
        return vocab.units_to_ids(rng.integers(0, vocab.num_units, n)).tolist()

    context = [vocab.bos_id or 0, *units(39)]
    endings = [units(n) for n in (1, 7, 25)]
    stories = [context + ending for ending in endings] + [context]
    return [*stories, stories[1], context[:10] + units(30), [vocab.bos_id or 0, *units(20)]]


def test_plan_items_share_prefixes_and_merge_duplicates(qwen_lm):
    from jaxslm.evals.sharing import plan_items

    sequences = _story_sequences(qwen_lm.vocab, seed=11)
    arrays = [np.asarray(s, np.int32) for s in sequences]
    items, copy_of = plan_items(arrays)
    assert copy_of[4] == copy_of[1] and len(set(copy_of.tolist())) == 6
    shared = [item for item in items if item.branches]
    assert len(shared) == 1 and len(items) == 3  # the story item, the near miss, the other
    (story,) = shared
    assert sorted(story.owners) == sorted(copy_of[:4].tolist())
    np.testing.assert_array_equal(story.trunk, arrays[3][:39])
    for owner, branch in story.branches:
        (original,) = [i for i in range(4) if copy_of[i] == owner]
        np.testing.assert_array_equal(np.concatenate([story.trunk, branch]), arrays[original])
    assert len(plan_items(arrays, max_branches=2)[0]) == 4
    assert not any(item.branches for item in plan_items(arrays, min_shared=41)[0])


@pytest.mark.parametrize("modality", [None, "speech"])
def test_shared_prefixes_score_as_alone(qwen_lm, qwen_torch, modality):
    sequences = _story_sequences(qwen_lm.vocab, seed=13)
    alone = np.asarray([qwen_lm.log_likelihood([s], "sum", modality)[0] for s in sequences])
    finished = []
    scorer = qwen_lm.make_scorer()
    together = scorer.log_likelihood(sequences, "sum", modality, on_batch=finished.append)
    assert sum(finished) == len(sequences)
    np.testing.assert_allclose(together, alone, rtol=1e-5)
    theirs = [
        _slamkit_log_likelihood(qwen_torch, qwen_lm.vocab, [s], False, modality)[0]
        for s in sequences
    ]
    np.testing.assert_allclose(together, theirs, rtol=1e-4)


def test_restricted_head_equals_masked_full_head(qwen_lm, llama_lm, monkeypatch):
    import jaxslm.models.head as head_module

    for lm in (qwen_lm, llama_lm):  # untied and tied output projections
        sequences = _sequences(lm.vocab, seed=15) + _story_sequences(lm.vocab, seed=15)
        restricted = lm.make_scorer().log_likelihood(sequences, modality="speech")
        with monkeypatch.context() as patch:
            patch.setattr(head_module, "restricted_head", lambda allowed: None)
            full = lm.make_scorer().log_likelihood(sequences, modality="speech")
        assert np.isfinite(restricted).sum() >= 3
        np.testing.assert_array_equal(np.isfinite(restricted), np.isfinite(full))
        finite = np.isfinite(full)
        np.testing.assert_allclose(restricted[finite], full[finite], rtol=1e-5)


def test_scores_equal_with_the_pallas_kernel(qwen_lm):
    """Scoring with `attention: pallas` (interpret mode on the CPU): packed rows run the Pallas
    kernel; rows with shared prefixes (branch ids) fall back to the XLA kernel with a warning.
    Both give the XLA kernel's scores."""
    from tiny_models import with_config

    sequences = _sequences(qwen_lm.vocab, seed=16) + _story_sequences(qwen_lm.vocab, seed=16)
    want = qwen_lm.make_scorer().log_likelihood(sequences, "sum")
    with pytest.warns(UserWarning, match="trunk/branch"):
        got = (
            with_config(qwen_lm, attention="pallas").make_scorer().log_likelihood(sequences, "sum")
        )
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_new_sequences_of_the_same_shapes_compile_nothing(qwen_lm, qwen_torch):
    """A second call whose sequences differ but plan into the same padded shapes (every id
    renamed by one permutation: same lengths, same shared prefixes) reuses the programs of
    the first; its scores are transformers'."""
    from compiles import backend_compiles

    first = _sequences(qwen_lm.vocab, seed=11)
    rename = np.random.default_rng(12).permutation(qwen_lm.vocab.size)
    second = [rename[s].tolist() for s in first]
    qwen_lm.log_likelihood(first)
    with backend_compiles() as compiled:
        ours = qwen_lm.log_likelihood(second)
    assert compiled == []
    theirs = _slamkit_log_likelihood(qwen_torch, qwen_lm.vocab, second, True, None)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4)
