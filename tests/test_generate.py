"""KV-cache generation against transformers' `generate` (exported model, PyTorch CPU, greedy),
against full recomputation, and the sampling rules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jaxslm.errors import JaxslmError
from jaxslm.generation import decode
from jaxslm.hf.exporter import export_hf
from jaxslm.vocab import allowed_tokens

NEW = 12


@pytest.fixture(scope="module")
def llama_torch(llama_ckpt, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    export = export_hf(llama_ckpt, tmp_path_factory.mktemp("export") / "llama")
    return AutoModelForCausalLM.from_pretrained(export).eval()


def _prompts(vocab, seed: int, lengths=(5, 9, 3)) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab.size, n).tolist() for n in lengths]


def _hf_greedy(model, vocab, prompt, modality, penalty) -> list[int]:
    banned = np.flatnonzero(~allowed_tokens(vocab, modality, vocab.size))
    out = model.generate(
        torch.tensor([prompt]),
        max_new_tokens=NEW,
        do_sample=False,
        repetition_penalty=penalty,
        bad_words_ids=[[int(i)] for i in banned] or None,
        eos_token_id=list(vocab.eos_ids),
        pad_token_id=0,
    )
    return out[0, len(prompt) :].tolist()


@pytest.mark.parametrize(
    "modality, penalty", [(None, 1.0), ("text", 1.0), ("speech", 1.0), ("speech", 1.3)]
)
def test_greedy_equals_transformers(llama_lm, llama_torch, modality, penalty):
    prompts = _prompts(llama_lm.vocab, seed=1)
    ours = llama_lm.generate(prompts, NEW, modality=modality, repetition_penalty=penalty)
    for prompt, generated in zip(prompts, ours, strict=True):
        assert generated == _hf_greedy(llama_torch, llama_lm.vocab, prompt, modality, penalty)
    if modality is not None:
        allowed = allowed_tokens(llama_lm.vocab, modality, llama_lm.vocab.size)
        assert allowed[[i for row in ours for i in row]].all()


def test_cached_decoding_equals_full_recomputation(qwen_lm):
    prompts = _prompts(qwen_lm.vocab, seed=2, lengths=(7, 2))
    ours = qwen_lm.generate(prompts, NEW, repetition_penalty=1.2)
    for prompt, generated in zip(prompts, ours, strict=True):
        sequence = list(prompt)
        for _ in range(NEW):
            logits = qwen_lm.logits(np.asarray([sequence]))[0, -1].astype(np.float64)
            seen = np.zeros(logits.size, bool)
            seen[sequence] = True
            logits = np.where(seen, np.where(logits < 0, logits * 1.2, logits / 1.2), logits)
            sequence.append(int(np.argmax(logits)))
            if sequence[-1] in qwen_lm.vocab.eos_ids:
                break
        assert generated == sequence[len(prompt) :]


def test_growing_attention_windows_change_nothing(llama_lm, monkeypatch):
    """Decoding in phases of 64 then 128 attended slots gives what attending over the whole
    cache at every step gives."""
    assert decode.attention_windows(16, 128) == [64, 128]
    assert decode.attention_windows(128, 320) == [256, 320]
    prompts = _prompts(llama_lm.vocab, seed=5, lengths=(9, 3))
    jax.clear_caches()
    windowed = llama_lm.generate(prompts, 100, repetition_penalty=1.1)
    monkeypatch.setattr(decode, "attention_windows", lambda prompt, cache: [cache])
    jax.clear_caches()
    whole = llama_lm.generate(prompts, 100, repetition_penalty=1.1)
    jax.clear_caches()
    assert windowed == whole
    assert max(map(len, windowed)) + 9 > 64, "no row reached the second window"


def test_speech_sampling_follows_the_restricted_softmax(llama_lm):
    """With the speech restriction, tokens are drawn among the kept output rows only; over 256
    draws from one prompt their frequencies match the top-5 softmax of the full, masked logits
    within 4 standard errors."""
    prompt = _prompts(llama_lm.vocab, seed=6, lengths=(4,))[0]
    logits = np.asarray(llama_lm.logits(np.asarray([prompt]))[0, -1], np.float64)
    logits = np.where(allowed_tokens(llama_lm.vocab, "speech", logits.size), logits, -np.inf)
    top = np.argsort(-logits)[:5]
    probs = np.exp(logits[top] - logits[top].max())
    probs /= probs.sum()
    draws = llama_lm.generate([prompt] * 256, 1, temperature=1.0, top_k=5, modality="speech")
    drawn = np.asarray([row[0] for row in draws])
    assert set(drawn.tolist()) <= set(top.tolist())
    frequencies = np.asarray([np.mean(drawn == token) for token in top])
    assert np.all(np.abs(frequencies - probs) < 4 * np.sqrt(probs * (1 - probs) / 256) + 0.01)


def test_sampling_is_reproducible_and_respects_bans(llama_lm):
    prompts = _prompts(llama_lm.vocab, seed=3, lengths=(4,) * 8)
    first = llama_lm.generate(prompts, 30, temperature=1.5, modality="speech", seed=7)
    assert first == llama_lm.generate(prompts, 30, temperature=1.5, modality="speech", seed=7)
    assert first != llama_lm.generate(prompts, 30, temperature=1.5, modality="speech", seed=8)
    allowed = allowed_tokens(llama_lm.vocab, "speech", llama_lm.vocab.size)
    tokens = [i for row in first for i in row]
    assert len(set(tokens)) > 10 and allowed[tokens].all()


def test_top_k_one_and_tiny_top_p_are_greedy(llama_lm):
    prompts = _prompts(llama_lm.vocab, seed=4)
    greedy = llama_lm.generate(prompts, NEW)
    assert llama_lm.generate(prompts, NEW, temperature=0.8, top_k=1, seed=3) == greedy
    assert llama_lm.generate(prompts, NEW, temperature=0.8, top_p=1e-6, seed=3) == greedy


def test_top_k_past_the_candidates_keeps_them_all(llama_lm):
    """As transformers clamps k to the vocabulary: with `modality="speech"` the candidates
    are the restricted head's few columns, far fewer than k."""
    prompts = _prompts(llama_lm.vocab, seed=6)
    speech = dict(temperature=0.9, modality="speech", seed=2)
    assert llama_lm.generate(prompts, NEW, top_k=10**6, **speech) == llama_lm.generate(
        prompts, NEW, **speech
    )


