"""Supervised fine-tuning on conversations with TRL's SFTTrainer (cold start and distillation)."""

from __future__ import annotations

from r1_pipeline.chat import format_completion, prompt_messages
from r1_pipeline.config import Config, TrainerConfig
from r1_pipeline.training import resume_checkpoint, trainer_kwargs, write_log_history


def conversations(rows: list[dict], system_prompt: str | None, with_reasoning: bool = True) -> list[dict]:
    """Rows {problem, answer, reasoning} -> TRL's conversational prompt-completion records.

    `with_reasoning=False` drops the <think> block: the answers-only comparison for distillation.
    """
    out = []
    for r in rows:
        reasoning = r.get("reasoning") if with_reasoning else None
        out.append({
            "prompt": prompt_messages(r["problem"], system_prompt),
            "completion": [{"role": "assistant", "content": format_completion(reasoning, r["answer"])}],
        })
    return out


def train_sft(model, tokenizer, records: list[dict], tc: TrainerConfig, cfg: Config, stage: str, *,
              max_length: int, completion_only_loss: bool, packing: bool, fingerprint: str, report: bool = True):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        **trainer_kwargs(tc, cfg, stage, report=report),
        max_length=max_length,
        completion_only_loss=completion_only_loss,
        packing=packing,
    )
    tokenizer.padding_side = "right"
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(records), processing_class=tokenizer)
    trainer.train(resume_from_checkpoint=resume_checkpoint(stage, fingerprint))
    tokenizer.padding_side = "left"
    write_log_history(trainer, stage)
    return trainer
