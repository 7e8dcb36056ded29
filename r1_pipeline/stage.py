"""What every `python -m tasks.<stage>` shares: arguments, config validation, clear errors, tracking."""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path
from typing import Callable

from r1_pipeline import paths
from r1_pipeline.config import Config, ConfigError, load_config
from r1_pipeline.io import write_json


class StageError(RuntimeError):
    """A stage cannot run (a missing input, a bad file): the message names what and where."""


def require(path: str | Path, producer: str) -> Path:
    """An input produced by an earlier stage; a clear error when it is absent."""
    p = Path(path)
    if not p.exists():
        raise StageError(f"input {p} not found: run the `{producer}` stage first (dvc repro {producer})")
    return p


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def parse_args(stage: str, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m tasks.{stage}", description=f"Run the {stage} stage.")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
        help="override one param for this run (repeatable), e.g. --set grpo.max_steps=10",
    )
    return parser.parse_args(argv)


def run_stage(stage: str, body: Callable[[Config], dict | None], argv: list[str] | None = None) -> int:
    """Validate params, open the stage's MLflow run, run `body(cfg)`, log the metrics it returns.

    Exit codes: 0 success, 2 invalid params or missing input (nothing written), 1 any other failure.
    """
    args = parse_args(stage, argv)
    try:
        cfg = load_config(args.params, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Two cores: more threads than cores only adds contention.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from r1_pipeline import tracking

    seed_everything(cfg.project.seed)
    start = time.time()
    try:
        with tracking.stage_run(stage, cfg):
            metrics = body(cfg) or {}
            metrics[f"{stage}_seconds"] = time.time() - start
            tracking.log_metrics(metrics)
            if tracking.is_main_process():
                # The stage's summary metrics, declared in dvc.yaml so `dvc metrics show` lists them.
                write_json(paths.metrics_file(stage), metrics)
    except StageError as exc:
        print(f"error: {stage}: {exc}", file=sys.stderr)
        return 2
    print(f"{stage}: done in {time.time() - start:.1f}s")
    return 0


def main_for(stage: str, body: Callable[[Config], dict | None]) -> None:
    """`if __name__ == "__main__": main_for("sft", run)` in a stage module."""
    sys.exit(run_stage(stage, body, sys.argv[1:]))
