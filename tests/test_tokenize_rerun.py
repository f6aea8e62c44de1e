"""`python -m jaxslm.tokenize_audio` run again on its own output: failed and new files are
tokenized, every earlier line is kept, OUT is replaced whole; a second writer is refused and a
line cut short by a kill is redone. A stand-in tokenizer (units from the wave's length) keeps
these tests free of any model."""

import fcntl
import json

import numpy as np
import pytest
import soundfile

from jaxslm import tokenize_audio
from jaxslm.speech.tokenizer import SpeechTokenizer


class LengthTokenizer:
    """Units [samples % 997, 1] with durations [1, 2]: an oracle needs only the file length."""

    def __init__(self, while_tokenizing=lambda: None):
        self.seen: list[int] = []
        self.while_tokenizing = while_tokenizing

    def units(self, waves):
        self.while_tokenizing()
        self.seen += [len(w) for w in waves]
        return [(np.array([len(w) % 997, 1]), np.array([1, 2])) for w in waves]


def _line(name: str, samples: int) -> dict:
    return {"file_name": name, "units": [samples % 997, 1], "duration": [1, 2]}


def _wav(path, samples: int) -> None:
    soundfile.write(path, np.full(samples, 0.1, np.float32), 16000)


def _records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _run(monkeypatch, tmp_path, tokenizer, out_name: str = "units.jsonl") -> int:
    def load(*args, **kwargs):
        if tokenizer is None:
            raise AssertionError("the tokenizer must not be loaded")
        return tokenizer

    monkeypatch.setattr(SpeechTokenizer, "load", load)
    argv = ["--audio", tmp_path / "audio", "--hubert", tmp_path, "--codebook", tmp_path / "km"]
    return tokenize_audio.main([*map(str, argv), "--out", str(tmp_path / out_name)])


