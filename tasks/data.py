"""Stage `data`: build every dataset of the run from the `data` section of params.yaml.

    python -m tasks.data [--params params.yaml] [--set data.seed=1 ...]

Writes outputs/data/{rl_train,rl_val,cold_start,corpus}.jsonl, outputs/data/eval/<name>.jsonl and
outputs/data/stats.json (see r1_pipeline.paths), all at once: everything is built in memory first, and the
folder is replaced in one rename, so a failed run writes nothing.

Exit codes: 0 success; 2 invalid params, an unreadable data source, or degenerate data: no RL prompt left, no
cold-start example left while sft is enabled, an eval set with 0 problems (e.g. every gold answer missing).
One line on stderr naming the key, source, file, line or field; nothing written; the flow never retries exit 2.
"""

from __future__ import annotations

from pathlib import Path

from r1_pipeline import paths, tracking
from r1_pipeline.config import Config
from r1_pipeline.data import build_datasets, summary, write_datasets
from r1_pipeline.stage import main_for


def run(cfg: Config) -> dict:
    """Build and write; returns the flat counts that are logged as metrics."""
    # --- build every dataset in memory (sources relative to the project root), then write all in one rename ---
    result = build_datasets(cfg, root=Path.cwd())
    write_datasets(result)
    stats = result["stats"]
    print(f"data: {summary(stats)}")
    # --- log the datasets to MLflow ---
    tracking.log_artifact(paths.DATA_STATS)
    for name in ("rl_train", "cold_start"):
        tracking.log_dataset(paths.DATA_DIR / f"{name}.jsonl", name, "training")
    for path in sorted(paths.EVAL_DIR.glob("*.jsonl")):
        tracking.log_dataset(path, path.stem, "evaluation")
    # --- metrics ---
    return {f"data_{k}": v for k, v in stats.get("counts", {}).items() if isinstance(v, (int, float))}


if __name__ == "__main__":
    main_for("data", run)
