"""Stage `sft`: cold-start supervised fine-tuning of the base model on <think>-formatted conversations."""

from __future__ import annotations

from r1_pipeline import paths
from r1_pipeline.checkpoints import resume_key
from r1_pipeline.config import Config
from r1_pipeline.errors import require
from r1_pipeline.io import read_jsonl
from r1_pipeline.modeling import load_model_and_tokenizer, resolve_device
from r1_pipeline.sft import conversations, train_sft
from r1_pipeline.stage import main_for
from r1_pipeline.tracking import log_dataset
from r1_pipeline.training import mark_skipped, save_trainer_final


def run(cfg: Config) -> dict:
    s = cfg.sft
    if not s.enabled:
        mark_skipped("sft", "sft.enabled is false: GRPO starts from the base model")
        return {}
    # --- data: the base model's cold-start conversations ---
    base = require(paths.model_dir("base"), "base")
    rows = read_jsonl(require(paths.COLD_START, "data"))
    log_dataset(paths.COLD_START, "cold_start", "training")
    # --- model ---
    model, tokenizer = load_model_and_tokenizer(base, resolve_device(cfg.project.device), cfg.project.precision)
    # --- train: TRL's SFTTrainer with every sft.* field TRL has (r1_pipeline/sft.py, training.trl_args) ---
    trainer = train_sft(
        model,
        tokenizer,
        conversations(rows, cfg.chat.system_prompt),
        s,
        cfg,
        "sft",
        resume_key=resume_key(cfg, "sft", s, paths.COLD_START, base),
    )
    # --- save and metrics ---
    save_trainer_final(trainer, tokenizer, "sft", {"source": "sft", "init": str(base), "examples": len(rows)})
    return {"sft_examples": len(rows), "sft_final_loss": trainer.state.log_history[-1].get("train_loss", 0.0)}


if __name__ == "__main__":
    main_for("sft", run)