@pytest.fixture
def audio(tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    _wav(folder / "a.wav", 8000)
    (folder / "b.wav").write_bytes(b"not audio at all")
    return folder


def test_a_rerun_tokenizes_failed_and_new_files_and_keeps_the_rest(
    audio, tmp_path, monkeypatch, capsys
):
    out, errors = tmp_path / "units.jsonl", tmp_path / "units.errors.jsonl"
    assert _run(monkeypatch, tmp_path, LengthTokenizer()) == 0
    assert _records(out) == [_line("a.wav", 8000)]
    assert [r["file_name"] for r in _records(errors)] == ["b.wav"]
    first = out.read_text()

    _wav(audio / "b.wav", 9000)  # the bad file replaced
    _wav(audio / "c.wav", 4000)  # and a new one
    tokenizer = LengthTokenizer(lambda: (out.read_text() == first) or pytest.fail("OUT changed"))
    assert _run(monkeypatch, tmp_path, tokenizer) == 0
    assert sorted(tokenizer.seen) == [4000, 9000]  # a.wav is not tokenized again
    assert _records(out) == [_line("a.wav", 8000), _line("c.wav", 4000), _line("b.wav", 9000)]
    assert not errors.exists() and not (tmp_path / "units.jsonl.partial").exists()
    assert "2 file(s) tokenized, 0 failed, 1 already in the output" in capsys.readouterr().out

    before = out.stat()
    assert _run(monkeypatch, tmp_path, None) == 0  # nothing left: no model, OUT untouched
    assert (out.stat().st_ino, out.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_file_that_still_fails_stays_in_the_errors(audio, tmp_path, monkeypatch):
    assert _run(monkeypatch, tmp_path, LengthTokenizer()) == 0
    _wav(audio / "c.wav", 4000)
    assert _run(monkeypatch, tmp_path, LengthTokenizer()) == 0
    assert [r["file_name"] for r in _records(tmp_path / "units.errors.jsonl")] == ["b.wav"]
    assert [r["file_name"] for r in _records(tmp_path / "units.jsonl")] == ["a.wav", "c.wav"]


def test_a_killed_rerun_resumes_with_every_line(audio, tmp_path, monkeypatch):
    """A rerun killed after one new line: OUT is the old one, OUT.partial holds OUT's lines,
    one new line and a line cut short before its newline (complete JSON, so only the missing
    newline shows it was cut)."""
    out, partial = tmp_path / "units.jsonl", tmp_path / "units.jsonl.partial"
    out.write_text(json.dumps(_line("a.wav", 8000)) + "\n")
    _wav(audio / "b.wav", 9000)
    _wav(audio / "c.wav", 4000)
    partial.write_text(
        json.dumps(_line("a.wav", 8000)) + "\n" + json.dumps(_line("c.wav", 4000)) + "\n"
        + json.dumps(_line("b.wav", 9000))
    )  # fmt: skip
    tokenizer = LengthTokenizer()
    assert _run(monkeypatch, tmp_path, tokenizer) == 0
    assert tokenizer.seen == [9000]
    assert _records(out) == [_line("a.wav", 8000), _line("c.wav", 4000), _line("b.wav", 9000)]


def test_bytes_that_are_not_utf8_after_the_last_line_are_dropped(audio, tmp_path, monkeypatch):
    partial = tmp_path / "units.jsonl.partial"
    partial.write_bytes(json.dumps(_line("a.wav", 8000)).encode() + b"\n\xff\xfe{")
    assert _run(monkeypatch, tmp_path, LengthTokenizer()) == 0
    assert _records(tmp_path / "units.jsonl") == [_line("a.wav", 8000)]


def test_the_output_folder_is_made(audio, tmp_path, monkeypatch):
    assert _run(monkeypatch, tmp_path, LengthTokenizer(), "new/sub/units.jsonl") == 0
    assert _records(tmp_path / "new/sub/units.jsonl") == [_line("a.wav", 8000)]
    assert (tmp_path / "new/sub/units.errors.jsonl").is_file()


def test_a_single_audio_file_is_tokenized_under_its_name(audio, tmp_path, monkeypatch):
    monkeypatch.setattr(SpeechTokenizer, "load", lambda *a, **k: LengthTokenizer())
    argv = ["--audio", audio / "a.wav", "--hubert", tmp_path, "--codebook", tmp_path / "km"]
    assert tokenize_audio.main([*map(str, argv), "--out", str(tmp_path / "units.jsonl")]) == 0
    assert _records(tmp_path / "units.jsonl") == [_line("a.wav", 8000)]


def test_the_progress_bar_shows_seconds_to_a_tenth(tmp_path, capsys):
    (tmp_path / "audio").mkdir()
    _wav(tmp_path / "audio" / "a.wav", 1600)
    _wav(tmp_path / "audio" / "b.wav", 3200)  # 0.1 s + 0.2 s, in two batches: 0.30000000000000004
    entries = tokenize_audio.list_audio(tmp_path / "audio")
    tokenize_audio.tokenize_files(entries, LengthTokenizer(), tmp_path / "u.jsonl", 0.15)
    assert "| 0.3/0.3 [" in capsys.readouterr().err.split("\r")[-1]


def test_a_second_writer_of_the_same_output_is_refused(audio, tmp_path, monkeypatch, capsys):
    partial = tmp_path / "units.jsonl.partial"
    with open(partial, "a+b") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert _run(monkeypatch, tmp_path, None) == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and f"{partial}: another run is writing" in message
    assert not (tmp_path / "units.jsonl").exists()


def test_an_impossible_output_is_refused_before_the_model_loads(
    audio, tmp_path, monkeypatch, capsys
):
    (tmp_path / "file").write_text("")
    monkeypatch.setattr(SpeechTokenizer, "load", lambda *a, **k: pytest.fail("model loaded"))
    argv = ["--audio", audio, "--hubert", tmp_path, "--codebook", tmp_path / "km"]
    out = tmp_path / "file" / "units.jsonl"
    assert tokenize_audio.main([*map(str, argv), "--out", str(out)]) == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and "file is a file; choose another output path" in message
