"""Supervised fine-tuning on conversations with TRL's SFTTrainer (cold start and distillation)."""

from __future__ import annotations

from r1_pipeline import checkpoints
from r1_pipeline.chat import format_completion, prompt_messages
from r1_pipeline.config import Config, TrainerParams
from r1_pipeline.cost import CostCallback
from r1_pipeline.training import trl_args, write_log_history


def conversations(rows: list[dict], system_prompt: str | None, with_reasoning: bool = True) -> list[dict]:
    """Rows {problem, answer, reasoning} -> TRL's conversational prompt-completion records.

    `with_reasoning=False` drops the <think> block: the answers-only comparison for distillation.
    """
    out = []
    for r in rows:
        reasoning = r.get("reasoning") if with_reasoning else None
        out.append(
            {
                "prompt": prompt_messages(r["problem"], system_prompt),
                "completion": [{"role": "assistant", "content": format_completion(reasoning, r["answer"])}],
            }
        )
    return out


def train_sft(
    model,
    tokenizer,
    records: list[dict],
    section: TrainerParams,
    cfg: Config,
    stage: str,
    *,
    resume_key: str,
    report: bool = True,
    **overrides,
):
    """SFT on conversations; the SFTConfig holds every section field TRL has (max_length, completion_only_loss,
    ...) plus `overrides`. `section.packing` is our packing in rows (below): TRL's own packing stays off."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    args = trl_args(SFTConfig, section, cfg, stage, report=report, **overrides)
    packing, max_length = getattr(section, "packing", False), args.max_length
    tokenizer.padding_side = "right"
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(records), processing_class=tokenizer)
    trainer.add_callback(CostCallback(stage))  # cost/* metrics and a cost row in the train log (r1_pipeline/cost.py)
    attention = model.config._attn_implementation
    if packing:
        trainer.train_dataset = packed_rows_dataset(trainer.train_dataset, max_length)
        trainer.data_collator = packed_rows_collator(tokenizer.pad_token_id)
        # with a KV cache in the forward pass transformers skips packed-sequence detection, and documents in one
        # row would attend to each other (tests/unit/test_sft.py checks the logits)
        model.config.use_cache = False
        kernel = packed_attention_kernel(getattr(section, "packed_attention", "sdpa"), model.device.type, stage)
        if kernel != attention:
            model.set_attn_implementation(kernel)
    checkpoints.train(trainer, stage, resume_key)
    if model.config._attn_implementation != attention:
        model.set_attn_implementation(attention)  # the saved model generates with its usual kernel
    model.config.use_cache = True  # generation (and the saved config) wants it back
    tokenizer.padding_side = "left"
    write_log_history(trainer, stage)
    return trainer


def packed_attention_kernel(name: str, device_type: str, stage: str) -> str:
    """The attention implementation packing in rows trains with. `flex_attention`: transformers builds a
    BlockMask per row from the per-document position_ids (a document mask), and flex attention skips the
    blocks it masks, so a row of many short documents costs far less than max_length^2. Its backward has no
    CPU kernel: there the stage warns and keeps sdpa (tests/unit/test_sft.py checks the loss)."""
    if name == "flex_attention" and device_type != "cuda":
        import warnings

        warnings.warn(
            f"{stage}.packed_attention flex_attention needs a CUDA device for its backward pass; "
            f"training on {device_type} with sdpa (the same loss, a materialized mask)",
            stacklevel=2,
        )
        return "sdpa"
    return name


def packed_rows_dataset(dataset, max_length: int):
    """Packing without a varlen attention kernel: best-fit-decreasing packing (TRL's pack_dataset) into rows of
    max_length, kept as separate rows. The collator gives per-document position_ids and no attention_mask, so
    transformers builds a block-diagonal causal mask per row (cost ~ rows x max_length^2) instead of one mask
    over the whole flattened batch (cost ~ (rows x max_length)^2), which is what TRL's padding-free packing
    costs with SDPA (docs/benchmarks.md)."""
    from trl.data_utils import pack_dataset

    def labels(ex):
        return {"labels": [t if m else -100 for t, m in zip(ex["input_ids"], ex["completion_mask"])]}

    if "completion_mask" in dataset.column_names:  # completion-only loss: mask the prompt before packing
        dataset = dataset.map(labels)
    keep = [c for c in ("input_ids", "labels") if c in dataset.column_names]
    dataset = dataset.select_columns(keep)  # packing needs token-aligned columns only
    return pack_dataset(dataset, seq_length=max_length, strategy="bfd")


def packed_rows_collator(pad_id: int):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    class PackedRowsCollator(DataCollatorForLanguageModeling):
        def torch_call(self, examples):
            out = super().torch_call(examples)
            out.pop("attention_mask", None)  # packed-sequence detection needs position_ids alone
            out["labels"][out["position_ids"] == 0] = -100  # never predict a document's first token
            return out

    return PackedRowsCollator(pad_token_id=pad_id, padding_free=False, return_position_ids=True)