def test_rows_that_only_pad_the_batch_end_the_loop_with_the_prompts(llama_lm, monkeypatch):
    """Three prompts run as four rows: the loop stops once the three are done (here at the
    first token, forced to be EOS), not at the budget, which the fourth row (never EOS) would
    reach."""
    eos = llama_lm.vocab.eos_ids[0]
    steps = []

    def prompts_end_at_once(logits, seen, valid, sampling, key):
        jax.debug.callback(lambda: steps.append(1))
        rows = jnp.arange(logits.shape[0])
        return jnp.where(rows < 3, eos, eos + 1).astype(jnp.int32)

    monkeypatch.setattr(decode, "_choose", prompts_end_at_once)
    monkeypatch.setenv("JAXSLM_DECODE_CHECK_EVERY", "1")
    generator = decode.Generator(
        llama_lm._graphdef, llama_lm._params, llama_lm.vocab, llama_lm.config
    )
    out = generator.generate(_prompts(llama_lm.vocab, seed=7, lengths=(3, 5, 2)), 40)
    assert out == [[eos]] * 3
    assert len(steps) == 1


def test_sharded_generation_equals_single_device(llama_ckpt, llama_lm, monkeypatch):
    """An 8-device mesh decodes what one device decodes, also when it looks for the end
    once per block of 8 tokens (the GPU default)."""
    import jaxslm
    from jaxslm.sharding import make_mesh

    sharded = jaxslm.load(llama_ckpt, mesh=make_mesh(data=2, fsdp=2, tensor=2))
    prompts = _prompts(llama_lm.vocab, seed=5, lengths=(6, 1, 11, 4, 2))
    assert sharded.generate(prompts, NEW) == llama_lm.generate(prompts, NEW)
    speech = dict(modality="speech", repetition_penalty=1.2)  # the kept output rows only
    assert sharded.generate(prompts, NEW, **speech) == llama_lm.generate(prompts, NEW, **speech)
    monkeypatch.setenv("JAXSLM_DECODE_CHECK_EVERY", "8")
    blocks = jaxslm.load(llama_ckpt, mesh=make_mesh(data=2, fsdp=2, tensor=2))
    assert blocks.generate(prompts, NEW, **speech) == llama_lm.generate(prompts, NEW, **speech)


def test_bad_inputs_are_refused(llama_lm):
    context = llama_lm.config.max_position_embeddings
    with pytest.raises(JaxslmError, match="prompt 1 is empty"):
        llama_lm.generate([[1], []], 4)
    with pytest.raises(JaxslmError, match="passes the model's context"):
        llama_lm.generate([[1] * (context - 2)], 4)
    with pytest.raises(JaxslmError, match="modality 'audio'"):
        llama_lm.generate([[1, 2]], 4, modality="audio")
    with pytest.raises(JaxslmError, match="no prompts"):
        llama_lm.generate([], 4)
    with pytest.raises(JaxslmError, match="top_p"):
        llama_lm.generate([[1]], 4, temperature=1.0, top_p=1.5)


