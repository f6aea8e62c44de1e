"""slamkit's generative metrics in `python -m jaxslm.evaluate`, end to end and offline: the
tiny speech LM continues cut prompts, the toy vocoder renders them (the JAX HiFi-GAN is tested
in test_vocoder.py and test_vocode_cli.py; compiling it here would double this test's time), a
tiny random Whisper built here transcribes them, and the tiny Llama scores the transcripts.
The perplexity is recomputed here per transcript, unpadded, with the torch model; auto-BLEU
against values worked out by hand from slamkit's rule (utils/calculation_utils.py: the share
of n-grams that occur elsewhere in the same transcript)."""

import json

import numpy as np
import pytest
import soundfile
import torch

from jaxslm import evaluate
from jaxslm.evals.auto_bleu import text_auto_bleu
from jaxslm.speech.toy_vocoder import DEFAULT_FRAMES, FRAME_SECONDS, SAMPLE_RATE

SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>"]
NO_TIMESTAMPS = "<|notimestamps|>"


@pytest.mark.parametrize(
    ("text", "n", "expected"),
    [
        # bigrams: the cat | cat sat | sat on | on the | the mat | mat the | the cat | cat sat
        ("the cat sat on the mat the cat sat", 2, 4 / 8),
        # NLTK tokens Hello , hello , hello . -> bigrams: "Hello ,", ", hello" x2, "hello ,",
        # "hello ."
        ("Hello, hello, hello.", 2, 2 / 5),
        ("a b a", 1, 2 / 3),
        ("one", 2, 0.0),
        ("", 2, 0.0),
    ],
)
def test_auto_bleu_by_hand(text, n, expected):
    assert text_auto_bleu(text, n) == pytest.approx(expected)


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    """A tiny random Whisper with a byte-level BPE tokenizer, its specials after the text
    tokens (as Whisper's, so that none reads as a timestamp), saved as a local HF folder."""
    from tiny_models import randomize
    from tiny_tokenizers import CORPUS, train_bpe
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    directory = tmp_path_factory.mktemp("whisper")
    train_bpe(CORPUS).model.save(str(directory))
    eot = SPECIALS[0]
    tokenizer = WhisperTokenizer(
        str(directory / "vocab.json"),
        str(directory / "merges.txt"),
        unk_token=eot,
        bos_token=eot,
        eos_token=eot,
        pad_token=eot,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [*SPECIALS[1:], NO_TIMESTAMPS]})
    eot_id, start_id, timestamps_id = tokenizer.convert_tokens_to_ids(
        [eot, SPECIALS[1], NO_TIMESTAMPS]
    )
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=16,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_target_positions=64,
        pad_token_id=eot_id,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
        decoder_start_token_id=start_id,
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).eval()
    randomize(model, seed=3, scale=0.3)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=start_id,
        eos_token_id=eot_id,
        pad_token_id=eot_id,
        max_new_tokens=12,
        no_timestamps_token_id=timestamps_id,
    )
    model.save_pretrained(directory)
    feature_extractor = WhisperFeatureExtractor(feature_size=16)
    WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(
        directory
    )
    return directory


def _prompt_lines(path):
    """Toy-corpus style unit lines; the first two last past 3 s (cut), the others not."""
    rng = np.random.default_rng(4)
    lines = []
    for index, (count, frames) in enumerate(((40, 3), (30, 5), (6, 2), (9, 1))):
        lines.append(
            {
                "file_name": f"{index}.wav",
                "units": rng.integers(0, 20, count).tolist(),
                "duration": [frames] * count,
            }
        )
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return lines


