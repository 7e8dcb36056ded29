"""What a training stage costs: tokens/s per device, MFU against the device's MEASURED matmul peak, the GRPO
step-time split, peak memory and device-hours.

`CostCallback` measures one trainer's run and, at its end, logs `cost/*` metrics to the stage's MLflow run and
appends one `{"cost": {...}}` row to the trainer's log history, so the stage's train log
(outputs/logs/<stage>.jsonl, already a declared out) carries it to the report: `cost_table(stages)` renders
the report's table from those rows.

- tokens: TRL's cumulative `num_tokens` (non-pad tokens the trainer consumed; for GRPO prompt + completion),
  summed over processes by TRL, or for a plain transformers `Trainer` (the base stage's pretraining) its
  `num_input_tokens_seen` (`include_num_input_tokens_seen="non_padding"`); only this run's tokens count (a
  resumed run starts from its checkpoint's count); per device = / world size.
- MFU = 6 x parameters x tokens/s per device / the measured peak (best of 5 timed n³ matmuls, bf16 on CUDA,
  fp32 on CPU, the method of bench/train_bench.py). For GRPO it counts only the training pass (generation,
  reference and old log-prob passes are extra work), so it understates the device's utilisation.
- GRPO split (`instrument_grpo`): generation (`_generate`, decoding included), scoring (`_calculate_rewards`),
  log-prob (the rest of `_generate_and_score_completions`: reference/old log-probs, advantages),
  forward-backward (`training_step` minus scoring), optimizer (`on_pre_optimizer_step` -> `on_optimizer_step`),
  in seconds per optimizer step.
- device-hours = train wall time x world size / 3600; GPU-hours are the same figure where the device is CUDA
  (0 on CPU).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Sequence

import torch
from transformers import TrainerCallback

from r1_pipeline import tracking

GRPO_PHASES = ("generation", "scoring", "logprob", "fwd_bwd", "optimizer")


@functools.lru_cache(maxsize=None)
def measured_peak_flops(device_type: str) -> float:
    """Best of 5 timed n x n x n matmuls on this device (4096 bf16 on CUDA, 512 fp32 on CPU), FLOP/s."""
    cuda = device_type == "cuda"
    n, dtype = (4096, torch.bfloat16) if cuda else (512, torch.float32)
    # A private generator: drawing from the global one would shift every later random number of the run (the
    # rollouts' sampling), so measuring the cost would change the result.
    gen = torch.Generator(device=device_type).manual_seed(0)
    a = torch.randn(n, n, device=device_type, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device_type, dtype=dtype, generator=gen)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(5):
        sync()
        t0 = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def tokens_seen(state) -> int:
    """Non-pad tokens consumed so far: TRL logs `num_tokens`, transformers' Trainer counts
    `num_input_tokens_seen`."""
    logged = max((h.get("num_tokens", 0) for h in state.log_history), default=0)
    return int(logged or getattr(state, "num_input_tokens_seen", 0) or 0)


def _num_params(model) -> int:
    seen, total = set(), 0
    for p in model.parameters():  # a tied embedding counts once
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


class CostCallback(TrainerCallback):
    """Cost of one trainer run (see the module docstring); `phases` is filled by `instrument_grpo`."""

    def __init__(self, stage: str):
        self.stage = stage
        self.phases: dict[str, float] = {}
        self.t0 = self.opt_t0 = None
        self.start_step = self.start_tokens = 0
        self.result: dict = {}

    def add(self, phase: str, seconds: float) -> None:
        self.phases[phase] = self.phases.get(phase, 0.0) + seconds

    def on_train_begin(self, args, state, control, model=None, **kw):
        self.device = args.device.type if hasattr(args, "device") else "cpu"
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        self.peak = measured_peak_flops(self.device)  # before the clock starts
        self.params = _num_params(model) if model is not None else 0
        self.start_step = state.global_step  # a resumed run counts its own steps and tokens only
        self.start_tokens = tokens_seen(state)
        self.t0 = time.perf_counter()

    def on_pre_optimizer_step(self, args, state, control, **kw):
        self.opt_t0 = time.perf_counter()

    def on_optimizer_step(self, args, state, control, **kw):
        if self.opt_t0 is not None:
            self.add("optimizer", time.perf_counter() - self.opt_t0)

    def on_train_end(self, args, state, control, **kw):
        if self.t0 is None:
            return
        wall = time.perf_counter() - self.t0
        world = max(1, args.world_size)
        steps = max(1, state.global_step - self.start_step)
        tokens = tokens_seen(state) - self.start_tokens
        per_device = tokens / wall / world if wall > 0 else 0.0
        cost = {
            "wall_s": wall,
            "steps": steps,
            "world_size": world,
            "tokens": tokens,
            "tokens_per_s_per_device": per_device,
            "mfu": 6 * self.params * per_device / self.peak if self.peak else 0.0,
            "peak_flops_measured": self.peak,
            "params": self.params,
            "device_hours": wall * world / 3600,
            "gpu_hours": wall * world / 3600 if self.device == "cuda" else 0.0,
            "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if self.device == "cuda" else 0.0,
            "s_per_step": wall / steps,
        }
        if "generation" in self.phases:  # a GRPO run (instrument_grpo)
            split = dict(self.phases)
            score = split.pop("_score", 0.0)
            split["logprob"] = max(0.0, score - split.get("generation", 0.0) - split.get("scoring", 0.0))
            split["fwd_bwd"] = max(0.0, split.pop("_train_step", 0.0) - score)
            for phase in GRPO_PHASES:
                cost[f"step_{phase}_s"] = split.get(phase, 0.0) / steps
        self.result = cost
        state.log_history.append({"step": state.global_step, "cost": cost})
        tracking.log_metrics({f"cost/{k}": v for k, v in cost.items()}, step=state.global_step)


def instrument_grpo(trainer, callback: CostCallback) -> None:
    """Time a GRPOTrainer's phases on the instance (no subclass: works with any GRPOTrainer class)."""

    def timed(name: str, fn):
        @functools.wraps(fn)
        def wrapper(*a, **kw):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                callback.add(name, time.perf_counter() - t0)

        return wrapper

    for method, phase in (
        ("_generate", "generation"),
        ("_calculate_rewards", "scoring"),
        ("_generate_and_score_completions", "_score"),
        ("training_step", "_train_step"),
    ):
        setattr(trainer, method, timed(phase, getattr(trainer, method)))


