"""Bad inputs to the converter: one clear error, exit code 2, nothing written."""

import json
import shutil

import pytest
from processes import kill_once_writing

from jaxslm.hf import importer
from jaxslm.hf.cli import main


@pytest.fixture
def hf_copy(llama_hf, tmp_path):
    """A writable copy of the tiny Llama directory."""
    return shutil.copytree(llama_hf[0], tmp_path / "hf")


def _fails(argv, capsys, *fragments):
    assert main([str(a) for a in argv]) == 2
    message = capsys.readouterr().err
    assert message.startswith("error: ") and message.count("\n") == 1, message
    for fragment in fragments:
        assert fragment in message, message


def _nothing_written(out):
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def test_missing_config(hf_copy, tmp_path, capsys):
    (hf_copy / "config.json").unlink()
    _fails(["import-hf", hf_copy, tmp_path / "out"], capsys, "config.json", "not found")
    _nothing_written(tmp_path / "out")


def test_missing_weights(hf_copy, tmp_path, capsys):
    (hf_copy / "model.safetensors").unlink()
    _fails(["import-hf", hf_copy, tmp_path / "out"], capsys, "model.safetensors", str(hf_copy))
    _nothing_written(tmp_path / "out")


def test_unsupported_model_type(hf_copy, tmp_path, capsys):
    config = json.loads((hf_copy / "config.json").read_text())
    (hf_copy / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    _fails(["import-hf", hf_copy, tmp_path / "out"], capsys, "'gpt2'", "llama", "qwen2", "slamkit")
    _nothing_written(tmp_path / "out")


def test_tokenizer_larger_than_the_embedding(hf_copy, tmp_path, capsys):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(hf_copy / "tokenizer.json"))
    tokenizer.add_tokens([f"extra{i}" for i in range(5)])
    tokenizer.save(str(hf_copy / "tokenizer.json"))
    _fails(["import-hf", hf_copy, tmp_path / "out"], capsys, "tokenizer has", "embedding rows")
    _nothing_written(tmp_path / "out")


def test_shape_mismatch_in_weight_file(hf_copy, tmp_path, capsys):
    config = json.loads((hf_copy / "config.json").read_text())
    (hf_copy / "config.json").write_text(json.dumps({**config, "intermediate_size": 100}))
    _fails(
        ["import-hf", hf_copy, tmp_path / "out"],
        capsys,
        "model.safetensors",
        "mlp.gate_proj.weight",
        "[100, 64]",
    )
    _nothing_written(tmp_path / "out")


def test_existing_output_is_refused_then_overwritten(hf_copy, llama_ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    _fails(["import-hf", hf_copy, out, "--speech-units", "4"], capsys, str(out), "--overwrite")
    _fails(["export-hf", llama_ckpt, out], capsys, "--overwrite")
    assert (out / "keep.txt").read_text() == "user data"
    assert main(["import-hf", str(hf_copy), str(out), "--speech-units", "4", "--overwrite"]) == 0
    assert (out / "jaxslm.json").is_file() and not (out / "keep.txt").exists()


def test_interrupted_conversion_leaves_nothing(hf_copy, tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(importer, "write_checkpoint", crash)
    with pytest.raises(KeyboardInterrupt):
        importer.import_hf(hf_copy, tmp_path / "out", speech_units=4)
    _nothing_written(tmp_path / "out")


def test_export_of_a_non_checkpoint(tmp_path, capsys):
    _fails(["export-hf", tmp_path, tmp_path / "out"], capsys, "jaxslm.json", "import-hf")
    _nothing_written(tmp_path / "out")
    _fails(["export-hf", tmp_path / "tni", tmp_path / "out"], capsys, "tni: no such folder")


def test_help_explains_both_commands(capsys):
    with pytest.raises(SystemExit):
        main(["import-hf", "--help"])
    text = capsys.readouterr().out
    assert "--speech-units" in text and "--mode" in text and "--tokenizer" in text


@pytest.mark.parametrize(
    "content, fragment",
    [("[1, 2]", "expected a JSON object of model settings, found a list"), ("{", "not valid JSON")],
)
def test_config_that_is_not_an_object(hf_copy, tmp_path, capsys, content, fragment):
    (hf_copy / "config.json").write_text(content)
    _fails(["import-hf", hf_copy, tmp_path / "out"], capsys, "config.json", fragment)
    _nothing_written(tmp_path / "out")


def _rope_without(key):
    return lambda config: config[_rope_key(config)].pop(key)


def _rope_key(config) -> str:
    return "rope_parameters" if config.get("rope_parameters") else "rope_scaling"


@pytest.mark.parametrize(
    "change, fragments",
    [
        (
            lambda c: c.update(hidden_size="64"),
            ["hidden_size must be a whole number > 0, got '64'"],
        ),
        (lambda c: c.update(rms_norm_eps=None), ["rms_norm_eps must be a number > 0, got None"]),
        (lambda c: c.update(max_position_embeddings=None), ["max_position_embeddings must be"]),
        (
            lambda c: c.update(num_key_value_heads=3),
            ["num_attention_heads=4 must be a multiple of num_key_value_heads=3"],
        ),
        (lambda c: c.update(head_dim=15), ["head_dim=15 must be even"]),
        (lambda c: c[_rope_key(c)].update(rope_theta=None), ["rope_theta must be a number > 0"]),
        (_rope_without("factor"), ["of rope type llama3 lacks factor"]),
    ],
)
def test_bad_config_fields_are_named(hf_copy, tmp_path, capsys, change, fragments):
    config = json.loads((hf_copy / "config.json").read_text())
    change(config)
    (hf_copy / "config.json").write_text(json.dumps(config))
    _fails(["import-hf", hf_copy, tmp_path / "out"], capsys, "config.json", *fragments)
    _nothing_written(tmp_path / "out")


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--speech-units", "-5"], "--speech-units -5: must be >= 0"),
        (["--speech-units", "0", "--mode", "speech-only"], "which --mode speech-only contradicts"),
    ],
)
def test_contradicting_vocabulary_flags(hf_copy, tmp_path, capsys, flags, fragment):
    _fails(["import-hf", hf_copy, tmp_path / "out", *flags], capsys, fragment)
    _nothing_written(tmp_path / "out")


