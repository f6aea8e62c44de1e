"""The training config: YAML + overrides, strict keys and types, value checks, dump round trip."""

import math
from pathlib import Path

import pytest
import yaml

from jaxslm.config import DataSection, TrainConfig, config_to_dict, dump_config, load_config
from jaxslm.errors import JaxslmError

STEPS = "budget.max_steps=10"
SLAM_CONFIG = Path(__file__).parents[1] / "configs" / "slam_qwen2.5_0.5b.yaml"
BASE = """
model:
  hidden_size: 128
  init: null
optimizer:
  lr: 1e-3
  min_lr: 0
budget:
  max_steps: 50
"""


def _write(tmp_path, text, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _fails(path, overrides, *fragments):
    with pytest.raises(JaxslmError) as info:
        load_config(path, overrides)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_yaml_and_overrides(tmp_path):
    path = _write(tmp_path, BASE)
    cfg = load_config(path, ["optimizer.lr=2e-3", "model.init=ckpt/llama", "seed=7"])
    assert cfg.model.hidden_size == 128 and cfg.model.init == "ckpt/llama"
    assert cfg.optimizer.lr == 2e-3 and isinstance(cfg.optimizer.min_lr, float)
    assert cfg.budget.max_steps == 50 and cfg.seed == 7
    assert cfg.name == "exp" and cfg.data == DataSection()
    assert load_config(path, ["model.init=null"]).model.init is None
    _fails(path, ["optimizer.min_lr=1"], f"{path} + command line: optimizer.min_lr=1.0")
    assert load_config(None, [STEPS, "budget.train_max_tokens=2e6"]).budget.train_max_tokens == (
        2_000_000
    )


def test_nested_list_override(tmp_path):
    cfg = load_config(_write(tmp_path, BASE), ["data.stream_weights=[1,0,0]"])
    assert cfg.data.stream_weights == (1.0, 0.0, 0.0)
    _fails(None, [STEPS, "data.stream_weights=[1,a]"], "data.stream_weights", "list of numbers")
    _fails(None, [STEPS, "data.stream_weights=[1,0]"], "data.stream_weights", "3 weights")


def test_unknown_key_in_file(tmp_path):
    path = _write(tmp_path, "model:\n  hidden_size: 8\noptimizer:\n  learning_rate: 1e-3\n")
    message = _fails(path, [], "did you mean 'optimizer.lr'?")
    assert message.startswith(f"{path}: unknown key 'optimizer.learning_rate'")
    _fails(_write(tmp_path, "optimiser:\n  lr: 1\n"), [], "'optimiser'", "'optimizer'")


def test_unknown_key_on_command_line(tmp_path):
    path = _write(tmp_path, BASE)
    _fails(path, ["model.num_hidden_layers=4"], "command line", "did you mean 'model.num_layers'?")
    _fails(path, ["lr=1e-3"], "command line", "unknown key 'lr'", "'optimizer.lr'")
    _fails(path, ["optimiser.lr=1e-3"], "unknown section 'optimiser'", "'optimizer.lr'")
    _fails(path, ["checkpoint.zzz=1"], "valid: every_steps, keep")


def test_wrong_type(tmp_path):
    _fails(_write(tmp_path, "optimizer:\n  lr: fast\n"), [], "optimizer.lr must be a number")
    _fails(None, [STEPS, "optimizer.lr=fast"], "command line", "optimizer.lr", "'fast'")
    _fails(None, ["budget.max_steps=true"], "budget.max_steps must be an integer or null", "True")
    _fails(None, [STEPS, "data.batch_size=2.5"], "data.batch_size must be an integer", "2.5")
    _fails(None, [STEPS, "model.scan_layers=1"], "model.scan_layers must be true or false")
    cfg = load_config(None, [STEPS, "optimizer.clip_norm=2", "name=2024"])
    assert cfg.optimizer.clip_norm == 2.0 and cfg.name == "2024"


def test_override_syntax():
    _fails(None, ["optimizer.lr"], "'optimizer.lr' is not an override", "section.key=value")
    _fails(None, ["model=3"], "'model' is a section", "model.KEY=VALUE")
    _fails(None, [STEPS, "model.init=[1"], "not a YAML value")


@pytest.mark.parametrize(
    "override",
    [
        "model.family=gpt2",
        "model.dtype=float16",
        "model.remat=some",
        "vocab.mode=audio",
        "schedule.decay=step",
        "data.interleave_method=zipf",
    ],
)
def test_enum_error(override):
    key, value = override.split("=")
    _fails(None, [STEPS, override], f"{key}='{value}'", "must be one of")


def test_batch_not_divisible_by_micro_batches():
    _fails(
        None,
        [STEPS, "data.batch_size=10", "data.micro_batches=3"],
        "data.batch_size=10",
        "multiple of data.micro_batches=3",
    )
    assert load_config(None, [STEPS, "data.micro_batches=4"]).data.micro_batch_size == 4


@pytest.mark.parametrize(
    "overrides, fragments",
    [
        ([STEPS, "model.hidden_size=0"], ["model.hidden_size=0", "> 0"]),
        ([STEPS, "optimizer.min_lr=0.1"], ["optimizer.min_lr", "lower min_lr"]),
        ([STEPS, "mesh.data=-1", "mesh.tensor=-1"], ["mesh.data and mesh.tensor", "at most one"]),
        ([STEPS, "mesh.process_id=1"], ["mesh.process_id", "mesh.num_processes"]),
        ([STEPS, "data.seq_len=4096"], ["data.seq_len", "max_position_embeddings"]),
        ([STEPS, "data.seq_len=1"], ["data.seq_len=1", "at least 2"]),
        ([STEPS, "vocab.mode=text", "vocab.num_units=10"], ["vocab.num_units", "mode=text"]),
        ([], ["defaults: budget", "budget.max_steps", "budget.max_seconds"]),
    ],
)
def test_value_checks(overrides, fragments):
    _fails(None, overrides, *fragments)


@pytest.mark.parametrize(
    "override",
    [
        "optimizer.lr=.inf",
        "optimizer.lr=nan",
        "data.interleave_lam=-inf",
        "budget.max_seconds=.inf",
        "data.stream_weights=[1,.nan,0]",
    ],
)
def test_non_finite_numbers_are_refused(override):
    _fails(None, [STEPS, override], override.split("=")[0], "must be finite")


def test_non_finite_number_in_a_file(tmp_path):
    _fails(_write(tmp_path, "optimizer:\n  eps: .nan\n"), [STEPS], "exp.yaml", "optimizer.eps")


def test_file_errors(tmp_path):
    _fails(tmp_path / "missing.yaml", [], "missing.yaml", "cannot read")
    _fails(_write(tmp_path, "model: [\n"), [], "not valid YAML")
    _fails(_write(tmp_path, "- 1\n"), [], "mapping of sections")
    _fails(_write(tmp_path, "model: 3\n"), [], "section 'model' must be a mapping")


def test_dump_load_round_trip(tmp_path):
    overrides = ["data.stream_weights=[0,1,0]", "logging.peak_flops=9.9e14", "mesh.fsdp=2"]
    cfg = load_config(_write(tmp_path, BASE), overrides)
    dump_config(cfg, tmp_path / "out" / "config.yaml")
    assert load_config(tmp_path / "out" / "config.yaml") == cfg
    plain = config_to_dict(cfg)
    assert plain["data"]["stream_weights"] == [0.0, 1.0, 0.0]
    assert yaml.safe_load((tmp_path / "out" / "config.yaml").read_text()) == plain
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["config.yaml"]


def test_default_run_dir(tmp_path):
    path = _write(tmp_path, BASE, name="tiny.yaml")
    assert load_config(path).run_dir == "runs/tiny"
    assert load_config(path, ["name=big"]).run_dir == "runs/big"
    assert load_config(path, ["run_dir=/tmp/x"]).run_dir == "/tmp/x"
    assert load_config(None, [STEPS]).run_dir == "runs/run"


def test_budget_helpers():
    cfg = load_config(None, ["budget.train_max_tokens=1e6", "schedule.warmup_steps=5"])
    assert cfg.tokens_per_step == 16 * 256
    assert cfg.total_steps == 245  # ceil(1e6 / 4096)
    assert cfg.schedule.warmup(cfg.total_steps) == 5
    assert cfg.schedule.warmup(1000) == 10
    assert load_config(None, ["budget.max_seconds=60"]).total_steps is None


def hf_warmup(total_steps: int, warmup_steps: int, warmup_ratio: float) -> int:
    """slamkit's warmup (cli/train.py keeps warmup_steps only when it exceeds the ratio's
    steps, else zeroes it) then transformers' `TrainingArguments.get_warmup_steps`:
    warmup_steps if > 0, else ceil(num_training_steps x warmup_ratio)."""
    if total_steps * warmup_ratio > warmup_steps:
        warmup_steps = 0
    return warmup_steps if warmup_steps > 0 else math.ceil(total_steps * warmup_ratio)


@pytest.mark.parametrize(
    "total, steps, fraction", [(17625, 100, 0.01), (1050, 0, 0.01), (7, 0, 0.3)]
)
def test_warmup_rounds_up_as_transformers(total, steps, fraction):
    overrides = [STEPS, f"schedule.warmup_steps={steps}", f"schedule.warmup_fraction={fraction}"]
    schedule = load_config(None, overrides).schedule
    assert schedule.warmup(total) == hf_warmup(total, steps, fraction)
    assert load_config(SLAM_CONFIG).schedule.warmup(17625) == 177


def test_batch_unit_and_last_span_keys():
    from jaxslm.training.setup import pipeline_config

    samples = ["data.batch_unit=samples", "data.samples_per_step=12"]
    cfg = load_config(None, [STEPS, *samples])
    assert pipeline_config(cfg, "train", None).samples_per_step == 12
    assert load_config(None, [STEPS]).data.interleave_last_span == "full"
    cut = load_config(None, [STEPS, "data.interleave_last_span=cut"])
    assert pipeline_config(cut, "train", None).interleave.last_span == "cut"
    _fails(None, [STEPS, "data.interleave_last_span=half"], "full, cut")
    _fails(None, [STEPS, "data.batch_unit=tokens"], "data.batch_unit", "rows, samples")
    _fails(None, [STEPS, "data.samples_per_step=8"], "needs data.batch_unit=samples")
    _fails(None, [STEPS, "data.batch_unit=samples"], "must be set with data.batch_unit=samples")
    _fails(None, [STEPS, samples[0], "data.samples_per_step=32"], "raise data.batch_size to at")
    slam = load_config(SLAM_CONFIG).data
    assert (slam.batch_unit, slam.samples_per_step, slam.batch_size) == ("samples", 128, 128)


def test_errors_raise_in_process_without_io(tmp_path):
    """Checks are pure: nothing is opened besides the YAML, so failures come at once."""
    missing = str(tmp_path / "nowhere")
    cfg = load_config(None, [STEPS, f"model.init={missing}", f"data.corpus={missing}"])
    assert cfg.model.init == missing
    with pytest.raises(JaxslmError):
        load_config(None, [f"model.init={missing}", "optimizer.lr=-1"])
    with pytest.raises(JaxslmError, match="budget"):
        TrainConfig(name="direct")


def test_a_corpus_on_the_command_line_is_never_built_unless_asked():
    """configs/tiny.yaml builds its toy corpus; a data.corpus override names the user's own
    corpus, so a mistyped one must not become a fresh toy corpus."""
    tiny = Path(__file__).parents[1] / "configs" / "tiny.yaml"
    assert load_config(tiny).data.build_synthetic
    assert not load_config(tiny, ["data.corpus=data/tyo"]).data.build_synthetic
    asked = ["data.corpus=data/toy2", "data.build_synthetic=true"]
    assert load_config(tiny, asked).data.build_synthetic
    assert load_config(tiny, asked[::-1]).data.build_synthetic


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[1].glob("configs/*.yaml")))
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.name == path.stem and cfg.total_steps


