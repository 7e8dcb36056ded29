"""What every `python -m tasks.<stage>` shares: arguments, config validation, clear errors, tracking."""

from __future__ import annotations

import argparse
import os
import random
import subprocess
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


def require_package(module: str, key: str, install: str) -> None:
    """A param that needs an optional package (vllm, liger-kernel): a clear error naming the key when it is absent."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise StageError(f"{key} is true but {module} is not installed ({install})")


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


LAUNCHED_ENV = "R1_LAUNCHED"


def launch_command(cfg: Config, stage: str, argv: list[str]) -> list[str] | None:
    """`accelerate launch` command for a stage whose params ask for several processes or DeepSpeed, else None.

    dvc.yaml always calls `python -m tasks.<stage>`; the stage relaunches itself through accelerate when
    needed, so the graph does not change with the profile. DeepSpeed needs a launcher even for one process.
    """
    from r1_pipeline.config import PROJECT_ROOT, TrainerConfig
    from r1_pipeline.modeling import resolve_device

    section = getattr(cfg, stage, None)
    if not isinstance(section, TrainerConfig) or os.environ.get(LAUNCHED_ENV) or "LOCAL_RANK" in os.environ:
        return None
    if section.num_processes == 1 and section.deepspeed == "none":
        return None
    infra = PROJECT_ROOT / "infra"
    if section.accelerate_config:
        config = Path(section.accelerate_config)
    elif resolve_device(cfg.project.device) == "cpu":
        config = infra / "accelerate" / "cpu_zero2.yaml"  # without deepspeed: --cpu below makes it plain DDP
    else:
        config = infra / "accelerate" / ("multi_gpu.yaml" if section.deepspeed == "none" else f"multi_gpu_{section.deepspeed}.yaml")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
           "--num_processes", str(section.num_processes)]
    if section.deepspeed != "none":
        cmd += ["--use_deepspeed", "--deepspeed_config_file", str(infra / "deepspeed" / f"{section.deepspeed}.json")]
    elif resolve_device(cfg.project.device) == "cpu":
        cmd += ["--cpu"]
    return cmd + ["-m", f"tasks.{stage}", *argv]


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
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    launch = launch_command(cfg, stage, list(argv) if argv is not None else sys.argv[1:])
    if launch:
        print(f"{stage}: launching {cfg_processes(cfg, stage)} processes: {' '.join(launch)}", flush=True)
        return subprocess.call(launch, env={**os.environ, LAUNCHED_ENV: "1"})
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


def cfg_processes(cfg: Config, stage: str) -> int:
    return getattr(getattr(cfg, stage), "num_processes", 1)


def main_for(stage: str, body: Callable[[Config], dict | None]) -> None:
    """`if __name__ == "__main__": main_for("sft", run)` in a stage module."""
    sys.exit(run_stage(stage, body, sys.argv[1:]))
