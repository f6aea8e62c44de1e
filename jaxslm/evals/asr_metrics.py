"""slamkit's text-side generative metrics, with transformers models from local folders:
Whisper transcripts, their perplexity under a text LM, auto-BLEU, and an LLM judge.

Definitions (slamkit/metric/generative_metric.py, metric_utils.py, utils/calculation_utils.py):
- transcripts: transformers' "automatic-speech-recognition" pipeline over the waves of a
  batch; an empty wave's transcript is "".
- perplexity: each transcript is tokenized (padded on the tokenizer's own side, with the EOS
  as pad when the tokenizer has none) and scored by the text LM; its NLL is the mean
  cross-entropy of every next token whose label is not the pad id; the metric is exp(mean NLL
  over transcripts). A transcript with no token to predict (e.g. "" after an empty wave) has
  no NLL: slamkit's mean then turns NaN, jaxslm leaves it out and counts it.
- auto-BLEU-n: a transcript's NLTK word tokens (NLTKWordTokenizer) make n-grams, joined by
  spaces; its score is the share of n-grams that occur elsewhere in it (0 with no n-gram);
  the metric is the mean over transcripts.
- judge: the instruction with `[prompt_audio_transcription]` and
  `[generated_audio_transcription]` filled in, sampled by the judge LM (temperature 0.8, 512
  new tokens, left padding); the score is the number in the first `\\boxed{N}`; answers
  without one are dropped, and the metric is the mean of the rest.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxslm.errors import JaxslmError

BATCH_SIZE = 8  # slamkit's config/eval.yaml batch_size: waves transcribed, texts scored
JUDGE_MAX_NEW_TOKENS = 512
JUDGE_TEMPERATURE = 0.8
PROMPT_FIELD = "[prompt_audio_transcription]"
GENERATED_FIELD = "[generated_audio_transcription]"
_BOXED = re.compile(r"\\boxed\{(\d+)\}")


def _torch():
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError:
        raise JaxslmError(
            "asr_perplexity and llm_as_judge run Whisper and the text LM through transformers: "
            "pip install torch transformers"
        ) from None
    return torch


def _device() -> str:
    return "cuda" if _torch().cuda.is_available() else "cpu"


def check_model_dir(path: Path | None, option: str) -> None:
    if path is None:
        raise JaxslmError(f"{option} is needed: a local HF model folder")
    if not (Path(path) / "config.json").is_file():
        raise JaxslmError(f"{option} {path}: not a HF model folder (no config.json)")


class Transcriber:
    """Whisper (or any HF speech-to-text model) from a local folder."""

    def __init__(self, directory: Path):
        torch = _torch()
        from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor, pipeline

        device = _device()
        dtype = torch.float16 if device == "cuda" else torch.float32  # as slamkit
        model = AutoModelForSpeechSeq2Seq.from_pretrained(
            directory, dtype=dtype, local_files_only=True
        )
        processor = AutoProcessor.from_pretrained(directory, local_files_only=True)
        self._pipe = pipeline(
            "automatic-speech-recognition",
            model=model,
            tokenizer=processor.tokenizer,
            feature_extractor=processor.feature_extractor,
            dtype=dtype,
            device=device,
        )

    def __call__(self, waves: Sequence[np.ndarray], sample_rate: int | Sequence[int]) -> list[str]:
        """One transcript per wave, sampled at `sample_rate` (one for all, or one per wave);
        "" for an empty wave."""
        rates = [sample_rate] * len(waves) if isinstance(sample_rate, int) else sample_rate
        inputs = [
            {"raw": w, "sampling_rate": r} for w, r in zip(waves, rates, strict=True) if w.size
        ]
        outputs = iter(self._pipe(inputs, batch_size=BATCH_SIZE) if inputs else [])
        return [next(outputs)["text"] if w.size else "" for w in waves]


def _causal_lm(directory: Path):
    """A local HF causal LM in float32 (as slamkit's `get_llm` loads it under transformers
    4.x, whatever dtype the checkpoint holds) and its tokenizer, padding with EOS if need be."""
    torch = _torch()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        directory, local_files_only=True, use_cache=False, dtype=torch.float32
    )
    return model.to(_device()).eval(), tokenizer


class TextPerplexity:
    """Per-transcript mean NLL under a text LM from a local folder (slamkit's rule above)."""

    def __init__(self, directory: Path):
        _torch()
        self.model, self.tokenizer = _causal_lm(directory)

    def nlls(self, texts: Sequence[str]) -> list[float]:
        """Mean NLL per text, BATCH_SIZE texts padded together; NaN where a text leaves no
        token to predict."""
        result: list[float] = []
        for start in range(0, len(texts), BATCH_SIZE):
            result += self._batch_nlls(texts[start : start + BATCH_SIZE])
        return result

    def _batch_nlls(self, texts: Sequence[str]) -> list[float]:
        torch = _torch()
        batch = self.tokenizer(list(texts), return_tensors="pt", padding=True).to(self.model.device)
        labels = batch["input_ids"].clone()
        labels[labels == self.tokenizer.pad_token_id] = -100
        with torch.inference_mode():
            logits = self.model(**batch).logits.float()
        targets = labels[:, 1:]
        losses = torch.nn.functional.cross_entropy(
            logits[:, :-1].transpose(1, 2), targets.clamp(min=0), reduction="none"
        )
        kept = targets.ne(-100)
        sums = (losses * kept).sum(dim=1).double()
        counts = kept.sum(dim=1)
        return [
            s / c if c else math.nan for s, c in zip(sums.tolist(), counts.tolist(), strict=True)
        ]


def judge_prompts(instruction: str, prompts: Sequence[str], generated: Sequence[str]) -> list[str]:
    """The instruction filled in per (prompt transcript, continuation transcript)."""
    for field in (PROMPT_FIELD, GENERATED_FIELD):
        if field not in instruction:
            raise JaxslmError(f"--judge-instruction must contain {field}")
    return [
        instruction.replace(PROMPT_FIELD, p).replace(GENERATED_FIELD, g)
        for p, g in zip(prompts, generated, strict=True)
    ]


def boxed_score(answer: str) -> int | None:
    """The integer in the answer's first `\\boxed{N}`, or None."""
    match = _BOXED.search(answer)
    return int(match.group(1)) if match else None


class Judge:
    """A local HF causal LM that answers the judge instruction (sampled, slamkit's settings)."""

    def __init__(self, directory: Path, seed: int = 0, max_new_tokens: int = JUDGE_MAX_NEW_TOKENS):
        self.torch = _torch()
        self.model, self.tokenizer = _causal_lm(directory)
        self.max_new_tokens = max_new_tokens
        self.torch.manual_seed(seed)

    def answers(self, texts: Sequence[str], batch_size: int = BATCH_SIZE) -> list[str]:
        """The decoded prompt + answer per text (sampled; the torch seed is set once)."""
        self.tokenizer.padding_side = "left"
        answers = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(
                list(texts[start : start + batch_size]), return_tensors="pt", padding=True
            ).to(self.model.device)
            with self.torch.inference_mode():
                output = self.model.generate(
                    **batch,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=True,
                    temperature=JUDGE_TEMPERATURE,
                    pad_token_id=self.tokenizer.pad_token_id,
                    use_cache=True,  # slamkit loads use_cache=False: the same tokens, slower
                )
            answers += self.tokenizer.batch_decode(output, skip_special_tokens=True)
        return answers