def test_generate_and_asr_perplexity_end_to_end(llama_ckpt, llama_hf, whisper_dir, tmp_path):
    from nltk.tokenize import NLTKWordTokenizer
    from transformers import AutoTokenizer

    lines = _prompt_lines(tmp_path / "prompts.jsonl")
    audio, out, pairs = tmp_path / "audio", tmp_path / "results.json", tmp_path / "items.jsonl"
    data = str(tmp_path / "prompts.jsonl")
    argv = ["--checkpoint", str(llama_ckpt), "--task", "generate", "--data", data]
    argv += ["--task", "asr_perplexity", "--data", data, "--vocoder", "toy"]
    argv += ["--audio-out", str(audio), "--whisper", str(whisper_dir), "--text-lm"]
    argv += [str(llama_hf[0]), "--max-new-tokens", "10", "--num-files", "3"]
    argv += ["--generate-batch", "2"]  # two chunks (the JAX vocoder: tests/test_vocoder.py)
    argv += ["--out", str(out), "--pairs-out", str(pairs), "--no-progress"]
    assert evaluate.main(argv) == 0

    summaries = json.loads(out.read_text())["tasks"]
    items = [json.loads(line) for line in pairs.read_text().splitlines()]
    for task in ("generate", "asr_perplexity"):
        summary = summaries[task]
        assert summary["prompts"] == 3
        assert (summary["temperature"], summary["top_k"], summary["prompt_seconds"]) == (
            0.8,
            25,
            3.0,
        )
        mine = [item for item in items if item["task"] == task]
        for item, line in zip(mine, lines, strict=False):
            ends = np.cumsum(line["duration"]) * 0.04  # units that end within 3 s
            assert item["prompt_units"] == line["units"][: max(1, int(np.sum(ends <= 3.0)))]
            assert 0 < len(item["units"]) <= 10
    # the prompt's units are vocoded before the continuation's (slamkit keeps the prompt)
    per_unit = DEFAULT_FRAMES * round(FRAME_SECONDS * SAMPLE_RATE)  # the toy rule, restated
    for index, item in enumerate(items):
        assert item["audio"] == f"{item['task']}_{index % 3}.wav"
        wave, _ = soundfile.read(audio / item["audio"], dtype="float32")
        assert wave.size == (len(item["prompt_units"]) + len(item["units"])) * per_unit

    scored = [item for item in items if item["task"] == "asr_perplexity"]
    transcripts = [item["transcript"] for item in scored]
    assert all(transcripts)
    tokenizer = AutoTokenizer.from_pretrained(llama_hf[0])
    nlls = []
    for text in transcripts:  # each alone, unpadded: mean next-token NLL
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        with torch.no_grad():
            logits = llama_hf[1](ids).logits[0, :-1]
        nlls.append(torch.nn.functional.cross_entropy(logits, ids[0, 1:]).item())
    summary = summaries["asr_perplexity"]
    assert summary["asr_perplexity"] == pytest.approx(np.exp(np.mean(nlls)), rel=1e-4)
    assert [item["nll"] for item in scored] == pytest.approx(nlls, rel=1e-4)

    def bleu(text):  # slamkit's rule restated: n-grams found elsewhere in the transcript
        tokens = NLTKWordTokenizer().tokenize(text)
        grams = [" ".join(tokens[i : i + 2]) for i in range(len(tokens) - 1)]
        return sum(grams.count(g) > 1 for g in grams) / len(grams) if grams else 0

    assert summary["auto_bleu_2"] == pytest.approx(np.mean([bleu(t) for t in transcripts]))


def test_generative_tasks_refuse_missing_models(llama_ckpt, tmp_path, capsys):
    _prompt_lines(tmp_path / "prompts.jsonl")
    base = ["--checkpoint", str(llama_ckpt), "--data", str(tmp_path / "prompts.jsonl")]
    cases = [
        (["--task", "generate", "--audio-out", str(tmp_path / "a")], "needs --vocoder"),
        (["--task", "generate", "--vocoder", "toy"], "give --audio-out"),
        (["--task", "asr_perplexity", "--vocoder", "toy"], "--whisper is needed"),
        (
            ["--task", "asr_perplexity", "--vocoder", "toy", "--whisper", str(tmp_path)],
            "not a HF model folder",
        ),
    ]
    for extra, message in cases:
        assert evaluate.main([*base, *extra]) == 2
        assert message in capsys.readouterr().err


def test_llm_as_judge_reads_the_first_boxed_number_of_the_whole_decoded_output(
    llama_ckpt, llama_hf, whisper_dir, tmp_path
):
    """slamkit decodes prompt and answer together, so a `\\boxed{3}` in the instruction is the
    first one found: every tiny random answer scores 3."""
    import shutil

    from tokenizers import Tokenizer, decoders

    _prompt_lines(tmp_path / "prompts.jsonl")
    judge = shutil.copytree(llama_hf[0], tmp_path / "judge")
    bpe = Tokenizer.from_file(str(judge / "tokenizer.json"))
    bpe.decoder = decoders.ByteLevel()  # decode to the text, not tokens joined by spaces
    bpe.save(str(judge / "tokenizer.json"))
    pairs = tmp_path / "items.jsonl"
    instruction = "[prompt_audio_transcription] then [generated_audio_transcription]: \\boxed{3}"
    argv = ["--checkpoint", str(llama_ckpt), "--task", "llm_as_judge"]
    argv += ["--data", str(tmp_path / "prompts.jsonl"), "--vocoder", "toy", "--num-files", "2"]
    argv += ["--whisper", str(whisper_dir), "--judge", str(judge), "--no-use-alignment"]
    argv += ["--min-file-seconds", "0", "--max-new-tokens", "6", "--no-progress"]
    argv += [
        "--judge-max-new-tokens",
        "8",
        "--judge-instruction",
        instruction,
        "--pairs-out",
        str(pairs),
    ]
    assert evaluate.main(argv) == 0
    items = [json.loads(line) for line in pairs.read_text().splitlines()]
    assert len(items) == 2 and all(item["judge_score"] == 3 for item in items)
    assert all(item["prompt_transcript"] and item["transcript"] for item in items)
    assert "audio" not in items[0]  # no --audio-out: nothing written


