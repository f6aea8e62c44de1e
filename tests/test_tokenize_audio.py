"""`python -m jaxslm.tokenize_audio` against transformers' HubertModel + a numpy argmin (the way
slamkit tokenizes one file: 40 zero samples each side, hidden_states[layer], nearest centroid,
dedup), with broken inputs, resume and the pickle guard."""

import json

import numpy as np
import pytest
import soundfile
import torch
from tiny_models import tiny_hubert

from jaxslm import tokenize_audio
from jaxslm.data.records import dedup

LAYER = 2


@pytest.fixture(scope="module")
def hubert(tmp_path_factory):
    """(directory, torch model) of a tiny random HuBERT-base layout (group norm, 50 Hz)."""
    model = tiny_hubert(scale=0.3)
    directory = tmp_path_factory.mktemp("hubert")
    model.save_pretrained(directory)
    return directory, model


@pytest.fixture(scope="module")
def codebook(tmp_path_factory):
    path = tmp_path_factory.mktemp("codebook") / "km12.npy"
    np.save(path, np.random.default_rng(1).normal(size=(12, 32)).astype(np.float32))
    return path


def _audio_folder(root, rng):
    """Five tones-plus-noise files of different lengths (one stereo 8 kHz flac) and three broken
    ones: random bytes, an empty file, text."""
    waves = {}
    for i, seconds in enumerate((0.7, 1.3, 0.4, 2.1)):
        wave = (
            0.3 * np.sin(np.arange(int(16000 * seconds)) * (0.03 + 0.01 * i))
            + 0.05 * rng.normal(size=int(16000 * seconds))
        ).astype(np.float32)
        name = f"spk{i % 2}/utt{i}.wav"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(root / name, wave, 16000)
        waves[name] = wave
    stereo = 0.2 * rng.normal(size=(8000, 2))
    soundfile.write(root / "stereo.flac", stereo, 8000)
    (root / "broken.wav").write_bytes(rng.bytes(3000))
    (root / "empty.wav").write_bytes(b"")
    (root / "notes.wav").write_text("this is not audio")
    return waves


def _oracle_units(model, centroids, wave):
    padded = torch.nn.functional.pad(torch.as_tensor(wave)[None], (40, 40))
    with torch.no_grad():
        hidden = model(padded, output_hidden_states=True).hidden_states[LAYER][0].numpy()
    distances = ((hidden[:, None, :] - centroids[None]) ** 2).sum(-1)
    return dedup(distances.argmin(1))


def _speech_args(audio, hubert_dir, codebook) -> list[str]:
    """The audio, HuBERT and codebook options that tokenize_audio and the corpus builder share."""
    return [
        "--audio",
        str(audio),
        "--hubert",
        str(hubert_dir),
        "--layer",
        str(LAYER),
        "--codebook",
        str(codebook),
    ]


def _argv(audio, hubert_dir, codebook, out, *extra):
    return [
        *_speech_args(audio, hubert_dir, codebook),
        "--out",
        str(out),
        "--no-progress",
        "--batch-seconds",
        "2.5",
        *extra,
    ]


def test_units_match_transformers_and_broken_files_are_reported(hubert, codebook, tmp_path):
    hubert_dir, model = hubert
    rng = np.random.default_rng(0)
    audio = tmp_path / "audio"
    waves = _audio_folder(audio, rng)
    out = tmp_path / "units.jsonl"
    assert tokenize_audio.main(_argv(audio, hubert_dir, codebook, out)) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    by_name = {r["file_name"]: r for r in records}
    assert set(by_name) == {*waves, "stereo.flac"}
    centroids = np.load(codebook)
    for name, wave in waves.items():
        units, durations = _oracle_units(model, centroids, wave)
        assert by_name[name]["units"] == units.tolist(), name
        assert by_name[name]["duration"] == durations.tolist(), name
    frames = [sum(r["duration"]) for r in records]
    assert frames == sorted(frames)  # tokenized and written shortest first, as slamkit
    errors = {
        json.loads(line)["file_name"]: json.loads(line)["error"]
        for line in (tmp_path / "units.errors.jsonl").read_text().splitlines()
    }
    assert set(errors) == {"broken.wav", "empty.wav", "notes.wav"}
    assert all(name in reason for name, reason in errors.items())
    assert not (tmp_path / "units.jsonl.partial").exists()