def test_default_shape_is_the_tiny_preset():
    """Without a preset, a scratch model is the tiny preset's: the shape keys' old defaults,
    RoPE theta 10,000, and q/k/v biases exactly for Qwen2."""
    from jaxslm.models.model_config import ModelConfig
    from jaxslm.models.presets import preset_model_config

    model = load_config(None, [STEPS]).model
    assert (model.hidden_size, model.num_layers, model.max_position_embeddings) == (64, 2, 2048)
    expected = ModelConfig(
        family="llama",
        vocab_size=300,
        hidden_size=64,
        intermediate_size=192,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        tie_word_embeddings=True,
        rope_theta=10000.0,
        max_position_embeddings=2048,
    )
    assert model.scratch_model(300) == expected == preset_model_config("tiny", 300)
    qwen = load_config(None, [STEPS, "model.family=qwen2", "model.rope_theta=1e6"]).model
    scratch = qwen.scratch_model(300)
    assert (scratch.qkv_bias, scratch.out_bias, scratch.rope_theta) == (True, False, 1e6)


def test_preset_gives_the_shape_and_set_keys_replace_it(tmp_path):
    from jaxslm.models.presets import preset_model_config, speech_model_config

    cfg = load_config(None, [STEPS, "model.preset=qwen0.5b", "data.seq_len=2048"])
    model = cfg.model
    assert (model.family, model.hidden_size, model.num_layers) == ("qwen2", 896, 24)
    assert model.scratch_model(1000) == preset_model_config("qwen0.5b", 1000)
    assert model.scratch_model(1000).rope_theta == 1e6
    changed = [
        "model.preset=20m",
        "model.num_layers=2",
        "model.rope_theta=5e5",
        "model.dtype=bfloat16",
    ]
    model = load_config(None, [STEPS, *changed]).model
    assert (model.hidden_size, model.num_layers) == (512, 2)
    expected = speech_model_config("20m", 500, num_layers=2, rope_theta=5e5, dtype="bfloat16")
    assert model.scratch_model(502) == expected
    dumped = load_config(None, [STEPS, *changed])
    dump_config(dumped, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == dumped
    _fails(None, [STEPS, "model.preset=gpt2"], "model.preset='gpt2'", "must be one of", "20m")


def test_init_ignores_the_shape_with_a_warning():
    import warnings

    init = "model.init=ckpt/qwen"
    with pytest.warns(UserWarning, match=r"model.preset, model.hidden_size: ignored") as caught:
        cfg = load_config(None, [STEPS, init, "model.preset=20m", "model.hidden_size=128"])
    assert "model.init=ckpt/qwen gives the model's shape" in str(caught[0].message)
    assert cfg.model.hidden_size == 128
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_config(None, [STEPS, init, "model.rope_theta=1e4", "model.dtype=bfloat16"])
        load_config(None, [STEPS, init, "model.hidden_size=64"])  # a default, as old dumps hold


def test_batch_split_one_rule():
    """The config, the trainer (`check_batch_split(shards, processes)`) and the pipeline apply
    one rule to how a step's rows split."""
    from jaxslm.data.batch_split import check_batch_split

    data = load_config(None, [STEPS, "data.batch_size=12", "data.micro_batches=2"]).data
    data.check_batch_split(3, processes=2)
    with pytest.raises(JaxslmError, match="6 rows per micro-batch do not split over mesh"):
        data.check_batch_split(4)
    with pytest.raises(JaxslmError, match=r"data.batch_size=12 does not split over 5 processes"):
        data.check_batch_split(1, processes=5)
    with pytest.raises(JaxslmError, match=r"data.samples_per_step=3 does not split over 2"):
        check_batch_split(4, processes=2, samples_per_step=3)
    _fails(None, [STEPS, "mesh.data=4", "data.batch_size=6"], "mesh data x fsdp = 4 devices")


def test_batch_shards_split_over_processes_that_read_their_own_rows():
    """With data.shard_by=records a process feeds only its own rows, so it must hold whole
    batch shards (mesh data x fsdp) and only its own: the trainer refuses the rest."""
    from jaxslm.data.batch_split import check_process_shards

    check_process_shards(data=1, fsdp=1, processes=1)
    check_process_shards(data=2, fsdp=2, processes=4)
    check_process_shards(data=4, fsdp=1, processes=2)
    message = r"mesh data=1 x fsdp=1 = 1 batch shards do not split over the 2 processes"
    with pytest.raises(JaxslmError, match=message) as caught:
        check_process_shards(data=1, fsdp=1, processes=2)
    assert "make mesh.data x mesh.fsdp a multiple of 2, or set data.shard_by=rows" in str(
        caught.value
    )
    with pytest.raises(JaxslmError, match=r"= 6 batch shards do not split over the 4 processes"):
        check_process_shards(data=3, fsdp=2, processes=4)


def test_compute_dtype_auto_is_bfloat16_on_accelerators(monkeypatch):
    from jaxslm import backend
    from jaxslm.config.model_section import ModelSection

    assert ModelSection().dtype == "auto"
    assert ModelSection().scratch_model(512).dtype == "float32"  # this CPU
    monkeypatch.setattr(backend, "platform", lambda: "gpu")
    assert ModelSection().scratch_model(512).dtype == "bfloat16"
    assert ModelSection(dtype="float32").scratch_model(512).dtype == "float32"
    assert ModelSection().scratch_model(512).param_dtype == "float32"
