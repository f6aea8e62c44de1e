"""TRL's DPOTrainer as the oracle of the DPO tests and the DPO benchmark: a trainer around a
policy and a reference transformers model, and TRL's batch of pre-tokenized pairs."""

import tempfile
from collections.abc import Sequence


def trl_dpo_trainer(
    policy,
    reference,
    tokenizer,
    beta: float,
    loss_type: Sequence[str] = ("sigmoid",),
    loss_weights: Sequence[float] | None = None,
    label_smoothing: float = 0.0,
):
    """A CPU float32 DPOTrainer of `policy` against `reference`; `_compute_loss(model, batch,
    False)` gives its loss on a `trl_batch` (its metrics go to `_metrics["train"]`)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl_oracle_"),  # TRL creates it; not the cwd
        beta=beta,
        loss_type=list(loss_type),
        loss_weights=None if loss_weights is None else list(loss_weights),
        label_smoothing=label_smoothing,
        max_length=None,
        report_to=[],
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
    )
    unused = Dataset.from_dict({"prompt": ["a"], "chosen": [" b"], "rejected": [" c"]})
    return DPOTrainer(
        model=policy,
        ref_model=reference,
        args=args,
        train_dataset=unused,
        processing_class=tokenizer,
    )


def trl_batch(rows: list[dict[str, list[int]]]) -> dict:
    """TRL's padded batch of rows {prompt_ids, chosen_ids, rejected_ids} (pad id 0)."""
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    return DataCollatorForPreference(pad_token_id=0)(rows)
