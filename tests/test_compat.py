"""`--compat slamkit` against slamkit's evaluation restated with transformers (PyTorch, CPU) on
the exported model and a tiny HubertModel: padded audio batches without a mask, targets equal
to id 0 masked, the `encode(marker)[0]` modality restriction. Scoring is float32 by default,
whatever the checkpoint's compute dtype.

The tokenizers here are byte-level BPE with their special tokens appended after the text
tokens, as in Llama 3 and Qwen2.5, so that id 0 is "!", a real text token.
"""

import itertools
import json

import numpy as np
import pytest
import soundfile
import torch
import torch.nn.functional as F
from tiny_models import llama_config, qwen_config, save_hf_model, tiny_hubert
from tiny_tokenizers import BOS, CORPUS, EOS, QWEN_EOS, prepend_bos, train_bpe

from jaxslm import evaluate
from jaxslm.hf.exporter import export_hf
from jaxslm.hf.importer import import_hf

LAYER = 2
UNITS = 12
SPEECH, TEXT = "<speech>", "<text>"
TEXTS = ["the cat sat on the mat!", 'a dog ran "to the park"!', "every word! carries", "units!"]


def _tokenizer(directory, llama_style: bool):
    """Text tokens first (id 0 is "!", id 1 is '"'), then the specials: Llama style prepends
    BOS; Qwen style has only `<|endoftext|>` and adds nothing."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = train_bpe(CORPUS + TEXTS)
    if not llama_style:
        tokenizer.add_special_tokens([QWEN_EOS])
        fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=QWEN_EOS)
    else:
        tokenizer.add_special_tokens([BOS, EOS])
        prepend_bos(tokenizer)
        fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS)
    assert fast.convert_ids_to_tokens(0) == "!"
    fast.save_pretrained(directory)
    return fast


def _checkpoint(root, llama_style: bool):
    """(jaxslm checkpoint with UNITS units whose config says bfloat16 compute, as a run trained
    in bf16, exported float32 HF model, its HF tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_dir = root / "hf"
    text = _tokenizer(hf_dir, llama_style)
    config = (llama_config if llama_style else qwen_config)(len(text))
    config.bos_token_id = text.bos_token_id if llama_style else text.eos_token_id
    config.eos_token_id = text.eos_token_id
    save_hf_model(config, hf_dir, seed=3)
    ckpt = import_hf(hf_dir, root / "ckpt", speech_units=UNITS)
    metadata = json.loads((ckpt / "jaxslm.json").read_text())
    metadata["model"]["dtype"] = "bfloat16"
    (ckpt / "jaxslm.json").write_text(json.dumps(metadata))
    export = export_hf(ckpt, root / "export")
    model = AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32).eval()
    return ckpt, model, AutoTokenizer.from_pretrained(export)


@pytest.fixture(scope="module", params=["llama", "qwen"])
def interleaved(request, tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp(request.param), request.param == "llama")