def test_prompts_follow_slamkits_selection_and_cut(tmp_path):
    """slamkit's PromptDataset restated: files shorter than min_file_length dropped, the first
    num_files kept, each cut at 3 s, or with use_alignment at the end of the word whose end is
    closest to 3 s (the first on a tie, as torch's argmin)."""
    from jaxslm.evals.generative_prompts import PromptRules, unit_prompts

    words = [["a", 0.0, 1.0], ["b", 1.0, 2.5], ["c", 2.5, 3.5], ["d", 3.5, 4.0]]
    lines = [
        {"file_name": "short.wav", "units": [1, 2], "duration": [10, 10]},  # 0.8 s
        {
            "file_name": "x.wav",
            "units": list(range(10)),
            "duration": [10] * 10,
            "aligned_text": words,
        },
        {
            "file_name": "y.wav",
            "units": list(range(9)),
            "duration": [25] * 9,
            "aligned_text": words,
        },
        {"file_name": "z.wav", "units": [3] * 30, "duration": [5] * 30, "aligned_text": words},
    ]
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    by_seconds = unit_prompts(path, PromptRules(seconds=3.0, num_files=2, min_seconds=1.0))
    assert [(p.name, len(p.units)) for p in by_seconds] == [("x.wav", 7), ("y.wav", 3)]
    aligned = unit_prompts(path, PromptRules(seconds=3.0, use_alignment=True, min_seconds=1.0))
    # ends 2.5 and 3.5 tie at 0.5 from 3 s: cut at 2.5 s -> 6 units of 0.4 s, 2 of 1 s
    assert [len(p.units) for p in aligned] == [6, 2, 12]


def test_text_lm_scores_in_float32_whatever_dtype_it_was_saved_in(tmp_path):
    """slamkit loads the text LM in float32 (transformers 4.x's default); transformers 5
    would keep a bf16 checkpoint in bf16 unless told."""
    from tiny_models import llama_config, save_hf_model
    from tiny_tokenizers import build_tokenizer

    from jaxslm.evals.asr_metrics import TextPerplexity

    tokenizer = build_tokenizer(tmp_path)
    oracle = save_hf_model(llama_config(len(tokenizer)), tmp_path, seed=3, dtype=torch.bfloat16)
    scorer = TextPerplexity(tmp_path)
    assert scorer.model.dtype == torch.float32
    texts = ["the cat sat on the mat", "a dog ran"]
    want = []
    for text in texts:
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        with torch.no_grad():
            logits = oracle(ids).logits[0, :-1]
        want.append(torch.nn.functional.cross_entropy(logits, ids[0, 1:]).item())
    assert scorer.nlls(texts) == pytest.approx(want, rel=1e-5)


def test_judge_transcribes_audio_prompts_at_16khz_and_vocoded_ones_at_the_vocoders_rate():
    """A prompt that came as audio is 16 kHz whatever the vocoder's rate; a unit-line prompt
    has no audio and is vocoded, so it is at the vocoder's rate."""
    from jaxslm.evals.generative import _prompt_waves
    from jaxslm.evals.generative_prompts import Prompt

    class Vocoder24k:
        sample_rate = 24_000

        def vocode(self, units):
            return [np.ones(len(u) * 480, np.float32) for u in units]

    audio = np.zeros(48_000, np.float32)
    prompts = [Prompt("spoken.wav", (1, 2), audio), Prompt("line.wav", (3, 4, 5))]
    waves, rates = _prompt_waves(prompts, Vocoder24k())
    assert waves[0] is audio and waves[1].size == 3 * 480
    assert rates == [16_000, 24_000]
