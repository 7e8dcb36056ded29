"""Stage `grpo`: reasoning RL (TRL GRPOTrainer, rule-based rewards by name) from the cold-start SFT model."""

from __future__ import annotations

from r1_pipeline import paths
from r1_pipeline.config import Config
from r1_pipeline.errors import require
from r1_pipeline.grpo import train_grpo
from r1_pipeline.stage import main_for
from r1_pipeline.training import is_skipped


def run(cfg: Config) -> dict:
    # --- model: the cold-start SFT model, or the base model when sft was skipped ---
    sft = require(paths.model_dir("sft"), "sft")
    init = paths.model_dir("base") if is_skipped(sft) else sft
    # --- GRPO: data, config, model, rewards, trainer, train, save, metrics (r1_pipeline/grpo.py) ---
    return train_grpo(cfg, cfg.grpo, "grpo", require(init, "base"))


if __name__ == "__main__":
    main_for("grpo", run)
