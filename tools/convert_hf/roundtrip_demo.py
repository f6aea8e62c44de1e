"""The quick-start job until training lands: a tiny random HF Llama through the converter.

HF Llama (transformers) -> import-hf (+500 speech units) -> jaxslm logits -> export-hf ->
AutoModelForCausalLM logits -> import-hf again; prints how closely each step agrees.

    python tools/convert_hf/roundtrip_demo.py [--out runs/roundtrip_demo]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np


def build_tiny_llama(directory: Path) -> None:
    """A random 2-layer Llama-3 style model and a small BPE tokenizer, saved as HF files."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    text = ["speech language models read units and words alike"] * 8
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.train_from_iterator(
        text,
        trainers.BpeTrainer(
            vocab_size=320,
            special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>"
    )
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        rope_theta=500000.0,
        initializer_range=0.1,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    fast.save_pretrained(directory)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/roundtrip_demo", help="working directory")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import jaxslm
    from jaxslm.hf.exporter import export_hf
    from jaxslm.hf.importer import import_hf

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    build_tiny_llama(out / "hf")
    ckpt = import_hf(out / "hf", out / "jaxslm", speech_units=500)
    lm = jaxslm.load(ckpt)
    vocab = lm.vocab
    tokens = np.array(
        [
            [
                0,
                10,
                11,
                vocab.speech_marker_id,
                *vocab.units_to_ids([7, 123, 499]),
                vocab.text_marker_id,
                12,
                13,
            ]
        ]
    )
    export = export_hf(ckpt, out / "hf_export")
    with torch.no_grad():
        reference = AutoModelForCausalLM.from_pretrained(export)(torch.as_tensor(tokens)).logits
    exported_gap = float(np.abs(lm.logits(tokens) - reference.numpy()).max())
    again = jaxslm.load(import_hf(export, out / "jaxslm_again"))
    reimport_gap = float(np.abs(again.logits(tokens) - lm.logits(tokens)).max())
    tokenizer = AutoTokenizer.from_pretrained(export)

    print(
        f"vocabulary: {vocab.text_size} text + {vocab.num_units} units + 2 markers = {vocab.size}"
    )
    print(
        f"<Un12> -> {tokenizer.convert_tokens_to_ids('<Un12>')} (expected {vocab.unit_id(12)}), "
        f"<speech> -> {tokenizer.convert_tokens_to_ids('<speech>')}"
    )
    print(f"max |logit gap| jaxslm vs exported HF model (transformers): {exported_gap:.2e}")
    print(f"max |logit gap| after import -> export -> import: {reimport_gap:.2e}")
    ok = exported_gap < 1e-4 and reimport_gap == 0.0
    print("round trip OK" if ok else "round trip FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
