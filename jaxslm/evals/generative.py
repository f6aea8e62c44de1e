"""slamkit's generative metrics in `python -m jaxslm.evaluate`: `generate`, `asr_perplexity`
and `llm_as_judge` (slamkit/metric/generative_metric.py, config/metric/*.yaml).

Each continues speech prompts (see jaxslm.evals.generative_prompts) with the speech LM in JAX,
sampling as slamkit's configs do (temperature 0.8, top-k 25, 150 new tokens), and vocodes the
units in JAX. `generate` and `asr_perplexity` vocode the prompt's units followed by the
continuation's (slamkit's `SpeechLM.generate` keeps the prompt), `llm_as_judge` the
continuation alone (`remove_prompt=True`). `asr_perplexity` then transcribes each wave with
Whisper and reports exp(mean NLL) of the transcripts under a text LM, and auto-BLEU-n of the
transcripts; `llm_as_judge` has a local LM rate each (prompt transcript, continuation
transcript) pair. Whisper and the text LMs run through transformers (jaxslm.evals.asr_metrics).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from jaxslm.errors import JaxslmError
from jaxslm.evals.generative_prompts import Prompt, PromptRules, audio_prompts, unit_prompts
from jaxslm.generation.seeds import batch_seed

GENERATIVE_TASKS = ("generate", "asr_perplexity", "llm_as_judge")
GENERATIVE_HELP = {
    "generate": "continue prompts, write the audio (slamkit: 5 files)",
    "asr_perplexity": "Whisper transcripts' text-LM perplexity and auto-BLEU (1000 files)",
    "llm_as_judge": "a local LM rates (prompt, continuation) transcripts 1-5",
}
NUM_FILES = {"generate": 5, "asr_perplexity": 1000, "llm_as_judge": None}  # slamkit's configs
MIN_SECONDS = {"llm_as_judge": 6.0}
USE_ALIGNMENT = {"llm_as_judge": True}
JUDGE_INSTRUCTION = (  # config/metric/llm_as_judge.yaml
    "The task is evaluating the relevance and likelihood of the predicted text continuation, "
    "given the text prompt. You should also consider whether the meaning of the text "
    'continuation is making sense. The text prompt is: "[prompt_audio_transcription]", and '
    'the text continuation is :"[generated_audio_transcription]". You must give an overall '
    "rating from 1 to 5. The rating guideline is as below:\n1: The text continuation is very "
    "unlikely and irrelevant to the text prompt.\n2: The text continuation is unlikely and "
    "marginally relevant to the text prompt.\n3: The text continuation is moderately likely and "
    "relevant to the text prompt.\n4: The text continuation is likely and relevant to the text "
    "prompt.\n5: The text continuation is very likely and highly relevant.\n You should take "
    "the following steps to provide the score:\nFirst: briefly analyze the sample with the above "
    'definition.\nSecond: MUST follow the output format as: "The final answer is '
    '$\\boxed{x}$". Where x is the score you are giving.'
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the generative tasks, in their own group."""
    group = parser.add_argument_group(
        "generative tasks (--task generate|asr_perplexity|llm_as_judge; --data is a folder or "
        "list of audio prompts, tokenized with --hubert/--codebook, or a JSONL of unit lines)"
    )
    group.add_argument("--vocoder", help="textless/fairseq unit HiFi-GAN folder, or toy")
    group.add_argument("--audio-out", type=Path, help="write each wave as <task>_<i>.wav here")
    group.add_argument("--num-files", type=int, help="prompts (slamkit: 5, 1000, all)")
    group.add_argument(
        "--prompt-seconds", type=float, default=3.0, help="prompt length (0: whole file)"
    )
    group.add_argument(
        "--min-file-seconds", type=float, help="skip shorter files (llm_as_judge default 6)"
    )
    group.add_argument(
        "--use-alignment",
        action=argparse.BooleanOptionalAction,
        help="cut at the word end closest to --prompt-seconds (llm_as_judge default on)",
    )
    group.add_argument("--alignment-folder", type=Path, help="alignment JSONs (default: beside)")
    group.add_argument(
        "--frame-seconds", type=float, default=0.04, help="frame length of unit-line prompts"
    )
    group.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    group.add_argument("--top-k", type=int, default=25, help="0 = off")
    group.add_argument("--max-new-tokens", type=int, default=150, help="tokens per continuation")
    group.add_argument("--seed", type=int, default=0, help="sampling seed")
    group.add_argument("--generate-batch", type=int, default=16, help="prompts decoded together")
    group.add_argument("--whisper", type=Path, help="local HF Whisper folder (transcripts)")
    group.add_argument("--text-lm", type=Path, help="local HF causal LM folder (perplexity)")
    group.add_argument("--auto-bleu-n", type=int, default=2, help="n of auto-BLEU")
    group.add_argument("--judge", type=Path, help="local HF causal LM folder (llm_as_judge)")
    group.add_argument(
        "--judge-max-new-tokens", type=int, default=512, help="judge answer length (slamkit 512)"
    )
    group.add_argument(
        "--judge-instruction", default=JUDGE_INSTRUCTION, help="default: slamkit's instruction"
    )


