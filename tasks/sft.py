"""Stage `sft`: cold-start supervised fine-tuning of the base model on <think>-formatted conversations."""

from __future__ import annotations

from r1_pipeline import paths
from r1_pipeline.config import Config
from r1_pipeline.io import read_jsonl
from r1_pipeline.modeling import load_model_and_tokenizer, resolve_device
from r1_pipeline.sft import conversations, train_sft
from r1_pipeline.stage import main_for, require
from r1_pipeline.tracking import log_dataset
from r1_pipeline.checkpoints import resume_key
from r1_pipeline.training import mark_skipped, save_trainer_final


def run(cfg: Config) -> dict:
    if not cfg.sft.enabled:
        mark_skipped("sft", "sft.enabled is false: GRPO starts from the base model")
        return {}
    base = require(paths.model_dir("base"), "base")
    rows = read_jsonl(require(paths.COLD_START, "data"))
    log_dataset(paths.COLD_START, "cold_start", "training")
    model, tokenizer = load_model_and_tokenizer(base, resolve_device(cfg.project.device), cfg.project.precision)
    s = cfg.sft
    trainer = train_sft(
        model, tokenizer, conversations(rows, cfg.chat.system_prompt), s, cfg, "sft",
        max_length=s.max_length, completion_only_loss=s.completion_only_loss, packing=s.packing,
        resume_key=resume_key(cfg, "sft", s, paths.COLD_START, base),
    )
    save_trainer_final(trainer, tokenizer, "sft", {"source": "sft", "init": str(base), "examples": len(rows)})
    return {"sft_examples": len(rows), "sft_final_loss": trainer.state.log_history[-1].get("train_loss", 0.0)}


if __name__ == "__main__":
    main_for("sft", run)
