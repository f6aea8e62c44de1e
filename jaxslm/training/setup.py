"""What a config trains: the corpus, the text tokenizer, the speech vocabulary and the decoder
shape, from scratch or from an imported checkpoint."""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

from jaxslm.config import TrainConfig
from jaxslm.data.corpus import Corpus, open_corpus
from jaxslm.data.interleave import InterleaveConfig
from jaxslm.data.pipeline import PipelineConfig
from jaxslm.data.preference_store import build_synthetic_preferences, is_preference_corpus
from jaxslm.data.synthetic_corpus import build_synthetic, ensure_eval_sets
from jaxslm.errors import JaxslmError
from jaxslm.model_dir import TOKENIZER_DIR, read_metadata
from jaxslm.models.model_config import ModelConfig
from jaxslm.text_tokenizer import TextTokenizer, load_text_tokenizer, speech_only_tokenizer
from jaxslm.vocab import SpeechVocab


@dataclass(frozen=True)
class RunPlan:
    """Everything the loop needs that is decided before any device work."""

    model: ModelConfig
    vocab: SpeechVocab
    tokenizer: TextTokenizer | None
    tokenizer_files: Path | None
    corpus: Corpus
    init_dir: Path | None


def plan_run(cfg: TrainConfig) -> RunPlan:
    """Open (or build) the corpus and decide vocabulary, tokenizer, model and budget."""
    corpus = _corpus(cfg)
    if is_preference_corpus(corpus) != (cfg.objective == "dpo"):
        kind = "preference pairs" if is_preference_corpus(corpus) else "utterances and text"
        raise JaxslmError(
            f"data.corpus={corpus.directory} holds {kind}, which objective={cfg.objective} "
            "does not train on: set objective=dpo for preference pairs, objective=lm otherwise"
        )
    if cfg.model.init is None:
        vocab, tokenizer, files = _scratch_vocab(cfg, corpus)
        model = cfg.model.scratch_model(vocab.size)
        init_dir = None
    else:
        init_dir = Path(cfg.model.init)
        model, vocab, _ = read_metadata(init_dir)
        if vocab.mode != cfg.vocab.mode:
            raise JaxslmError(
                f"model.init={init_dir} has a {vocab.mode} vocabulary but vocab.mode is "
                f"{cfg.vocab.mode}: set vocab.mode={vocab.mode} or import with --mode"
            )
        layout = "cuervo-marxer" if vocab.units_first else "slamkit"
        if vocab.mode == "speech-only" and layout != cfg.vocab.speech_layout:
            raise JaxslmError(
                f"model.init={init_dir} has the {layout} speech-only layout but "
                f"vocab.speech_layout is {cfg.vocab.speech_layout}: set "
                f"vocab.speech_layout={layout}"
            )
        files = init_dir / TOKENIZER_DIR
        tokenizer_path = Path(cfg.vocab.tokenizer) if cfg.vocab.tokenizer else files
        tokenizer = None if vocab.mode == "speech-only" else load_text_tokenizer(tokenizer_path)
        model = cfg.model.applied_to(model)
        if cfg.data.seq_len > model.max_position_embeddings:
            warnings.warn(
                f"data.seq_len={cfg.data.seq_len} exceeds model.init={init_dir}'s "
                f"max_position_embeddings={model.max_position_embeddings}: the model trains on "
                "positions it was not made for, and its export still declares the shorter "
                "context; lower data.seq_len unless that is meant",
                stacklevel=2,
            )
    corpus.check_units(vocab.num_units)
    return RunPlan(model, vocab, tokenizer, files, corpus, init_dir)


def pipeline_config(cfg: TrainConfig, split: str, num_epochs: int | None) -> PipelineConfig:
    """The data section as the Grain pipeline's config."""
    data = cfg.data
    interleave = InterleaveConfig(
        method=data.interleave_method,
        eta=data.interleave_eta,
        poisson_lambda=data.interleave_lam,
        seed=cfg.seed,
        frozen=data.frozen_interleave,
        last_span=data.interleave_last_span,
    )
    return PipelineConfig(
        seq_len=data.seq_len,
        batch_size=data.batch_size,
        samples_per_step=data.samples_per_step,
        stream_weights=tuple(data.stream_weights),
        interleave=interleave,
        seed=cfg.seed,
        num_epochs=num_epochs,
        split=split,
        read_threads=data.read_threads,
        prefetch_batches=data.prefetch_batches,
    )


def save_tokenizer(plan: RunPlan, directory: Path) -> None:
    """Write the run's tokenizer files into the empty folder `directory`."""
    if plan.vocab.mode == "speech-only":
        speech_only_tokenizer(plan.vocab).save(directory)
    elif plan.tokenizer_files is not None and plan.tokenizer_files.is_dir():
        shutil.copytree(plan.tokenizer_files, directory, dirs_exist_ok=True)
    elif plan.tokenizer_files is not None:
        shutil.copyfile(plan.tokenizer_files, directory / "tokenizer.model")


def _corpus(cfg: TrainConfig) -> Corpus:
    path = Path(cfg.data.corpus)
    if not path.exists() and cfg.data.build_synthetic and cfg.objective == "dpo":
        print(f"building the built-in preference set at {path}")
        build_synthetic_preferences(path)
    elif not path.exists() and cfg.data.build_synthetic:
        print(f"building the built-in corpus at {path}")
        build_synthetic(path)
    elif not path.exists():
        raise JaxslmError(
            f"data.corpus={path}: no such corpus; build one with `python -m jaxslm.data.build`, "
            "or add data.build_synthetic=true to build the built-in toy corpus there (a "
            "data.corpus given on the command line is built only with it)"
        )
    elif path.is_dir() and cfg.eval.tasks:
        ensure_eval_sets(path)
    return open_corpus(path)


def _scratch_vocab(
    cfg: TrainConfig, corpus: Corpus
) -> tuple[SpeechVocab, TextTokenizer | None, Path | None]:
    num_units = cfg.vocab.num_units or corpus.num_units
    if cfg.vocab.mode == "speech-only":
        return SpeechVocab.speech_only(num_units, cfg.vocab.speech_layout), None, None
    source = Path(cfg.vocab.tokenizer) if cfg.vocab.tokenizer else corpus.path("tokenizer")
    if source is None:
        raise JaxslmError(
            f"data.corpus={corpus.directory} has no tokenizer: set vocab.tokenizer to a "
            "tokenizer.json directory or a SentencePiece .model file"
        )
    tokenizer = load_text_tokenizer(source)
    eos = () if tokenizer.eos_id is None else (tokenizer.eos_id,)
    units = 0 if cfg.vocab.mode == "text" else num_units
    vocab = SpeechVocab(cfg.vocab.mode, len(tokenizer), units, tokenizer.bos_id, eos)
    return vocab, tokenizer, source