@pytest.mark.parametrize(
    "index, fragment",
    [
        ("{not json", "not valid JSON"),
        ("[]", "'weight_map' maps tensor names"),
        ('{"weight_map": []}', "'weight_map' maps tensor names"),
        ('{"weight_map": {"a": ["x"]}}', "not shard file names"),
        ('{"weight_map": {"a": "../model.safetensors"}}', "not shard file names"),
    ],
)
def test_invalid_shard_index(hf_copy, tmp_path, capsys, index, fragment):
    (hf_copy / "model.safetensors.index.json").write_text(index)
    _fails(
        ["import-hf", hf_copy, tmp_path / "out"], capsys, "model.safetensors.index.json", fragment
    )
    _nothing_written(tmp_path / "out")


def test_outputs_that_cannot_be_written_are_refused_first(hf_copy, llama_ckpt, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    for argv in (["import-hf", hf_copy], ["export-hf", llama_ckpt]):
        _fails([*argv, tmp_path / "file" / "out"], capsys, "file is a file", "another output")


def test_an_output_whose_folder_is_missing_is_refused(hf_copy, llama_ckpt, tmp_path, capsys):
    out = tmp_path / "missing" / "dir" / "out"
    for argv in (
        ["import-hf", hf_copy],
        ["export-hf", llama_ckpt],
        ["import-slm-scaling", hf_copy],
    ):
        _fails([*argv, out], capsys, f"{out.parent} does not exist", "make it first")
    assert not (tmp_path / "missing").exists()


STALLED_IMPORT = """
import sys, time
from jaxslm.hf import cli, importer

def stall(staging, *args):
    (staging / "params").mkdir()
    print("writing", flush=True)
    time.sleep(600)

importer.write_checkpoint = stall  # the import stops inside its staging folder until killed
cli.main(sys.argv[1:])
"""


def test_a_killed_imports_staging_folder_is_removed_by_the_next(hf_copy, tmp_path, capsys):
    argv = ["import-hf", str(hf_copy), str(tmp_path / "out"), "--speech-units", "4"]
    other = tmp_path / ".other.partial-1@elsewhere-abcdefgh"  # another output's: not touched
    other.mkdir()
    kill_once_writing(STALLED_IMPORT, argv)
    stale = [p for p in tmp_path.iterdir() if p.name.startswith(".out.partial-")]
    assert len(stale) == 1 and (stale[0] / "params").is_dir()
    assert main(argv) == 0
    assert f"removed stale staging folder {stale[0]}" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".other.partial-1@elsewhere-abcdefgh",
        "hf",
        "out",
    ]


def test_an_unset_context_is_transformers_default(hf_copy, tmp_path):
    from transformers import LlamaConfig

    from jaxslm.model_dir import read_metadata

    config = json.loads((hf_copy / "config.json").read_text())
    config.pop("max_position_embeddings")
    (hf_copy / "config.json").write_text(json.dumps(config))
    assert main(["import-hf", str(hf_copy), str(tmp_path / "out")]) == 0
    cfg = read_metadata(tmp_path / "out")[0]
    assert cfg.max_position_embeddings == LlamaConfig().max_position_embeddings