@pytest.fixture(scope="module")
def hubert(tmp_path_factory):
    """(directory, torch model, codebook file, centroids): a tiny random HuBERT-base layout
    (GroupNorm over time, which the zero padding moves) and a 12-unit codebook of its own
    frames."""
    model = tiny_hubert(scale=0.15)
    directory = tmp_path_factory.mktemp("hubert")
    model.save_pretrained(directory)
    wave = np.random.default_rng(1).normal(size=(1, 48000)).astype(np.float32)
    with torch.no_grad():
        frames = model(torch.from_numpy(wave), output_hidden_states=True).hidden_states[LAYER]
    centroids = frames[0, :: frames.shape[1] // UNITS][:UNITS].numpy()  # as k-means would pick
    np.save(directory / "km.npy", centroids)
    return directory, model, directory / "km.npy", centroids


def _write_wave(path, seconds: float, seed: int) -> None:
    """A tone plus noise whose loudness changes every 50 ms, so that frames differ."""
    rng = np.random.default_rng(seed)
    samples = int(16000 * seconds)
    tone = np.sin(np.arange(samples) * (0.02 + 0.01 * (seed % 5)))
    loudness = np.repeat(rng.uniform(0.05, 0.5, samples // 800 + 1), 800)[:samples]
    wave = loudness * (tone + 0.5 * rng.normal(size=samples))
    soundfile.write(path, wave.astype(np.float32), 16000)


# slamkit, restated from its source (HEAD 388b402) ----------------------------------------


def _slamkit_units(hubert, waves: list[np.ndarray]) -> list[list[int]]:
    """HubertFeatureExtractor.extract + audio_represent on one batch: zero-padded at the end to
    the longest, 40 zeros each side, no attention mask, the first ceil(len / W x T) frames,
    nearest centroid, runs merged."""
    _, model, _, centroids = hubert
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(w) for w in waves], True, 0.0)
    with torch.no_grad():
        hidden = model(F.pad(batch, (40, 40)), output_hidden_states=True).hidden_states[LAYER]
    hidden = hidden.numpy()
    distances = ((hidden[:, :, None, :] - centroids[None, None]) ** 2).sum(-1)
    frames = distances.argmin(-1)
    kept = ((lengths.float() / batch.shape[1]) * frames.shape[1]).ceil().int()
    return [
        [k for k, _ in itertools.groupby(f[:n].tolist())] for f, n in zip(frames, kept, strict=True)
    ]


def _units_string(units: list[int]) -> str:
    return "".join(f"<Un{u}>" for u in units)


def _ignore_tokens(tokenizer, modality: str | None) -> list[int] | None:
    """InterleavingTokeniser.get_ignore_tokens."""
    num_text = len(tokenizer) - UNITS - 2
    specials = [tokenizer.bos_token_id, tokenizer.eos_token_id]
    first = [tokenizer.encode(SPEECH)[0], tokenizer.encode(TEXT)[0]]
    if modality == "speech":
        return [x for x in range(num_text) if x not in specials] + first
    if modality == "text":
        return [x for x in range(num_text, len(tokenizer)) if x not in specials + first]
    return None


def _slamkit_log_likelihood(model, tokenizer, strings: list[str], modality=None) -> np.ndarray:
    """string_tokenise (add_special_tokens, right padding with id 0) + UnitLM.log_likelihood:
    banned logits -inf, targets equal to the pad id 0 ignored, mean over the rest."""
    tokenizer.pad_token_id = 0
    tokenizer.padding_side = "right"
    tokens = tokenizer(strings, add_special_tokens=True, padding=True, return_tensors="pt")
    tokens = tokens["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=tokens).logits.float()
    ignore = _ignore_tokens(tokenizer, modality)
    if ignore is not None:
        logits[:, :, ignore] = float("-inf")
    targets = tokens[:, 1:].clone()
    targets[targets == 0] = -100
    losses = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none"
    ).view(targets.shape)
    mask = targets.ne(-100)
    return -((losses * mask).sum(-1) / mask.sum(-1)).numpy()


# tests ---------------------------------------------------------------------------------


def _cross_modal_folder(root) -> list[dict]:
    """Three stories: `<i>_{mutual,correct,incorrect}` as .wav and .txt, texts with "!"."""
    stories = []
    for i in range(3):
        story = {}
        for j, role in enumerate(("mutual", "correct", "incorrect")):
            _write_wave(root / f"{i}_{role}.wav", 0.3 + 0.17 * ((i + 2 * j) % 4), seed=10 * i + j)
            text = TEXTS[(i + j) % len(TEXTS)]
            (root / f"{i}_{role}.txt").write_text(text + "\n")
            story[role] = (soundfile.read(root / f"{i}_{role}.wav", dtype="float32")[0], text)
        stories.append(story)
    return stories


def _cross_modal_strings(hubert, story: dict, ending: str, setting: str) -> str:
    """CrossModalMetricDataset + InterleavingTokeniser._stringify_interleaved: speech segments
    tokenized alone, S->S from the joined audio, no marker between two texts."""
    (prompt_wave, prompt_text), (end_wave, end_text) = story["mutual"], story[ending]
    if setting == "S->S":
        return SPEECH + _units_string(
            _slamkit_units(hubert, [np.concatenate([prompt_wave, end_wave])])[0]
        )
    if setting == "T->T":
        return TEXT + prompt_text + end_text
    pieces = {"S": lambda wave, _: SPEECH + _units_string(_slamkit_units(hubert, [wave])[0])}
    pieces["T"] = lambda _, text: TEXT + text
    source, target = setting.split("->")
    return pieces[source](prompt_wave, prompt_text) + pieces[target](end_wave, end_text)


def _evaluate(
    monkeypatch, ckpt, hubert, task: str, data, tmp_path, compat: str = "slamkit"
) -> tuple[list, list]:
    """Run `python -m jaxslm.evaluate --compat slamkit` (or another `compat`) on audio;
    returns (the token sequences it scored, per-pair log-likelihoods positive then
    negative)."""
    from jaxslm.evals.scorer import Scorer

    scored = []
    original = Scorer.log_likelihood

    def recording(self, sequences, *args, **kwargs):
        scored.extend(sequences)
        return original(self, sequences, *args, **kwargs)

    monkeypatch.setattr(Scorer, "log_likelihood", recording)
    pairs_out, out = tmp_path / "pairs.jsonl", tmp_path / "results.json"
    argv = ["--checkpoint", str(ckpt), "--task", task, "--data", str(data), "--compat", compat]
    argv += ["--hubert", str(hubert[0]), "--layer", str(LAYER), "--codebook", str(hubert[2])]
    assert evaluate.main([*argv, "--pairs-out", str(pairs_out), "--out", str(out)]) == 0
    settings = json.loads(out.read_text())["settings"]
    assert settings["dtype"] == "float32" and settings["compat"] == compat
    pairs = [json.loads(line) for line in pairs_out.read_text().splitlines()]
    return scored, [ll for p in pairs for ll in (p["ll_positive"], p["ll_negative"])]


def test_cross_modal_storycloze_equals_slamkit(interleaved, hubert, tmp_path, monkeypatch):
    """All four settings from audio and text, on a Llama-style and a Qwen-style tokenizer."""
    ckpt, model, tokenizer = interleaved
    data = tmp_path / "cm"
    data.mkdir()
    stories = _cross_modal_folder(data)
    scored, got = _evaluate(monkeypatch, ckpt, hubert, "cm_storycloze", data, tmp_path)
    strings = [
        _cross_modal_strings(hubert, story, ending, setting)
        for setting in ("S->S", "S->T", "T->S", "T->T")
        for story in stories
        for ending in ("correct", "incorrect")
    ]
    assert scored == tokenizer(strings)["input_ids"]
    assert all(0 in ids[1:] for ids in scored[6:]), "the masked id 0 is a target"
    np.testing.assert_allclose(got, _slamkit_log_likelihood(model, tokenizer, strings), rtol=1e-4)
    prompt, ending = stories[0]["mutual"][0], stories[0]["correct"][0]
    joined = _slamkit_units(hubert, [np.concatenate([prompt, ending])])[0]
    apart = _slamkit_units(hubert, [prompt])[0] + _slamkit_units(hubert, [ending])[0]
    assert joined != [k for k, _ in itertools.groupby(apart)], "HuBERT sees across the seam"
    scored, _ = _evaluate(monkeypatch, ckpt, hubert, "cm_storycloze", data, tmp_path, "jaxslm")
    assert scored == tokenizer(strings)["input_ids"], "jaxslm's rules score the same sequences"


def test_padded_audio_batches_equal_slamkit(interleaved, hubert, tmp_path, monkeypatch):
    """sStoryCloze from audio: ten pairs of different lengths, so batches of 8 pairs and 2,
    positives padded together and negatives together."""
    ckpt, model, tokenizer = interleaved
    data = tmp_path / "sc"
    data.mkdir()
    waves = {}
    for i in range(10):
        for j, role in enumerate(("correct", "incorrect")):
            _write_wave(data / f"{i}_{role}.wav", 0.35 + 0.11 * ((3 * i + j) % 7), seed=i + 50 * j)
            waves[i, role] = soundfile.read(data / f"{i}_{role}.wav", dtype="float32")[0]
    scored, got = _evaluate(monkeypatch, ckpt, hubert, "sstorycloze", data, tmp_path)
    units, changed = {}, 0
    for start in (0, 8):
        for role in ("correct", "incorrect"):
            batch = [waves[i, role] for i in range(start, min(start + 8, 10))]
            alone = [_slamkit_units(hubert, [wave])[0] for wave in batch]
            padded = _slamkit_units(hubert, batch)
            changed += sum(a != b for a, b in zip(padded, alone, strict=True))
            units.update({(start + k, role): u for k, u in enumerate(padded)})
    assert changed >= 4, "the padding changes the units of some files"
    strings = [
        _units_string(units[i, role]) for i in range(10) for role in ("correct", "incorrect")
    ]
    assert scored == tokenizer(strings)["input_ids"]
    np.testing.assert_allclose(got, _slamkit_log_likelihood(model, tokenizer, strings), rtol=1e-4)


@pytest.mark.parametrize("modality", ["speech", "text"])
def test_modality_restriction_equals_slamkit(interleaved, modality):
    """Where the tokenizer prepends BOS, slamkit's speech restriction bans BOS and keeps both
    markers and its text restriction bans the markers; elsewhere it is jaxslm's."""
    import jaxslm
    from jaxslm.vocab import allowed_tokens

    ckpt, model, tokenizer = interleaved
    lm = jaxslm.load(ckpt, compute_dtype="float32")
    ignored = _ignore_tokens(tokenizer, modality)
    rules = lm.make_scorer(compat="slamkit").slamkit
    allowed = rules.allowed(lm.vocab, modality, lm.config.padded_vocab_size)
    assert set(np.flatnonzero(~allowed[: lm.vocab.size])) == set(ignored)
    jaxslm_rule = allowed_tokens(lm.vocab, modality, lm.config.padded_vocab_size)
    assert (allowed == jaxslm_rule).all() == (tokenizer.bos_token_id is None)
    rng = np.random.default_rng(4)
    if modality == "speech":
        strings = [_units_string(rng.integers(0, UNITS, n).tolist()) for n in (5, 9, 14)]
    else:
        strings = TEXTS[:3]
    ids = [tokenizer(s)["input_ids"] for s in strings]
    got = lm.log_likelihood(ids, modality=modality, compat="slamkit")
    want = _slamkit_log_likelihood(model, tokenizer, strings, modality)
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_compat_options_are_checked(tmp_path, capsys):
    data = tmp_path / "swuggy.jsonl"
    data.write_text(json.dumps({"file_name": "0_a.wav", "units": [1]}) + "\n")
    argv = ["--checkpoint", str(tmp_path), "--task", "swuggy", "--data", str(data)]
    assert evaluate.main([*argv, "--slamkit-batch-size", "4"]) == 2
    assert "with --compat slamkit" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main([*argv, "--compat", "pytorch"])