def check_generative(args: argparse.Namespace, names: list[str]) -> None:
    """Refuse, before the model loads, what the generative tasks in `names` lack."""
    from jaxslm.evals.asr_metrics import check_model_dir
    from jaxslm.fsutil import prepare_output_folder

    tasks = [name for name in names if name in GENERATIVE_TASKS]
    if not tasks:
        return
    if args.vocoder is None:
        raise JaxslmError(f"--task {tasks[0]} needs --vocoder (a vocoder folder, or toy)")
    if "generate" in tasks and args.audio_out is None:
        raise JaxslmError("--task generate writes audio: give --audio-out")
    if args.audio_out is not None:
        prepare_output_folder(args.audio_out)
    if args.generate_batch < 1 or (args.num_files is not None and args.num_files < 1):
        raise JaxslmError("--generate-batch and --num-files take positive counts")
    if "asr_perplexity" in tasks:
        check_model_dir(args.whisper, "--whisper")
        check_model_dir(args.text_lm, "--text-lm")
    if "llm_as_judge" in tasks:
        if args.judge_max_new_tokens < 1:
            raise JaxslmError("--judge-max-new-tokens takes a positive count")
        check_model_dir(args.whisper, "--whisper")
        check_model_dir(args.judge, "--judge")


def run_generative(
    lm, tokenizer, task: str, data: Path, args, audio_units, unit_pieces=None
) -> tuple[dict, list]:
    """(summary, one JSON-ready line per prompt) of generative task `task` on prompts `data`,
    a chunk of --generate-batch prompts at a time: generate, vocode, write, score. A model over
    unigram speech tokens (`unit_pieces`) reads its prompts encoded and its continuations are
    decoded back to units before the vocoder."""
    from tqdm import tqdm

    from jaxslm.generation.prompts import Piece, PromptBuilder
    from jaxslm.speech.vocode_lines import check_vocoder_for, write_wav
    from jaxslm.speech.vocoder import load_vocoder

    prompts = _prompts(task, data, args, audio_units)
    vocoder = load_vocoder(args.vocoder)
    check_vocoder_for(vocoder, lm.vocab.num_units if unit_pieces is None else unit_pieces.num_units)
    builder = PromptBuilder(lm.vocab, tokenizer)
    scorer = {"asr_perplexity": AsrPerplexity, "llm_as_judge": LlmJudge}.get(task)
    scorer = scorer(args) if scorer is not None else None
    keep_prompt = task != "llm_as_judge"
    items: list[dict] = []
    with tqdm(total=len(prompts), unit="prompt", desc=task, disable=args.no_progress) as bar:
        for start in range(0, len(prompts), args.generate_batch):
            chunk = prompts[start : start + args.generate_batch]
            generated = lm.generate(
                [
                    builder.ids([Piece("speech", units=_tokens(p.units, unit_pieces))], "speech")
                    for p in chunk
                ],
                args.max_new_tokens,
                temperature=args.temperature,
                top_k=args.top_k or None,
                modality="speech",
                seed=batch_seed(args.seed, start // args.generate_batch),
            )
            continuations = [_units(builder.units_of(g), unit_pieces) for g in generated]
            waves = _vocode(
                vocoder,
                [
                    [*p.units, *c] if keep_prompt else c
                    for p, c in zip(chunk, continuations, strict=True)
                ],
            )
            chunk_items = [
                {"task": task, "prompt": p.name, "prompt_units": list(p.units), "units": c}
                for p, c in zip(chunk, continuations, strict=True)
            ]
            for index, (item, wave) in enumerate(zip(chunk_items, waves, strict=True)):
                if args.audio_out is not None and wave.size:
                    item["audio"] = f"{task}_{start + index}.wav"
                    write_wav(args.audio_out / item["audio"], wave, vocoder.sample_rate)
            if scorer is not None:
                scorer.add(chunk, waves, vocoder, chunk_items)
            items += chunk_items
            bar.update(len(chunk))
    summary = {"prompts": len(prompts), "vocoder": vocoder.name, **_settings(args)}
    if scorer is not None:
        summary.update(scorer.summary(items))
    return summary, items


def _prompts(task: str, data: Path, args, audio_units) -> list[Prompt]:
    rules = PromptRules(
        seconds=args.prompt_seconds or None,
        num_files=args.num_files if args.num_files is not None else NUM_FILES[task],
        min_seconds=args.min_file_seconds
        if args.min_file_seconds is not None
        else MIN_SECONDS.get(task),
        use_alignment=args.use_alignment
        if args.use_alignment is not None
        else USE_ALIGNMENT.get(task, False),
        alignment_folder=args.alignment_folder,
        frame_seconds=args.frame_seconds,
    )
    if data.is_file() and data.suffix == ".jsonl":
        return unit_prompts(data, rules)
    if audio_units is None:
        raise JaxslmError(
            f"--task {task} --data {data}: audio prompts need --hubert and --codebook"
        )
    return audio_prompts(data, rules, audio_units.tokenizer)


def _tokens(units: tuple[int, ...], unit_pieces) -> tuple[int, ...]:
    """The model's speech tokens for `units`: themselves, or their unigram pieces."""
    if unit_pieces is None:
        return units
    return tuple(unit_pieces.encode(np.asarray(units, np.int64)).tolist())


def _units(tokens: list[int], unit_pieces) -> list[int]:
    """The units the model's speech tokens `tokens` stand for."""
    if unit_pieces is None:
        return tokens
    return unit_pieces.decode(tokens).tolist()


def _vocode(vocoder, units: list[list[int]]) -> list[np.ndarray]:
    """A wave per unit list; an empty one for no units (slamkit's empty tensor)."""
    present = [i for i, u in enumerate(units) if u]
    waves = vocoder.vocode([np.asarray(units[i], np.int64) for i in present]) if present else []
    result = [np.zeros(0, np.float32)] * len(units)
    for index, wave in zip(present, waves, strict=True):
        result[index] = wave
    return result


def _prompt_waves(prompts: list[Prompt], vocoder) -> tuple[list[np.ndarray], list[int]]:
    """The prompts' own (16 kHz) audio, or for unit-line prompts, which have none, their
    vocoded units; with each wave's sample rate."""
    from jaxslm.speech.audio import SAMPLE_RATE

    vocoded = _vocode(vocoder, [[] if p.audio is not None else list(p.units) for p in prompts])
    waves = [p.audio if p.audio is not None else w for p, w in zip(prompts, vocoded, strict=True)]
    rates = [SAMPLE_RATE if p.audio is not None else vocoder.sample_rate for p in prompts]
    return waves, rates


class AsrPerplexity:
    """asr_perplexity: Whisper transcripts, their NLL under the text LM, and auto-BLEU."""

    def __init__(self, args):
        from jaxslm.evals.asr_metrics import TextPerplexity, Transcriber

        self.transcribe = Transcriber(args.whisper)
        self.text_lm = TextPerplexity(args.text_lm)
        self.n = args.auto_bleu_n

    def add(self, prompts: list[Prompt], waves: list[np.ndarray], vocoder, items: list[dict]):
        from jaxslm.evals.auto_bleu import text_auto_bleu

        texts = self.transcribe(waves, vocoder.sample_rate)
        for item, text, nll in zip(items, texts, self.text_lm.nlls(texts), strict=True):
            nll = None if math.isnan(nll) else nll
            item.update(transcript=text, nll=nll, auto_bleu=text_auto_bleu(text, self.n))

    def summary(self, items: list[dict]) -> dict:
        scored = [item["nll"] for item in items if item["nll"] is not None]
        return {
            "asr_perplexity": math.exp(sum(scored) / len(scored)) if scored else None,
            f"auto_bleu_{self.n}": float(np.mean([item["auto_bleu"] for item in items])),
            "transcripts_without_tokens": len(items) - len(scored),
        }


class LlmJudge:
    """llm_as_judge: a local LM rates the (prompt, continuation) transcripts."""

    def __init__(self, args):
        from jaxslm.evals.asr_metrics import Judge, Transcriber

        self.transcribe = Transcriber(args.whisper)
        self.judge = Judge(args.judge, args.seed, args.judge_max_new_tokens)
        self.instruction = args.judge_instruction

    def add(self, prompts: list[Prompt], waves: list[np.ndarray], vocoder, items: list[dict]):
        from jaxslm.evals.asr_metrics import boxed_score, judge_prompts

        prompt_texts = self.transcribe(*_prompt_waves(prompts, vocoder))
        texts = self.transcribe(waves, vocoder.sample_rate)
        answers = self.judge.answers(judge_prompts(self.instruction, prompt_texts, texts))
        for item, p_text, text, answer in zip(items, prompt_texts, texts, answers, strict=True):
            item.update(prompt_transcript=p_text, transcript=text, judge_score=boxed_score(answer))

    def summary(self, items: list[dict]) -> dict:
        found = [item["judge_score"] for item in items if item["judge_score"] is not None]
        return {"llm_as_judge": float(np.mean(found)) if found else None, "judged": len(found)}


def _settings(args) -> dict:
    return {
        "temperature": args.temperature,
        "top_k": args.top_k or None,
        "max_new_tokens": args.max_new_tokens,
        "prompt_seconds": args.prompt_seconds or None,
        "seed": args.seed,
    }


def format_generative(summaries: dict[str, dict]) -> str:
    """One line per generative task with its metrics."""
    lines = []
    for name, summary in summaries.items():
        metrics = [
            f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
            for key, value in summary.items()
            if key in ("asr_perplexity", "llm_as_judge", "judged", "prompts")
            or key.startswith("auto_bleu")
        ]
        lines.append(f"{name}: {', '.join(metrics)}")
    return "\n".join(lines)
