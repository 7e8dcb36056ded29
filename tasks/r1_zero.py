"""Stage `r1_zero`: the R1-Zero experiment, the same GRPO straight on the base model (no cold start).

The reward and response-length curves it logs (outputs/logs/r1_zero.jsonl, MLflow step metrics) are the
R1-Zero story in miniature: does the length grow as the reward rises?
"""

from __future__ import annotations

from r1_pipeline import paths
from r1_pipeline.config import Config
from r1_pipeline.errors import require
from r1_pipeline.grpo import train_grpo
from r1_pipeline.stage import main_for
from r1_pipeline.training import mark_skipped


def run(cfg: Config) -> dict:
    if not cfg.r1_zero.enabled:
        mark_skipped("r1_zero", "r1_zero.enabled is false")
        return {}
    # --- GRPO straight on the base model, with grpo's settings updated by the r1_zero overlay ---
    return train_grpo(cfg, cfg.r1_zero, "r1_zero", require(paths.model_dir("base"), "base"))


if __name__ == "__main__":
    main_for("r1_zero", run)