def test_prefill_with_the_pallas_kernel_changes_nothing(llama_lm):
    """Generation whose prefill runs the Pallas kernel (interpret mode on the CPU) gives the
    XLA kernel's greedy tokens."""
    from tiny_models import with_config

    prompts = _prompts(llama_lm.vocab, seed=7, lengths=(20, 4, 11))
    want = llama_lm.generate(prompts, NEW)
    assert with_config(llama_lm, attention="pallas").generate(prompts, NEW) == want


@pytest.mark.parametrize("layers", ["unrolled", "split"])
def test_other_decoding_layers_equal_transformers(llama_lm, llama_torch, monkeypatch, layers):
    """JAXSLM_DECODE_LAYERS=unrolled or split (the GPU check's alternatives to the scanned
    layer loop) decodes transformers' greedy tokens, with and without a repetition penalty."""
    from tiny_models import with_config

    monkeypatch.setenv("JAXSLM_DECODE_LAYERS", layers)
    lm = with_config(llama_lm)  # a fresh Generator reads the setting
    prompts = _prompts(llama_lm.vocab, seed=8, lengths=(6, 2))
    for penalty in (1.0, 1.3):
        ours = lm.generate(prompts, NEW, repetition_penalty=penalty)
        for prompt, generated in zip(prompts, ours, strict=True):
            assert generated == _hf_greedy(llama_torch, llama_lm.vocab, prompt, None, penalty)
    monkeypatch.setenv("JAXSLM_DECODE_LAYERS", "fused")
    with pytest.raises(JaxslmError, match="JAXSLM_DECODE_LAYERS"):
        with_config(llama_lm).generate(prompts, 2)


def test_weights_cast_once_to_the_compute_dtype_change_nothing(qwen_lm, monkeypatch):
    """In bfloat16, decoding from weights cast to bfloat16 once (the Generator's copy) gives
    exactly the tokens of the float32 weights cast at every use, and the same logits."""
    from tiny_models import with_config

    lm = with_config(qwen_lm, dtype="bfloat16")
    cast = decode.in_compute_dtype(lm._params, jnp.dtype("bfloat16"))
    assert {leaf.dtype for leaf in jax.tree.leaves(cast)} == {jnp.dtype("bfloat16")}
    tokens = np.asarray(_prompts(lm.vocab, seed=9, lengths=(12, 12)))
    positions = np.broadcast_to(np.arange(12), tokens.shape)
    logits = [
        np.asarray(nnx.merge(lm._graphdef, params)(tokens, positions, np.ones_like(tokens)))
        for params in (lm._params, cast)
    ]
    np.testing.assert_array_equal(*logits)
    prompts = _prompts(lm.vocab, seed=10, lengths=(7, 3))
    settings = dict(repetition_penalty=1.2, modality="speech")
    once = lm.generate(prompts, NEW, **settings)
    monkeypatch.setattr(decode, "in_compute_dtype", lambda params, dtype: params)
    assert with_config(lm).generate(prompts, NEW, **settings) == once


def test_other_prompts_of_the_same_buckets_compile_nothing(llama_lm, llama_torch):
    """Prompts of other lengths within the same buckets (rows and prompt length padded to
    powers of two), another seed: one device program already compiled runs the call."""
    from compiles import backend_compiles

    llama_lm.generate(_prompts(llama_lm.vocab, seed=13, lengths=(6, 2, 9)), NEW, seed=1)
    prompts = _prompts(llama_lm.vocab, seed=14, lengths=(3, 11, 5, 7))
    prompts = [[i or 1 for i in p] for p in prompts]  # transformers takes id 0 for padding
    with backend_compiles() as compiled:
        ours = llama_lm.generate(prompts, NEW, seed=2)
    assert compiled == []
    for prompt, generated in zip(prompts, ours, strict=True):
        assert generated == _hf_greedy(llama_torch, llama_lm.vocab, prompt, None, 1.0)