def stage_costs(stages: list[str]) -> dict[str, dict]:
    """The last cost row of each stage's train log (outputs/logs/<stage>.jsonl), where there is one."""
    from r1_pipeline import paths
    from r1_pipeline.io import read_jsonl

    out = {}
    for stage in stages:
        path = Path(paths.train_log(stage))
        if path.exists():
            rows = [r["cost"] for r in read_jsonl(path) if isinstance(r.get("cost"), dict)]
            if rows:
                out[stage] = rows[-1]
    return out


def cost_table(stages: Sequence[str]) -> list[str]:
    """Markdown lines of the report's cost table (empty when no stage logged its cost)."""
    costs = stage_costs(stages)
    if not costs:
        return []
    lines = [
        "",
        "## Cost by stage",
        "",
        "Tokens/s per device and MFU (6 x parameters x tokens/s against the device's measured matmul peak; "
        "for GRPO the training pass only); GRPO seconds per optimizer step by phase (gen / score / log-prob "
        "/ fwd+bwd / optimizer).",
        "",
        "| stage | steps | s/step | tokens/s/device | MFU | peak mem GiB | GPU-hours | device-hours "
        "| GRPO split s (gen/score/logprob/fwd+bwd/opt) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for stage, c in costs.items():
        split = "/".join(f"{c[f'step_{p}_s']:.2f}" for p in GRPO_PHASES) if "step_generation_s" in c else "—"
        lines.append(
            f"| {stage} | {c['steps']} | {c['s_per_step']:.3f} | {c['tokens_per_s_per_device']:,.0f} "
            f"| {100 * c['mfu']:.1f}% | {c['peak_mem_gib']:.1f} | {c['gpu_hours']:.4f} "
            f"| {c['device_hours']:.4f} | {split} |"
        )
    return lines
