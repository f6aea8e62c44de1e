"""The built-in corpus: the toy language's records, its SentencePiece tokenizer and its
evaluation sets, and the regeneration of eval sets that an older build lacks."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from jaxslm.data.corpus import EVAL_DIR, METADATA_FILE, open_corpus, write_corpus
from jaxslm.data.synthetic import SyntheticConfig, SyntheticLanguage
from jaxslm.data.synthetic_eval import EVAL_PAIRS, EVAL_SETS_VERSION, EVAL_TASKS, write_eval_sets
from jaxslm.fsutil import atomic_write_text, clear_stale_staging, staging_directory
from jaxslm.text_tokenizer import train_sentencepiece

SYNTHETIC_TOKENIZER_VOCAB = 512


def build_synthetic(
    out_dir: str | Path, config: SyntheticConfig | None = None, overwrite: bool = False
) -> Path:
    """The built-in corpus: toy speech and text, a SentencePiece tokenizer trained on its text,
    and the toy evaluation sets (eval/*.jsonl)."""
    language = SyntheticLanguage(config or SyntheticConfig())
    cfg = language.config

    def extras(staging: Path) -> dict:
        texts = [doc.text for doc in language.text_documents(split="train")]
        texts += [u.transcript for u in language.utterances(split="train")]
        (staging / "tokenizer").mkdir()
        train_sentencepiece(texts, staging / "tokenizer" / "tokenizer", SYNTHETIC_TOKENIZER_VOCAB)
        write_eval_sets(language, staging / EVAL_DIR)
        return {
            "tokenizer": "tokenizer/tokenizer.model",
            "eval_dir": EVAL_DIR,
            "eval_sets": {"version": EVAL_SETS_VERSION, "num_pairs": EVAL_PAIRS},
        }

    metadata = {
        "num_units": cfg.num_units,
        "frame_seconds": cfg.frame_seconds,
        "source": {"synthetic": dataclasses.asdict(cfg)},
    }
    return write_corpus(
        out_dir,
        speech=lambda split: language.utterances(split=split),
        text=lambda split: language.text_documents(split=split),
        metadata=metadata,
        extras=extras,
        overwrite=overwrite,
    )


def ensure_eval_sets(corpus_dir: str | Path) -> Path | None:
    """The eval directory of a corpus, or None if it has none.

    For a built-in corpus, eval files that are missing (all of them if corpus.json's
    `eval_sets` version is older than this code's) are regenerated from its recorded config
    and renamed into place one by one; the corpus records are left as they are.
    """
    corpus = open_corpus(corpus_dir)
    settings = corpus.metadata.get("source", {}).get("synthetic")
    if settings is None:
        return corpus.path("eval_dir")
    relative = corpus.metadata.get("eval_dir", EVAL_DIR)
    eval_dir = corpus.directory / relative
    stamp = corpus.metadata.get("eval_sets") or {}
    current = stamp.get("version") == EVAL_SETS_VERSION
    num_pairs = stamp["num_pairs"] if current else EVAL_PAIRS
    stale = [t for t in EVAL_TASKS if not (current and (eval_dir / f"{t}.jsonl").is_file())]
    if not stale:
        return eval_dir
    clear_stale_staging(eval_dir)
    with staging_directory(eval_dir) as staging:
        language = SyntheticLanguage(SyntheticConfig(**settings))
        written = write_eval_sets(language, staging, num_pairs)
        eval_dir.mkdir(exist_ok=True)
        for task in stale:
            os.replace(written[task], eval_dir / written[task].name)
    if not current:
        stamp = {"version": EVAL_SETS_VERSION, "num_pairs": num_pairs}
        metadata = {**corpus.metadata, "eval_dir": relative, "eval_sets": stamp}
        atomic_write_text(corpus.directory / METADATA_FILE, json.dumps(metadata, indent=2) + "\n")
    return eval_dir
