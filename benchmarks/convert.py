"""Import/export speed and peak host memory of jaxslm-convert beside transformers.

Builds a random Llama-3.2-1B-shaped HF checkpoint (bf16, tied, 128,256-entry tokenizer), then
times in separate processes, each reporting its own peak RSS:
  jaxslm import-hf (+500 speech units)   vs  transformers from_pretrained + resize + save_pretrained
  jaxslm export-hf                       vs  transformers from_pretrained + save_pretrained

    python benchmarks/convert.py [--shape 1b|tiny] [--dtype bfloat16|float32] [--repeat N]

Each figure is the median over --repeat runs (this kind of shared VM is noisy).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHAPES = {
    "1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=64,
        vocab_size=128256,
    ),
    "tiny": dict(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        vocab_size=1024,
    ),
}
UNITS = 500

MAKE_MODEL = """
import json, sys, torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
out, shape, dtype = sys.argv[1], json.loads(sys.argv[2]), getattr(torch, sys.argv[3])
config = LlamaConfig(**shape, tie_word_embeddings=True, rope_theta=500000.0,
    max_position_embeddings=131072,
    rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                  "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
torch.manual_seed(0)
LlamaForCausalLM(config).to(dtype).save_pretrained(out)
words = {f"w{i}": i for i in range(shape["vocab_size"])}
tokenizer = Tokenizer(models.WordLevel(words, unk_token="w0"))
tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="w0", eos_token="w1")
fast.save_pretrained(out)
"""

REPORT = "import resource; print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"

JAXSLM_IMPORT = f"""
import sys
from jaxslm.hf.importer import import_hf
import_hf(sys.argv[1], sys.argv[2], speech_units={UNITS})
{REPORT}
"""

JAXSLM_EXPORT = f"""
import sys
from jaxslm.hf.exporter import export_hf
export_hf(sys.argv[1], sys.argv[2])
{REPORT}
"""

TORCH_IMPORT = f"""
import sys
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype="auto")
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
tokenizer.add_tokens([f"<Un{{i}}>" for i in range({UNITS})] + ["<speech>", "<text>"])
model.resize_token_embeddings(len(tokenizer))
model.save_pretrained(sys.argv[2])
tokenizer.save_pretrained(sys.argv[2])
{REPORT}
"""

TORCH_EXPORT = f"""
import sys
from transformers import AutoModelForCausalLM
AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype="auto").save_pretrained(sys.argv[2])
{REPORT}
"""


def run(script: str, *args: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of `script` in a fresh Python process."""
    shutil.rmtree(args[-1], ignore_errors=True)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    peak_kb = next(
        int(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("PEAK_RSS_KB")
    )
    return seconds, peak_kb / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", choices=SHAPES, default="1b")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--workdir", default=None, help="scratch directory (default: a temp dir)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="jaxslm-bench-convert-"))
    hf_dir = work / "hf"
    if not hf_dir.exists():
        print(f"building random {args.shape} Llama ({args.dtype}) in {hf_dir} ...", flush=True)
        subprocess.run(
            [
                sys.executable,
                "-c",
                MAKE_MODEL,
                str(hf_dir),
                json.dumps(SHAPES[args.shape]),
                args.dtype,
            ],
            check=True,
        )
    size_gb = sum(p.stat().st_size for p in hf_dir.glob("*.safetensors")) / 1e9
    runs = [
        (
            run(JAXSLM_IMPORT, str(hf_dir), str(work / "jaxslm_ckpt")),
            run(TORCH_IMPORT, str(hf_dir), str(work / "torch_import")),
            run(JAXSLM_EXPORT, str(work / "jaxslm_ckpt"), str(work / "jaxslm_export")),
            run(TORCH_EXPORT, str(work / "torch_import"), str(work / "torch_export")),
        )
        for _ in range(args.repeat)
    ]
    medians = [
        tuple(statistics.median(run[i][k] for run in runs) for k in range(2)) for i in range(4)
    ]
    rows = [("import", medians[0], medians[1]), ("export", medians[2], medians[3])]
    print(
        f"\nmodel: {args.shape} Llama, {args.dtype}, {size_gb:.2f} GB of safetensors (CPU), "
        f"median of {args.repeat}"
    )
    print(
        f"{'step':8s} {'jaxslm s':>9s} {'jaxslm GB':>10s} {'HF s':>8s} {'HF GB':>8s} "
        f"{'speedup':>8s} {'RSS ratio':>10s}"
    )
    for step, (ours_s, ours_gb), (hf_s, hf_gb) in rows:
        print(
            f"{step:8s} {ours_s:9.1f} {ours_gb:10.2f} {hf_s:8.1f} {hf_gb:8.2f} "
            f"{hf_s / ours_s:7.2f}x {ours_gb / hf_gb:9.2f}x"
        )


if __name__ == "__main__":
    main()