def test_resume_after_interruption_equals_one_run(hubert, codebook, tmp_path):
    hubert_dir, _ = hubert
    audio = tmp_path / "audio"
    _audio_folder(audio, np.random.default_rng(3))
    whole = tmp_path / "whole.jsonl"
    assert tokenize_audio.main(_argv(audio, hubert_dir, codebook, whole)) == 0
    lines = whole.read_text().splitlines()
    resumed = tmp_path / "resumed.jsonl"
    # an interrupted run: two finished lines and half of a third
    partial = tmp_path / "resumed.jsonl.partial"
    partial.write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][: len(lines[2]) // 2])
    assert tokenize_audio.main(_argv(audio, hubert_dir, codebook, resumed)) == 0
    assert resumed.read_text() == whole.read_text()


def test_an_out_that_is_another_file_is_refused_not_replaced(hubert, codebook, tmp_path, capsys):
    """OUT is only ever replaced whole by this tool: a file of other lines (a preference
    JSONL given by mistake), or a units file with a damaged line, is refused and kept."""
    hubert_dir, _ = hubert
    audio = tmp_path / "audio"
    _audio_folder(audio, np.random.default_rng(4))
    for content in ('{"prompt": 1}\n{"prompt": 2}\n', '{"file_name": "a.wav"}\nnot json\n'):
        out = tmp_path / "out.jsonl"
        out.write_text(content)
        assert tokenize_audio.main(_argv(audio, hubert_dir, codebook, out)) == 2
        assert out.read_text() == content
        assert "not a line of this tool's output" in capsys.readouterr().err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["audio", "out.jsonl"]


def test_pickle_codebook_needs_trust(hubert, tmp_path, capsys):
    import joblib
    from sklearn.cluster import MiniBatchKMeans

    hubert_dir, _ = hubert
    features = np.random.default_rng(2).normal(size=(200, 32))
    kmeans = MiniBatchKMeans(n_clusters=6, random_state=0, n_init=1).fit(features)
    pickled = tmp_path / "km6.bin"
    joblib.dump(kmeans, pickled)
    audio = tmp_path / "audio"
    audio.mkdir()
    soundfile.write(audio / "a.wav", np.zeros(8000, np.float32) + 0.1, 16000)
    out = tmp_path / "units.jsonl"
    assert tokenize_audio.main(_argv(audio, hubert_dir, pickled, out)) == 2
    message = capsys.readouterr().err
    assert "pickle" in message and "--trust-pickle" in message
    assert not out.exists() and not (tmp_path / "units.jsonl.partial").exists()
    mine = tmp_path / "km6.npy"  # the user's own .npy on the name the conversion would take
    np.save(mine, np.ones((6, 32), np.float32))
    before = mine.read_bytes()
    assert tokenize_audio.main(_argv(audio, hubert_dir, pickled, out, "--trust-pickle")) == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and f"{mine} exists" in message and str(pickled) in message
    assert "--codebook" in message and mine.read_bytes() == before and not out.exists()
    mine.unlink()
    assert tokenize_audio.main(_argv(audio, hubert_dir, pickled, out, "--trust-pickle")) == 0
    assert (tmp_path / "km6.npy").exists()


def test_evaluator_tokenizes_audio_folders_like_the_units_file(
    hubert, codebook, llama_hf, tmp_path
):
    from jaxslm import evaluate
    from jaxslm.hf.importer import import_hf

    hubert_dir, _ = hubert
    ckpt = import_hf(llama_hf[0], tmp_path / "ckpt", speech_units=12, mode="speech-only")
    audio = tmp_path / "swuggy"
    rng = np.random.default_rng(5)
    for name in ("0_word.wav", "0_nonword.wav", "1_word.wav", "1_nonword.wav"):
        audio.mkdir(exist_ok=True)
        soundfile.write(audio / name, (0.3 * rng.normal(size=9000)).astype(np.float32), 16000)
    units = tmp_path / "units.jsonl"
    assert tokenize_audio.main(_argv(audio, hubert_dir, codebook, units)) == 0
    common = ["--checkpoint", str(ckpt), "--task", "swuggy", "--data", str(audio), "--no-progress"]
    direct, cached = tmp_path / "direct.jsonl", tmp_path / "cached.jsonl"
    hubert_args = ["--hubert", str(hubert_dir), "--layer", str(LAYER), "--codebook", str(codebook)]
    assert evaluate.main([*common, *hubert_args, "--pairs-out", str(direct)]) == 0
    assert evaluate.main([*common, "--units", str(units), "--pairs-out", str(cached)]) == 0
    pairs = [json.loads(line) for line in direct.read_text().splitlines()]
    assert [p["positive"] for p in pairs] == ["0_word", "1_word"]
    assert direct.read_text() == cached.read_text()


def test_corpus_builder_tokenizes_audio(hubert, codebook, tmp_path, capsys):
    from jaxslm.data.build import main as build
    from jaxslm.data.corpus import example_to_utterance, open_corpus

    hubert_dir, _ = hubert
    audio = tmp_path / "audio"
    _audio_folder(audio, np.random.default_rng(7))
    out = tmp_path / "corpus"
    argv = [
        *_speech_args(audio, hubert_dir, codebook),
        "--validation-fraction",
        "0",
        "--out",
        str(out),
    ]
    assert build(argv) == 0
    corpus = open_corpus(out)
    assert corpus.num_units == 12 and corpus.frame_seconds == pytest.approx(320 / 16000)
    cached = {
        r["file_name"]: r
        for r in map(json.loads, (tmp_path / "corpus.units.jsonl").read_text().splitlines())
    }
    source = corpus.source("speech", "train")
    utterances = [example_to_utterance(source[i], corpus.frame_seconds) for i in range(len(source))]
    assert {u.id for u in utterances} == set(cached) and len(cached) == 5
    for utterance in utterances:
        assert utterance.units.tolist() == cached[utterance.id]["units"]
        assert utterance.durations.tolist() == cached[utterance.id]["duration"]
    # the cache is keyed by its tokenizer: another codebook is refused, not silently reused
    other = tmp_path / "other.npy"
    np.save(other, np.load(codebook) + 1)
    again = [*_speech_args(audio, hubert_dir, other), "--out", str(out), "--overwrite"]
    assert build(again) == 2
    assert "corpus.units.jsonl: cached units of another tokenizer" in capsys.readouterr().err
    assert (
        build([*_speech_args(audio, hubert_dir, codebook), "--out", str(out), "--overwrite"]) == 0
    )


def test_the_units_cache_stamp_names_final_norm(codebook, tmp_path):
    """Units made with --final-norm are another tokenizer's; caches stamped before the option
    existed keep matching a run without it."""
    from jaxslm.data.units_cache import check_units_cache, tokenizer_stamp
    from jaxslm.errors import JaxslmError

    plain = tokenizer_stamp(tmp_path, 24, codebook)
    normed = tokenizer_stamp(tmp_path, 24, codebook, final_norm=True)
    assert set(plain) == {"hubert", "layer", "codebook_sha256"}
    assert normed == {**plain, "final_norm": True}
    units = tmp_path / "corpus.units.jsonl"
    check_units_cache(units, plain)  # a new cache: stamped
    units.write_text("")
    with pytest.raises(JaxslmError, match="--layer 24 --final-norm and this --codebook"):
        check_units_cache(units, normed)
    check_units_cache(units, plain)


def test_generate_from_audio_prompts(hubert, codebook, llama_hf, tmp_path):
    from jaxslm import generate
    from jaxslm.hf.importer import import_hf

    hubert_dir, _ = hubert
    ckpt = import_hf(llama_hf[0], tmp_path / "ckpt", speech_units=12, mode="speech-only")
    audio = tmp_path / "prompts"
    audio.mkdir()
    rng = np.random.default_rng(9)
    for name in ("a.wav", "b.wav"):
        soundfile.write(audio / name, (0.3 * rng.normal(size=12000)).astype(np.float32), 16000)
    units = tmp_path / "units.jsonl"
    assert tokenize_audio.main(_argv(audio, hubert_dir, codebook, units)) == 0
    expected = {r["file_name"]: r["units"] for r in map(json.loads, units.read_text().splitlines())}
    out = tmp_path / "out.jsonl"
    argv = [
        "--checkpoint",
        str(ckpt),
        "--prompt-audio",
        str(audio),
        "--hubert",
        str(hubert_dir),
        "--layer",
        str(LAYER),
        "--codebook",
        str(codebook),
        "--modality",
        "speech",
        "--max-new-tokens",
        "5",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert generate.main(argv) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    for record in records:
        assert record["prompt_ids"] == [1, *(u + 2 for u in expected[record["prompt"]])]
        assert all(0 <= u < 12 for u in record["units"])


def test_generative_metric_from_audio_prompts(hubert, llama_hf, tmp_path):
    """`evaluate --task generate` over an audio folder (slamkit's usual prompts): each file is
    cut to its first 3 s, tokenized by --hubert/--codebook as transformers + argmin tokenize
    the cut wave, continued, and its prompt units + continuation vocoded (slamkit keeps the
    prompt); slamkit's 5 files at most, in name order."""
    from jaxslm import evaluate
    from jaxslm.hf.importer import import_hf
    from jaxslm.speech.toy_vocoder import DEFAULT_FRAMES, FRAME_SECONDS, SAMPLE_RATE

    hubert_dir, model = hubert
    ckpt = import_hf(llama_hf[0], tmp_path / "ckpt", speech_units=12, mode="speech-only")
    audio = tmp_path / "prompts"
    audio.mkdir()
    rng = np.random.default_rng(11)
    waves = {}
    for index, seconds in enumerate((4.0, 1.5, 3.5, 2.0, 5.0, 3.2)):
        t = np.arange(int(16000 * seconds)) / 16000
        tone = np.sin(2 * np.pi * (200 + 150 * index) * t * (1 + 0.5 * np.sin(3 * t)))
        wave = (0.3 * tone * (1 + np.sin(5 * t)) + 0.05 * rng.normal(size=t.size)).astype(
            np.float32
        )
        soundfile.write(audio / f"{index}.wav", wave, 16000, subtype="FLOAT")
        waves[f"{index}.wav"] = wave
    centroids = []  # 3 frames of each of 4 prompts: the tiny HuBERT's frames vary little
    for index in range(4):
        with torch.no_grad():
            wave = torch.as_tensor(waves[f"{index}.wav"][: 3 * 16000])[None]
            frames = model(wave, output_hidden_states=True).hidden_states[LAYER][0]
        centroids.append(frames.numpy()[10::30][:3])
    centroids = np.concatenate(centroids)
    codebook = tmp_path / "km12.npy"
    np.save(codebook, centroids)
    items, wavs = tmp_path / "items.jsonl", tmp_path / "wavs"
    argv = ["--checkpoint", str(ckpt), "--task", "generate", "--data", str(audio)]
    argv += ["--hubert", str(hubert_dir), "--layer", str(LAYER), "--codebook", str(codebook)]
    argv += ["--vocoder", "toy", "--audio-out", str(wavs), "--max-new-tokens", "6"]
    argv += ["--pairs-out", str(items), "--out", str(tmp_path / "results.json"), "--no-progress"]
    assert evaluate.main(argv) == 0
    records = [json.loads(line) for line in items.read_text().splitlines()]
    assert [r["prompt"] for r in records] == [f"{i}.wav" for i in range(5)]
    per_unit = DEFAULT_FRAMES * round(FRAME_SECONDS * SAMPLE_RATE)  # the toy rule, restated
    for record in records:
        cut = waves[record["prompt"]][: 3 * 16000]
        assert record["prompt_units"] == _oracle_units(model, centroids, cut)[0].tolist()
        assert len(record["prompt_units"]) > 3 and len(record["units"]) <= 6  # <S> may end it
        written, rate = soundfile.read(wavs / record["audio"], dtype="float32")
        units = len(record["prompt_units"]) + len(record["units"])
        assert rate == 16000 and written.size == units * per_unit
    assert any(record["units"] for record in records)


def _oracle_chunked_units(model, centroids, wave, chunk, min_chunk):
    """Cuervo & Marxer's slm-data encode restated: no padding, each chunk alone, short chunks
    dropped, the chunks' frames joined, then runs merged."""
    frames = []
    for start in range(0, len(wave), chunk):
        piece = torch.as_tensor(wave[start : start + chunk])
        if piece.numel() < min_chunk:
            continue
        with torch.no_grad():
            frames.append(model(piece[None], output_hidden_states=True).hidden_states[LAYER][0])
    hidden = torch.cat(frames).numpy()
    distances = ((hidden[:, None, :] - centroids[None]) ** 2).sum(-1)
    return dedup(distances.argmin(1))


def test_cuervo_marxer_extraction_runs_unpadded_chunks(hubert, codebook, tmp_path):
    from jaxslm.hf.hubert_import import load_hubert
    from jaxslm.speech.hubert_features import HubertFeatures
    from jaxslm.speech.quantize import load_codebook
    from jaxslm.speech.tokenizer import Extraction, SpeechTokenizer

    hubert_dir, model = hubert
    centroids = np.load(codebook)
    rng = np.random.default_rng(7)
    # the second file's last 500 samples are a chunk under 720 samples, which is dropped
    waves = [0.3 * rng.normal(size=n).astype(np.float32) for n in (2 * 4000 + 800, 4000 + 500)]
    extraction = Extraction(pad_samples=0, chunk_samples=4000, min_chunk_samples=720)
    features = HubertFeatures(load_hubert(hubert_dir), LAYER, batch_seconds=2.5, pad_samples=0)
    tokenizer = SpeechTokenizer(features, load_codebook(codebook), extraction=extraction)
    for wave, (units, durations) in zip(waves, tokenizer.units(waves), strict=True):
        want_units, want_durations = _oracle_chunked_units(model, centroids, wave, 4000, 720)
        np.testing.assert_array_equal(units, want_units)
        np.testing.assert_array_equal(durations, want_durations)
    # the command line's cuervo-marxer convention: a file under 30 s is one unpadded chunk;
    # this length gives one frame fewer than slamkit's 40 samples of padding each side
    length = next(n for n in range(8000, 8400) if features.frames(n) == features.frames(n + 80) - 1)
    wave = waves[0][:length]
    audio = tmp_path / "audio"
    audio.mkdir()
    soundfile.write(audio / "a.wav", wave, 16000)
    out = tmp_path / "units.jsonl"
    argv = _argv(audio, hubert_dir, codebook, out, "--convention", "cuervo-marxer")
    assert tokenize_audio.main(argv) == 0
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    want_units, want_durations = _oracle_chunked_units(model, centroids, wave, 480000, 720)
    assert record["units"] == want_units.tolist()
    assert record["duration"] == want_durations.tolist()
    slamkit_frames = sum(_oracle_units(model, centroids, wave)[1].tolist())
    assert sum(record["duration"]) == slamkit_frames - 1


def test_a_bad_layer_or_codebook_is_refused_before_the_output_folder_is_made(
    hubert, codebook, tmp_path, capsys
):
    hubert_dir, _ = hubert
    audio = tmp_path / "audio"
    audio.mkdir()
    soundfile.write(audio / "a.wav", np.zeros(8000, np.float32) + 0.1, 16000)
    out = tmp_path / "new" / "units.jsonl"
    argv = _argv(audio, hubert_dir, codebook, out)
    argv[argv.index("--layer") + 1] = "99"
    assert tokenize_audio.main(argv) == 2
    assert "HuBERT layer 99 does not exist" in capsys.readouterr().err
    assert tokenize_audio.main([*_argv(audio, hubert_dir, codebook, out), "--final-norm"]) == 2
    assert "only the stable (large) layout" in capsys.readouterr().err
    assert tokenize_audio.main(_argv(audio, hubert_dir, tmp_path / "absent.npy", out)) == 2
    assert "absent.npy" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_evaluate_tokenizes_audio_as_its_convention_says(hubert, codebook):
    import argparse

    from jaxslm.evaluate import _audio_units
    from jaxslm.speech.tokenizer import EXTRACTIONS

    for convention in ("slamkit", "cuervo-marxer"):
        args = argparse.Namespace(
            hubert=hubert[0],
            layer=LAYER,
            final_norm=False,
            codebook=codebook,
            trust_pickle=False,
            convention=convention,
            compat="jaxslm",
        )
        tokenizer = _audio_units(args, 12).tokenizer
        assert tokenizer.extraction == EXTRACTIONS[convention]
        assert tokenizer.features.pad_samples == EXTRACTIONS[convention].pad_samples