@pytest.mark.parametrize("every", [3, 8])
def test_looking_for_the_end_every_few_tokens_changes_nothing(llama_lm, monkeypatch, every):
    """Decoding several tokens between two looks at whether every row is done
    (JAXSLM_DECODE_CHECK_EVERY; 8 on GPUs) gives the tokens of looking after each one: rows
    ending on EOS inside a block, budgets that are no multiple of the block or shorter than
    it, two attention window phases, greedy with a repetition penalty and sampled."""
    import dataclasses

    from jaxslm.api import SpeechLM

    prompts = _prompts(llama_lm.vocab, seed=9, lengths=(9, 3, 40))
    stop = llama_lm.generate(prompts, 30, repetition_penalty=1.1)[0][20]  # row 0 ends early
    vocab = dataclasses.replace(llama_lm.vocab, eos_ids=(stop,))
    runs = {}
    for value in ("1", str(every)):
        monkeypatch.setenv("JAXSLM_DECODE_CHECK_EVERY", value)
        lm = SpeechLM(llama_lm.model, vocab, llama_lm.mesh)  # a fresh Generator
        runs[value] = [
            lm.generate(prompts, 100, repetition_penalty=1.1),
            lm.generate(prompts, 37, temperature=1.2, top_k=20, seed=3),
            lm.generate(prompts, 2),  # a budget shorter than one block
        ]
    assert runs["1"] == runs[str(every)]
    greedy = runs["1"][0]
    assert len(greedy[0]) <= 21 and greedy[0][-1] == stop
    assert max(len(row) for row in greedy) == 100 and 40 + 100 > 128  # the second phase
    monkeypatch.setenv("JAXSLM_DECODE_CHECK_EVERY", "0")
    with pytest.raises(JaxslmError, match="JAXSLM_DECODE_CHECK_EVERY"):
        SpeechLM(llama_lm.model, vocab, llama_lm.mesh).generate(prompts, 2)


def _decoding_program(lm, prompts, max_new_tokens, **settings) -> str:
    """The compiled (optimised) text of the device program `lm.generate` runs for this call."""
    lm.generate(prompts, 1)  # the Generator is made on first use
    generator = lm._generator
    jitted, calls = generator._decode, []

    def spy(*args):
        calls.append(args)
        return jitted(*args)

    generator._decode = spy
    try:
        lm.generate(prompts, max_new_tokens, **settings)
    finally:
        generator._decode = jitted
    return jitted.lower(*calls[0]).compile().as_text()


def test_the_end_is_looked_at_once_per_block(llama_lm, monkeypatch):
    """The compiled decoding program has one loop of data-dependent length per attention
    window phase (each iteration a host round trip on GPUs), and with
    JAXSLM_DECODE_CHECK_EVERY=8 each iteration runs a loop of 8 steps whose trip count XLA
    knows (no round trip)."""
    import re

    from jaxslm.api import SpeechLM

    prompt = [[3, 4, 5]]  # prompt bucket 16, cache 192: windows 64, 128, 192
    trip_counts = {}
    for every in ("1", "8"):
        monkeypatch.setenv("JAXSLM_DECODE_CHECK_EVERY", every)
        generator = SpeechLM(llama_lm.model, llama_lm.vocab, llama_lm.mesh)
        program = _decoding_program(generator, prompt, 150)
        loops = re.findall(r"\bwhile\(.*", program)
        trip_counts[every] = sorted(
            int(m.group(1)) if (m := re.search(r'known_trip_count":\{"n":"(\d+)"', loop)) else 0
            for loop in loops
        )
    layers = llama_lm.config.num_layers
    # 3 phases, each with its step's layer loop; the prefill's layer loop
    assert trip_counts["1"] == [0, 0, 0] + [layers] * 4
    assert trip_counts["8"] == [0, 0, 0] + [layers] * 4 + [8] * 3


def test_split_layers_decode_without_copying_slices(llama_ckpt, llama_lm, monkeypatch):
    """JAXSLM_DECODE_LAYERS=split: the compiled decoding program holds no layer loop and no
    dynamic slice of floats (neither of stacked weights nor of a stacked cache), and an
    8-device mesh decodes what one device decodes."""
    import re

    import jaxslm
    from jaxslm.api import SpeechLM
    from jaxslm.sharding import make_mesh

    prompts = _prompts(llama_lm.vocab, seed=15, lengths=(6, 3))
    want = llama_lm.generate(prompts, 70, repetition_penalty=1.1)
    monkeypatch.setenv("JAXSLM_DECODE_LAYERS", "split")
    lm = SpeechLM(llama_lm.model, llama_lm.vocab, llama_lm.mesh)
    assert lm.generate(prompts, 70, repetition_penalty=1.1) == want
    program = _decoding_program(lm, prompts, 70, repetition_penalty=1.1)
    loops = re.findall(r"\bwhile\(.*", program)
    assert len(loops) == 1 and "known_trip_count" not in loops[0]  # the decoding loop only
    floats = re.findall(r"= (?:f32|bf16|f16)\[[^\]]*\][^ ]* (?:dynamic-slice|fusion)\(.*", program)
    assert not [line for line in floats if "dynamic-slice" in line or "dynamic_slice" in line]
    sharded = jaxslm.load(llama_ckpt, mesh=make_mesh(data=2, fsdp=2, tensor=2))
    assert sharded.generate(prompts, 70, repetition_penalty=1.1) == want
