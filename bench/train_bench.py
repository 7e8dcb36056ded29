"""Training benchmark: SFT throughput/MFU, GRPO step-time split, pipeline overhead, reward verification speed.

    python bench/train_bench.py --mode gpu --out outputs/bench/gpu     # one H200: about 7 minutes
    python bench/train_bench.py --mode cpu --out outputs/bench/cpu     # 2-core laptop: about 10-15 minutes
    python bench/train_bench.py --mode cpu --quick                     # the smoke test's size (under a minute)

It prints one Markdown report (a header and four tables) and writes under --out:
    table.md        the report (rewritten after every row, so a killed run still leaves what it measured)
    results.json    every number, the settings of every row and the per-step timings
    bench.log       progress, and the traceback of every failed row
    logs/<row>.log  the libraries' own output while that row ran

What each row measures (synthetic data, random-init models; see docs/benchmarks.md for the method):
- SFT: tokens/s (non-pad tokens only) and MFU = 6 x params x tokens/s (and + attention FLOPs 12 x layers x
  hidden x doc_len per token, PaLM's convention, not halved for causality) over the MEASURED dense matmul peak
  of the same device (bf16 on GPU, fp32 on CPU). Variants: TRL's SFTTrainer defaults ("bare"), + packing,
  + Liger, and our stage's SFTConfig (r1_pipeline.training.trl_kwargs, as r1_pipeline.sft.train_sft builds
  it) with candidate speedups.
- GRPO: TRL's GRPOTrainer, HF generation, a fixed number of completions of a fixed length per step (EOS is
  suppressed with min_new_tokens), time per optimizer step split into generation, reward, log-prob passes,
  forward+backward, optimizer step and the rest, by wrapping the trainer's `_generate`,
  `_calculate_rewards`, `_generate_and_score_completions`, `training_step` and the optimizer callbacks.
- Pipeline overhead: r1_pipeline.grpo.train_grpo (our reward wrappers, MLflow to a local SQLite file,
  completion tables) against a bare TRL script with the very GRPOConfig train_grpo builds, same process.
- Rewards: r1_pipeline.rewards accuracy reward on the real graded responses (../shared/data/graded), on the same
  responses padded to 32k characters, and plain math_verify on whole responses.

Rows that fail print "error: <message>" in their cells; rows not started before --budget-s print "skipped".
Rows that patch libraries globally (Liger), need their own launcher (DeepSpeed) or may compile for long
(torch.compile) run in child processes of this script.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

TRIPLES = ROOT.parent / "shared" / "data" / "graded" / "verifier_triples.jsonl"
QWEN25_05B = dict(hidden=896, layers=24, heads=14, kv_heads=2, ffn=4864, vocab=151936)


# ----------------------------------------------------------------------------------------------------- sizes


@dataclasses.dataclass
class Sizes:
    model: dict
    seq_lens: list[int]
    tokens_per_step: int  # token slots per SFT optimizer step: batch size = tokens_per_step // seq_len
    sft_warmup: int
    sft_steps: int
    grpo_prompts: int
    grpo_generations: int
    grpo_completion: int
    grpo_prompt_tokens: tuple[int, int]
    grpo_warmup: int
    grpo_steps: int
    matmul_n: int
    reward_counts: dict  # input -> (max responses, time cap in s)
    children: bool  # run the Liger / DeepSpeed / torch.compile child processes
    compile_seq_lens: list[int]
    budget_s: float
    max_step_s: float  # a training run whose step takes longer stops and reports an error (bounds a bad row)


SIZES = {
    "gpu": Sizes(
        model=QWEN25_05B,
        seq_lens=[1024, 4096],
        tokens_per_step=16384,
        sft_warmup=3,
        sft_steps=8,
        grpo_prompts=8,
        grpo_generations=8,
        grpo_completion=256,
        grpo_prompt_tokens=(32, 96),
        grpo_warmup=1,
        grpo_steps=2,
        matmul_n=8192,
        reward_counts={"real": (6076, 10), "long": (400, 6), "plain": (300, 6), "plain_long": (20, 6)},
        children=True,
        compile_seq_lens=[1024],
        budget_s=370,
        max_step_s=45,
    ),
    "cpu": Sizes(
        model=dict(hidden=128, layers=4, heads=4, kv_heads=2, ffn=384, vocab=2048),
        seq_lens=[128, 512],
        tokens_per_step=4096,
        sft_warmup=1,
        sft_steps=4,
        grpo_prompts=4,
        grpo_generations=4,
        grpo_completion=32,
        grpo_prompt_tokens=(8, 24),
        grpo_warmup=1,
        grpo_steps=2,
        matmul_n=1024,
        reward_counts={"real": (6076, 60), "long": (400, 30), "plain": (300, 30), "plain_long": (20, 30)},
        children=True,
        compile_seq_lens=[128],
        budget_s=1800,
        max_step_s=600,
    ),
    "quick": Sizes(
        model=dict(hidden=32, layers=2, heads=4, kv_heads=2, ffn=64, vocab=256),
        seq_lens=[32],
        tokens_per_step=256,
        sft_warmup=1,
        sft_steps=2,
        grpo_prompts=2,
        grpo_generations=2,
        grpo_completion=8,
        grpo_prompt_tokens=(4, 8),
        grpo_warmup=1,
        grpo_steps=1,
        matmul_n=256,
        reward_counts={"real": (64, 5), "long": (8, 5), "plain": (8, 5), "plain_long": (2, 5)},
        children=False,
        compile_seq_lens=[],
        budget_s=300,
        max_step_s=120,
    ),
}


# ----------------------------------------------------------------------------------------------- utilities


class Bench:
    """Run-wide state: output folder, log, results, deadline."""

    def __init__(self, args, sizes: Sizes):
        self.args, self.sizes = args, sizes
        self.out = Path(args.out).resolve()
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        self.work = self.out / "work"
        self.start = time.time()
        self.deadline = self.start + (args.budget_s if args.budget_s is not None else sizes.budget_s)
        self.rows: list[dict] = []
        self.header: dict = {}
        self.previous: list[dict] = []
        self.previous_header: dict = {}
        if args.append and not args.child and (self.out / "results.json").exists():
            earlier = json.loads((self.out / "results.json").read_text())
            self.previous, self.previous_header = earlier.get("rows", []), earlier.get("header", {})
        name = "bench.log" if not args.child else f"logs/child-{args.child}-rows.log"
        self.log_file = open(self.out / name, "a")
        # Our progress goes to the original stderr; the libraries' output goes to per-row logs.
        self.console = os.fdopen(os.dup(2), "w", buffering=1)

    def log(self, msg: str) -> None:
        line = f"[{time.time() - self.start:7.1f}s] {msg}"
        self.log_file.write(line + "\n")
        self.log_file.flush()
        if not self.args.child:
            self.console.write(line + "\n")

    def remaining(self) -> float:
        return self.deadline - time.time()

    def save(self) -> None:
        if self.args.child:  # a child reports its rows to the parent only
            if int(os.environ.get("RANK", "0")) == 0:
                Path(self.args.child_result).write_text(json.dumps({"rows": self.rows}, default=str))
            return
        data = {"header": self.header, "rows": self.all_rows()}
        tmp = self.out / ".results.json.tmp"
        tmp.write_text(json.dumps(data, indent=1, default=str))
        tmp.replace(self.out / "results.json")
        (self.out / "table.md").write_text(render(self.header, self.all_rows()))

    def all_rows(self) -> list[dict]:
        def key(r):
            return r["section"], r["key"], r.get("seq_len")

        new = {key(r) for r in self.rows}
        return [r for r in self.previous if key(r) not in new] + self.rows


@contextlib.contextmanager
def capture_output(path: Path):
    """Send everything written to fds 1 and 2 (Python and C code alike) to `path` while the block runs."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def short_error(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if type(exc).__name__ == "OutOfMemoryError":
        msg = "CUDA out of memory"
    text = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    return text.replace("|", "/")[:120]


def cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def now() -> float:
    sync()
    return time.perf_counter()


def free_memory() -> None:
    gc.collect()
    if cuda():
        import torch

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# ----------------------------------------------------------------------------------------------- header


def measure_peak(n: int) -> dict:
    """Best of 10 timed n x n x n matmuls (bf16 on GPU, fp32 on CPU), after 3 warm-ups."""
    import torch

    dev = "cuda" if cuda() else "cpu"
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    for _ in range(3):
        torch.matmul(a, b)
    times = []
    for _ in range(10):
        t0 = now()
        torch.matmul(a, b)
        times.append(now() - t0)
    best = min(times)
    return {
        "peak_flops": 2 * n**3 / best,
        "matmul": f"{n}x{n}x{n} {str(dtype).replace('torch.', '')}",
        "best_s": best,
        "median_s": sorted(times)[len(times) // 2],
        "device": dev,
    }


def collect_header(bench: Bench) -> dict:
    import torch

    cpu_model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    header = {
        "mode": bench.args.mode + (" --quick" if bench.args.quick else ""),
        "command": "python bench/train_bench.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "gpu": f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}" if cuda() else "none",
        "cpu": f"{cpu_model}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}",
        "python": platform.python_version(),
        "load_average": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "versions": {
            d: version(d)
            for d in (
                "torch",
                "transformers",
                "trl",
                "accelerate",
                "deepspeed",
                "liger-kernel",
                "vllm",
                "flash-attn",
                "datasets",
                "peft",
                "math-verify",
                "mlflow-skinny",
            )
        },
    }
    if cuda():
        header["cuda"] = torch.version.cuda
    return header


# ------------------------------------------------------------------------------------- model and tokenizer


def build_tokenizer(vocab_size: int):
    """A word-level tokenizer with `vocab_size` entries (w0, w1, ...), ChatML markers and the reasoning tags:
    any token id the model samples decodes to a word, so completions have realistic text lengths."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from r1_pipeline.modeling import CHAT_TEMPLATE, SPECIAL_TOKENS, TAG_TOKENS

    words = SPECIAL_TOKENS + TAG_TOKENS + ["system", "user", "assistant"]
    words += [f"w{i}" for i in range(vocab_size - len(words))]
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAG_TOKENS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
    )
    fast.padding_side = "left"
    return fast


FIRST_WORD_ID = 10  # ids below are markers and tags; synthetic data never uses them


def build_model(shape: dict, tokenizer, dtype: str, max_len: int, attn: str = "sdpa"):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=shape["vocab"],
        hidden_size=shape["hidden"],
        intermediate_size=shape["ffn"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"],
        max_position_embeddings=max(max_len, 32768),
        tie_word_embeddings=True,
        rope_theta=1_000_000.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        attn_implementation=attn,
    )
    torch.manual_seed(0)
    with torch.device("cuda" if cuda() else "cpu"):
        model = Qwen2ForCausalLM(config)
    model.to(torch.bfloat16 if dtype == "bf16" else torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def num_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------- step timing


class Record:
    """Per-optimizer-step sums of named phases, plus the wall clock at every step end."""

    def __init__(self):
        self.phases: dict[int, dict[str, float]] = {}
        self.step_end: dict[int, float] = {}
        self.step_begin: dict[int, float] = {}
        self._opt0 = 0.0
        self.too_slow: float | None = None

    def check(self, limit: float) -> None:
        if self.too_slow is not None:
            raise RuntimeError(f"stopped: a step took {self.too_slow:.0f} s (limit {limit:.0f} s)")

    def add(self, step: int, name: str, value: float) -> None:
        d = self.phases.setdefault(step, {})
        d[name] = d.get(name, 0.0) + value

    def window(self, first: int, last: int) -> list[dict]:
        """Steps first..last (1-based, inclusive): each with its wall time (step end to step end) and phases."""
        out = []
        for k in range(first, last + 1):
            if k not in self.step_end or (k - 1) not in self.step_end:
                continue
            out.append({"step": k, "time": self.step_end[k] - self.step_end[k - 1], **self.phases.get(k, {})})
        return out


def make_clock(record: Record, max_step_s: float | None = None):
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            record.step_end[0] = now()

        def on_step_begin(self, args, state, control, **kw):
            record.step_begin[state.global_step + 1] = now()

        def on_pre_optimizer_step(self, args, state, control, **kw):
            record._opt0 = now()

        def on_optimizer_step(self, args, state, control, **kw):
            record.add(state.global_step + 1, "optimizer", now() - record._opt0)

        def on_step_end(self, args, state, control, **kw):
            t = record.step_end[state.global_step] = now()
            prev = record.step_end.get(state.global_step - 1)
            if max_step_s and prev is not None and t - prev > max_step_s:
                record.too_slow = t - prev
                control.should_training_stop = True

    return StepClock()


def timed(record: Record, trainer, name: str, fn: Callable, *a, **kw):
    t0 = now()
    try:
        return fn(*a, **kw)
    finally:
        record.add(trainer.state.global_step + 1, name, now() - t0)


def count_tokens(inputs: dict, pad_id: int) -> tuple[int, int]:
    """(non-pad tokens, sum over documents of length^2) of one collated batch: rows of padded documents,
    packed rows (position_ids restart at 0 for every document) or one padding-free row."""
    import torch

    ids = inputs["input_ids"].detach().cpu()
    mask = inputs.get("attention_mask")
    valid = mask.detach().cpu().bool() if mask is not None else ids != pad_id
    pos = inputs.get("position_ids")
    pos = pos.detach().cpu() if pos is not None else None
    tokens, sumsq = int(valid.sum()), 0
    for r in range(ids.shape[0]):
        n = int(valid[r].sum())
        if pos is None:
            sumsq += n * n
            continue
        p = pos[r][valid[r]]
        starts = torch.nonzero(p == 0).flatten().tolist() or [0]
        bounds = starts + [n]
        sumsq += sum((b - a) ** 2 for a, b in zip(bounds[:-1], bounds[1:]))
    return tokens, sumsq


# ----------------------------------------------------------------------------------------------- SFT


def sft_dataset(sizes: Sizes, seq_len: int, batch: int, seed: int):
    """Random-token documents, lengths uniform in [0.25, 1.0] x seq_len, the first 20% of each a "prompt"
    (completion_mask 0) so completion-only loss has something to mask."""
    from datasets import Dataset

    rng = random.Random(seed)
    n_docs = int((sizes.sft_warmup + sizes.sft_steps + 2) * batch * 1.8) + 4
    vocab = sizes.model["vocab"]
    ids, masks = [], []
    for _ in range(n_docs):
        n = rng.randint(max(2, seq_len // 4), seq_len)
        ids.append([rng.randrange(FIRST_WORD_ID, vocab) for _ in range(n)])
        p = max(1, n // 5)
        masks.append([0] * p + [1] * (n - p))
    return Dataset.from_dict({"input_ids": ids, "completion_mask": masks})


def our_config(mode: str, overrides: list[str]):
    """The validated config of the profile our stages run in this mode (gpu profile on GPU, tiny on CPU)."""
    from r1_pipeline.config import apply_overrides, profile_dict, validate

    profile = "gpu" if mode == "gpu" else "tiny"
    return validate(apply_overrides(profile_dict(profile), overrides), f"profile {profile}", ROOT)


SFT_VARIANTS = [
    # key, label, kind, changes, group
    ("bare", "bare TRL (SFTTrainer defaults, padded)", "bare", {}, "main"),
    ("bare_packing", "bare TRL + packing (bfd, padding-free)", "bare", {"packing": True}, "main"),
    ("bare_liger", "bare TRL + Liger kernels", "bare", {"use_liger_kernel": True}, "liger"),
    # fair baselines (issue 16): the same memory setting both ways, and the best bare setting a user would pick
    (
        "bare_nogc",
        "bare TRL, gradient_checkpointing off (our memory setting)",
        "bare",
        {"gradient_checkpointing": False},
        "main",
    ),
    (
        "bare_best",
        "bare TRL best: packing + Liger, gradient_checkpointing off",
        "bare",
        {"packing": True, "use_liger_kernel": True, "gradient_checkpointing": False},
        "liger",
    ),
    ("ours", "ours (stage SFTConfig, as configured)", "ours", {}, "main"),
    (
        "ours_gc",
        "ours + gradient_checkpointing on (TRL's memory setting)",
        "ours",
        {"gradient_checkpointing": True},
        "main",
    ),
    ("ours_packing", "ours + packing (bfd, padding-free)", "ours", {"packing": True}, "main"),
    ("ours_rows", "ours + packing in rows (sft.packing: true)", "ours", {"packed_rows": True}, "main"),
    (
        "ours_rows_flex",
        "ours + packing in rows + flex_attention document mask (sft.packed_attention)",
        "ours",
        {"packed_rows": True, "attn": "flex_attention"},
        "main",
    ),
    (
        "ours_rows_liger",
        "ours + packing in rows + Liger",
        "ours",
        {"packed_rows": True, "use_liger_kernel": True},
        "liger",
    ),
    # issue 16, 1k MFU: what a user can set on top of packing in rows + Liger (sft.packed_attention,
    # sft.per_device_train_batch_size); "batch_mult" multiplies the bench's batch (16,384 token slots / seq_len)
    (
        "ours_rows_liger_flex",
        "ours + packing in rows + Liger + flex_attention",
        "ours",
        {"packed_rows": True, "use_liger_kernel": True, "attn": "flex_attention"},
        "liger",
    ),
    (
        "ours_rows_liger_bs2x",
        "ours + packing in rows + Liger, batch 2x",
        "ours",
        {"packed_rows": True, "use_liger_kernel": True, "batch_mult": 2},
        "liger",
    ),
    (
        "ours_rows_liger_bs4x",
        "ours + packing in rows + Liger, batch 4x",
        "ours",
        {"packed_rows": True, "use_liger_kernel": True, "batch_mult": 4},
        "liger",
    ),
    (
        "ours_rows_liger_flex_bs2x",
        "ours + packing in rows + Liger + flex_attention, batch 2x",
        "ours",
        {"packed_rows": True, "use_liger_kernel": True, "attn": "flex_attention", "batch_mult": 2},
        "liger",
    ),
    (
        "ours_rows_liger_flex_bs4x",
        "ours + packing in rows + Liger + flex_attention, batch 4x",
        "ours",
        {"packed_rows": True, "use_liger_kernel": True, "attn": "flex_attention", "batch_mult": 4},
        "liger",
    ),
    (
        "ours_flash",
        "ours + packing + flash_attention_2",
        "ours",
        {"packing": True, "attn": "flash_attention_2"},
        "main",
    ),
    # padded to the full length: one static shape, so it compiles once (dynamic shapes recompile mid-run)
    (
        "ours_compile",
        "ours + torch.compile (padded to max length)",
        "ours",
        {"torch_compile": True, "pad_full": True},
        "compile",
    ),
    (
        "ours_zero2",
        "ours as the stage launches it (accelerate + DeepSpeed ZeRO-2)",
        "ours",
        {"deepspeed": "zero2"},
        "zero2",
    ),
]


def sft_na(key: str, changes: dict, mode: str) -> str | None:
    if changes.get("use_liger_kernel") and not has_module("liger_kernel"):
        return "n/a (liger-kernel not installed)"
    if changes.get("attn") == "flex_attention" and mode != "gpu":
        return "n/a on CPU (flex attention has no CPU backward)"
    if changes.get("attn") == "flash_attention_2" and not has_module("flash_attn"):
        return "n/a (flash-attn not installed)"
    if changes.get("deepspeed") and not has_module("deepspeed"):
        return "n/a (deepspeed not installed)"
    return None


def run_sft(bench: Bench, key: str, kind: str, changes: dict, seq_len: int) -> dict:
    import torch
    from trl import SFTConfig, SFTTrainer

    from r1_pipeline.training import trl_kwargs

    sizes, mode = bench.sizes, bench.args.mode
    batch = max(1, sizes.tokens_per_step // seq_len) * changes.get("batch_mult", 1)
    warmup = max(sizes.sft_warmup, 2) if changes.get("torch_compile") else sizes.sft_warmup
    max_steps = warmup + sizes.sft_steps
    tok = build_tokenizer(sizes.model["vocab"])
    tok.padding_side = "right"
    out_dir = bench.work / f"sft_{key}_{seq_len}"
    common = dict(
        output_dir=str(out_dir),
        max_steps=max_steps,
        per_device_train_batch_size=batch,
        max_length=seq_len,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        logging_steps=1,
    )
    if kind == "bare":
        dtype = "bf16" if cuda() else "fp32"  # what from_pretrained(dtype="auto") gives a Qwen2.5 / a tiny fp32 model
        kwargs = dict(common)
        if not cuda():
            kwargs["use_cpu"] = True  # TRL's default bf16=True refuses to start on CPU without it
    else:
        cfg = our_config(mode, [f"sft.deepspeed={changes.get('deepspeed', 'none')}"])
        sec = cfg.sft
        dtype = cfg.project.precision
        kwargs = trl_kwargs(SFTConfig, sec, cfg, "sft", report=False)
        # as r1_pipeline.sft.train_sft adds them
        kwargs.update(max_length=seq_len, completion_only_loss=sec.completion_only_loss, packing=sec.packing)
        kwargs.update(common)
    for name in ("packing", "use_liger_kernel", "torch_compile", "gradient_checkpointing"):
        if name in changes:
            kwargs[name] = changes[name]
    if changes.get("pad_full"):
        kwargs["pad_to_multiple_of"] = seq_len
    args = SFTConfig(**kwargs)
    model = build_model(sizes.model, tok, dtype, seq_len, attn=changes.get("attn", "sdpa"))
    dataset = sft_dataset(sizes, seq_len, batch, seed=seq_len)
    collator = None
    if changes.get("packed_rows"):
        from r1_pipeline.sft import packed_rows_collator, packed_rows_dataset

        dataset = packed_rows_dataset(dataset, seq_len)
        collator = packed_rows_collator(tok.pad_token_id)
        model.config.use_cache = False  # else transformers skips packed-sequence masking
    record = Record()

    class BenchSFTTrainer(SFTTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            n, sq = count_tokens(inputs, tok.pad_token_id)
            step = self.state.global_step + 1
            record.add(step, "tokens", n)
            record.add(step, "sumsq", sq)
            record.add(step, "slots", int(inputs["input_ids"].numel()))
            return timed(record, self, "fwd_bwd", super().training_step, model, inputs, num_items_in_batch)

    trainer = BenchSFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tok,
        data_collator=collator,
        callbacks=[make_clock(record, sizes.max_step_s)],
    )
    if cuda():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    record.check(sizes.max_step_s)
    steps = record.window(warmup + 1, max_steps)
    n = num_params(trainer.model)
    result = summarize_sft(steps, n, sizes.model, bench.header.get("peak", {}).get("peak_flops"))
    result.update(
        params=n,
        batch=batch,
        dtype=dtype,
        settings=settings_of(args, changes),
        steps=steps,
        warmup_s=sum(s["time"] for s in record.window(1, warmup)),
    )  # incl. any compilation
    if cuda():
        result["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    del trainer, model
    shutil.rmtree(out_dir, ignore_errors=True)
    return result


def step_range(steps: list[dict]) -> str:
    """Mean step time with the fastest and slowest step: the spread shows how noisy the machine was."""
    t = [s["time"] for s in steps]
    digits = 3 if max(t) < 10 else 1
    return f"{sum(t) / len(t):.{digits}f} ({min(t):.{digits}f}-{max(t):.{digits}f})"


def summarize_sft(steps: list[dict], n_params: int, shape: dict, peak: float | None) -> dict:
    if not steps:
        raise RuntimeError("no timed steps")
    wall = sum(s["time"] for s in steps)
    tokens = sum(s.get("tokens", 0) for s in steps)
    sumsq = sum(s.get("sumsq", 0) for s in steps)
    slots = sum(s.get("slots", 0) for s in steps)
    flops6n = 6 * n_params * tokens
    flops_attn = 12 * shape["layers"] * shape["hidden"] * sumsq
    out = {
        "tokens_per_s": tokens / wall,
        "s_per_step": wall / len(steps),
        "s_per_step_range": step_range(steps),
        "tokens_per_step": tokens / len(steps),
        "pad_fraction": 1 - tokens / slots if slots else None,
        "timed_steps": len(steps),
    }
    if peak:
        out["mfu_6n"] = flops6n / wall / peak
        out["mfu_6n_attn"] = (flops6n + flops_attn) / wall / peak
    return out


def settings_of(args, changes: dict) -> str:
    keys = [
        "bf16",
        "gradient_checkpointing",
        "packing",
        "padding_free",
        "completion_only_loss",
        "per_device_train_batch_size",
        "use_liger_kernel",
        "torch_compile",
    ]
    parts = []
    for k in keys:
        v = getattr(args, k, None)
        if isinstance(v, bool) or v is None:
            if v:
                parts.append(k.replace("per_device_train_batch_size", "bs"))
        else:
            parts.append(f"{k.replace('per_device_train_batch_size', 'bs')}={v}")
    if getattr(args, "deepspeed", None):
        parts.append(f"deepspeed={Path(str(args.deepspeed)).stem}")
    if changes.get("packed_rows"):
        parts.append("packed rows")
    if changes.get("attn"):
        parts.append(changes["attn"])
    if changes.get("pad_full"):
        parts.append(f"pad_to_multiple_of={args.pad_to_multiple_of}")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------- GRPO


def grpo_rows(sizes: Sizes, n: int, seed: int = 0) -> list[dict]:
    """RL prompts as our data stage writes them ({problem, answer}): random words, an integer answer."""
    rng = random.Random(seed)
    lo, hi = sizes.grpo_prompt_tokens
    vocab = sizes.model["vocab"]
    return [
        {
            "problem": " ".join(f"w{rng.randrange(vocab - FIRST_WORD_ID)}" for _ in range(rng.randint(lo, hi))),
            "answer": str(rng.randint(0, 99)),
        }
        for _ in range(n)
    ]


def make_grpo_trainer_class(record: Record, completion_len: int, captured: dict, max_step_s: float | None = None):
    from trl import GRPOTrainer

    class BenchGRPOTrainer(GRPOTrainer):
        """GRPOTrainer with a stopwatch around generation, rewards, scoring, training step and optimizer, and
        EOS suppressed until the full completion length (every step generates the same number of tokens)."""

        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            if getattr(self, "generation_config", None) is not None:
                self.generation_config.min_new_tokens = completion_len
            if isinstance(getattr(self, "generation_kwargs", None), dict):
                self.generation_kwargs["min_new_tokens"] = completion_len
            self.add_callback(make_clock(record, max_step_s))  # last, so it sees the other callbacks' work
            captured["trainer"] = self

        def _generate(self, prompts):
            out = timed(record, self, "generate", super()._generate, prompts)
            record.add(self.state.global_step + 1, "completion_tokens", sum(len(c) for c in out[1]))
            record.add(self.state.global_step + 1, "completions", len(out[1]))
            return out

        def _calculate_rewards(self, *a, **kw):
            return timed(record, self, "reward", super()._calculate_rewards, *a, **kw)

        def _generate_and_score_completions(self, *a, **kw):
            return timed(record, self, "score", super()._generate_and_score_completions, *a, **kw)

        def training_step(self, *a, **kw):
            return timed(record, self, "train_step", super().training_step, *a, **kw)

    return BenchGRPOTrainer


def summarize_grpo(steps: list[dict]) -> dict:
    if not steps:
        raise RuntimeError("no timed steps")
    k = len(steps)

    def mean(name):
        return sum(s.get(name, 0.0) for s in steps) / k

    step, gen, rew, score = mean("time"), mean("generate"), mean("reward"), mean("score")
    train, opt = mean("train_step"), mean("optimizer")
    tokens, total_gen = sum(s.get("completion_tokens", 0) for s in steps), sum(s.get("generate", 0) for s in steps)
    comps = sum(s.get("completions", 0) for s in steps)
    return {
        "s_per_step": step,
        "s_per_step_range": step_range(steps),
        "generate_s": gen,
        "reward_s": rew,
        "logprob_s": max(0.0, score - gen - rew),
        "fwd_bwd_s": max(0.0, train - score),
        "optimizer_s": opt,
        "other_s": max(0.0, step - train - opt),
        "completion_tokens_per_step": tokens / k,
        "mean_completion_len": tokens / comps if comps else None,
        "gen_tokens_per_s": tokens / total_gen if total_gen else None,
        "timed_steps": k,
        "mlflow_s": mean("mlflow"),
        "mlflow_calls_per_step": mean("mlflow_calls"),
    }


def grpo_dataset(rows: list[dict]):
    from datasets import Dataset

    from r1_pipeline.chat import prompt_messages

    return Dataset.from_list([{"prompt": prompt_messages(r["problem"], None), "answer": r["answer"]} for r in rows])


def plain_rewards():
    from r1_pipeline.rewards import REWARD_REGISTRY

    return [REWARD_REGISTRY["accuracy"], REWARD_REGISTRY["format"]]


class GRPOContext:
    """What the GRPO rows share: a saved random-init model + tokenizer (as our base stage would leave it),
    the prompts, and the GRPOConfig kwargs that train_grpo builds (captured from the pipeline row)."""

    def __init__(self, bench: Bench):
        self.bench = bench
        self.init_dir: Path | None = None
        self.rows = grpo_rows(bench.sizes, 400)
        self.ours_kwargs: dict | None = None

    def model_dir(self) -> Path:
        if self.init_dir is None:
            from r1_pipeline.modeling import save_tokenizer

            cfg = our_config(self.bench.args.mode, [])
            tok = build_tokenizer(self.bench.sizes.model["vocab"])
            model = build_model(self.bench.sizes.model, tok, cfg.project.precision, 4096)
            self.init_dir = self.bench.work / "grpo_init"
            model.save_pretrained(self.init_dir)
            save_tokenizer(tok, self.init_dir)
            del model
        return self.init_dir

    def steps(self) -> int:
        return self.bench.sizes.grpo_warmup + self.bench.sizes.grpo_steps


def grpo_overrides(sizes: Sizes, max_steps: int) -> list[str]:
    return [
        f"grpo.per_device_train_batch_size={sizes.grpo_prompts * sizes.grpo_generations}",
        f"grpo.num_generations={sizes.grpo_generations}",
        f"grpo.max_completion_length={sizes.grpo_completion}",
        f"grpo.max_steps={max_steps}",
        "grpo.deepspeed=none",
        "grpo.num_processes=1",
    ]


def run_grpo_bare_defaults(bench: Bench, ctx: GRPOContext) -> dict:
    """TRL's GRPOConfig defaults; only the batch shape, step count and output are set."""
    from trl import GRPOConfig

    sizes = bench.sizes
    record, captured = Record(), {}
    cls = make_grpo_trainer_class(record, sizes.grpo_completion, captured, sizes.max_step_s)
    kwargs = dict(
        output_dir=str(bench.work / "grpo_bare"),
        max_steps=ctx.steps(),
        report_to=[],
        save_strategy="no",
        per_device_train_batch_size=sizes.grpo_prompts * sizes.grpo_generations,
        num_generations=sizes.grpo_generations,
        max_completion_length=sizes.grpo_completion,
        disable_tqdm=True,
    )
    if not cuda():
        kwargs["use_cpu"] = True
    args = GRPOConfig(**kwargs)
    from r1_pipeline.modeling import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(ctx.model_dir(), "cuda" if cuda() else "cpu", "bf16" if cuda() else "fp32")
    trainer = cls(
        model=model, reward_funcs=plain_rewards(), args=args, train_dataset=grpo_dataset(ctx.rows), processing_class=tok
    )
    trainer.train()
    record.check(sizes.max_step_s)
    result = summarize_grpo(record.window(sizes.grpo_warmup + 1, ctx.steps()))
    result.update(settings=grpo_settings(args), steps=record.window(1, ctx.steps()))
    del trainer, model
    return result


def grpo_settings(args) -> str:
    parts = [
        f"bs={args.per_device_train_batch_size}",
        f"G={args.num_generations}",
        f"len={args.max_completion_length}",
        f"beta={args.beta}",
        f"loss={args.loss_type}",
    ]
    for k in ("bf16", "gradient_checkpointing", "use_transformers_continuous_batching", "use_vllm"):
        if getattr(args, k, False):
            parts.append(k)
    if args.cache_implementation:
        parts.append(f"cache={args.cache_implementation}")
    if args.generation_batch_size and args.generation_batch_size != args.per_device_train_batch_size:
        parts.append(f"generation_batch_size={args.generation_batch_size}")
    return ", ".join(parts)


MLFLOW_CALLS = ("log_metrics", "log_metric", "log_params", "log_param", "log_table", "log_input", "set_tags")


@contextlib.contextmanager
def mlflow_accounting(record: Record, captured: dict):
    """Time every MLflow logging call (TRL's per-call profiling metrics, the MLflow callback, our tables) and
    book it on the current optimizer step as phase `mlflow`."""
    import mlflow

    originals = {name: getattr(mlflow, name) for name in MLFLOW_CALLS}

    def wrap(fn):
        def counted(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                trainer = captured.get("trainer")
                step = trainer.state.global_step + 1 if trainer is not None else 0
                record.add(step, "mlflow", time.perf_counter() - t0)
                record.add(step, "mlflow_calls", 1)

        return counted

    for name, fn in originals.items():
        setattr(mlflow, name, wrap(fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(mlflow, name, fn)


def run_grpo_pipeline(
    bench: Bench, ctx: GRPOContext, name: str = "pipeline", env: dict | None = None, overrides: list[str] | None = None
) -> dict:
    """r1_pipeline.grpo.train_grpo inside tracking.stage_run, in a work folder laid out as our stages expect;
    trl.GRPOConfig/GRPOTrainer are swapped for a capturing config and the timed trainer for the call."""
    import trl

    from r1_pipeline import tracking
    from r1_pipeline.grpo import train_grpo
    from r1_pipeline.io import write_jsonl

    sizes = bench.sizes
    init = ctx.model_dir()
    cfg = our_config(bench.args.mode, grpo_overrides(sizes, ctx.steps()) + list(overrides or []))
    workdir = bench.work / name  # its own: a second run in the same folder would resume the first's checkpoint
    (workdir / "outputs" / "data").mkdir(parents=True, exist_ok=True)
    write_jsonl(workdir / "outputs" / "data" / "rl_train.jsonl", ctx.rows)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{bench.work / 'mlflow.db'}"
    os.environ["MLFLOW_EXPERIMENT_NAME"] = "r1-bench"
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    mlflow.MlflowClient().search_experiments()  # schema migration once, outside the timing (a real store exists)

    record, captured = Record(), {}
    cls = make_grpo_trainer_class(record, sizes.grpo_completion, captured, sizes.max_step_s)
    orig_config, orig_trainer = trl.GRPOConfig, trl.GRPOTrainer

    def capture_config(**kw):
        captured["kwargs"] = dict(kw)
        return orig_config(**kw)  # a real GRPOConfig (the trainer pickles its args: no local subclass)

    # r1_pipeline.training.trl_args reads the class's dataclass fields and name
    capture_config.__dataclass_fields__ = orig_config.__dataclass_fields__
    capture_config.__name__ = orig_config.__name__

    cwd = os.getcwd()
    saved_env = {k: os.environ.get(k) for k in (env or {})}
    trl.GRPOConfig, trl.GRPOTrainer = capture_config, cls
    try:
        os.environ.update(env or {})
        os.chdir(workdir)
        with mlflow_accounting(record, captured):
            t0 = now()
            with tracking.stage_run("grpo", cfg):
                train_grpo(cfg, cfg.grpo, "grpo", init.resolve())
            wall = now() - t0
        record.check(sizes.max_step_s)
    finally:
        os.chdir(cwd)
        trl.GRPOConfig, trl.GRPOTrainer = orig_config, orig_trainer
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(workdir, ignore_errors=True)
    ctx.ours_kwargs = captured["kwargs"]
    trainer = captured["trainer"]
    result = summarize_grpo(record.window(sizes.grpo_warmup + 1, ctx.steps()))
    settings = grpo_settings(trainer.args) + "".join(f", {o.split('.', 1)[1]}" for o in overrides or [])
    result.update(settings=settings, wall_s=wall, steps=record.window(1, ctx.steps()))
    captured.clear()
    del trainer
    return result


def run_grpo_ours_args(bench: Bench, ctx: GRPOContext, changes: dict, name: str, like_pipeline: bool = False) -> dict:
    """A bare TRL script: the GRPOConfig our stage builds (+ `changes`), plain reward functions, no MLflow,
    no callbacks. `like_pipeline`: keep the stage's checkpointing and save the model at the end, as train_grpo
    does, so the wall times compare; otherwise only the step times count and nothing is saved."""
    from trl import GRPOConfig

    from r1_pipeline.modeling import load_model_and_tokenizer

    if ctx.ours_kwargs is None:
        raise RuntimeError("the pipeline row did not run, so the stage's GRPOConfig is unknown")
    sizes = bench.sizes
    warmup, timed_steps = sizes.grpo_warmup, sizes.grpo_steps
    per_gen = 1
    if changes.get("generation_batch_size"):
        # whole generation cycles in the warm-up and in the timed window
        per_gen = changes["generation_batch_size"] // (sizes.grpo_prompts * sizes.grpo_generations)
        warmup = per_gen * math.ceil(warmup / per_gen)
        timed_steps = per_gen * math.ceil(timed_steps / per_gen)
    cfg = our_config(bench.args.mode, grpo_overrides(sizes, warmup + timed_steps))
    record, captured = Record(), {}
    cls = make_grpo_trainer_class(record, sizes.grpo_completion, captured, sizes.max_step_s)
    out_dir = bench.work / f"grpo_{name}"
    kwargs = dict(ctx.ours_kwargs, output_dir=str(out_dir), report_to=[], run_name=name, max_steps=warmup + timed_steps)
    if not like_pipeline:
        kwargs["save_strategy"] = "no"
    kwargs.update(changes)
    t0 = now()
    args = GRPOConfig(**kwargs)
    model, tok = load_model_and_tokenizer(ctx.model_dir(), "cuda" if cuda() else "cpu", cfg.project.precision)
    trainer = cls(
        model=model, reward_funcs=plain_rewards(), args=args, train_dataset=grpo_dataset(ctx.rows), processing_class=tok
    )
    trainer.train()
    record.check(sizes.max_step_s)
    if like_pipeline:
        trainer.save_model(str(out_dir / "final"))
    wall = now() - t0
    result = summarize_grpo(record.window(warmup + 1, warmup + timed_steps))
    result.update(settings=grpo_settings(args), steps=record.window(1, warmup + timed_steps))
    if like_pipeline:
        result["wall_s"] = wall
    captured.clear()
    del trainer, model
    shutil.rmtree(out_dir, ignore_errors=True)
    return result


BASELINE_LABEL = "ours' GRPOConfig in a bare TRL script (baseline of the rows below)"
GRPO_VARIANTS = [
    # key, label, changes (on top of the stage's GRPOConfig), needs
    ("ours_static", "ours + static KV cache", {"cache_implementation": "static"}, None),
    (
        "ours_genbatch",
        "ours + generation_batch_size 2x (one generation per 2 steps)",
        {"generation_batch_size": "2x"},
        None,
    ),
    ("ours_vllm", "ours + vLLM colocate", {"use_vllm": True, "vllm_mode": "colocate"}, "vllm"),
    ("ours_cb", "ours + transformers continuous batching", {"use_transformers_continuous_batching": True}, None),
]


# ------------------------------------------------------------------------------ rollouts (hf_compiled)


def graphs_compiled() -> int:
    """torch.compile graphs built so far in this process (a recompile builds one more)."""
    import torch

    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def rollout_prompts(bench: Bench, rows: int, width_offset: int, seed: int):
    """`rows` left-padded prompts of the GRPO prompt lengths; `width_offset` makes the padded width differ from
    call to call, as GRPO batches do."""
    import torch

    lo, hi = bench.sizes.grpo_prompt_tokens
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(lo, max(lo, hi - width_offset) + 1, (rows,), generator=g).tolist()
    width = max(lengths)
    ids = torch.full((rows, width), 0, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, width - n :] = torch.randint(FIRST_WORD_ID, bench.sizes.model["vocab"], (n,), generator=g)
        mask[i, width - n :] = 1
    dev = "cuda" if cuda() else "cpu"
    return ids.to(dev), mask.to(dev)


def run_raw_generate(bench: Bench, ctx: GRPOContext, how: str) -> dict:
    """One GRPO step's worth of rollouts (prompts x generations rows, the completion length, EOS suppressed),
    generated 4 times with prompt widths that differ as GRPO batches do: the first call (compilation) and the
    later ones timed apart, and the torch.compile graphs each call built (recompiles) counted."""
    import torch

    from r1_pipeline.generation import CompiledDecoder
    from r1_pipeline.modeling import load_model_and_tokenizer

    sizes = bench.sizes
    rows, new = sizes.grpo_prompts * sizes.grpo_generations, sizes.grpo_completion
    model, tok = load_model_and_tokenizer(ctx.model_dir(), "cuda" if cuda() else "cpu", "bf16" if cuda() else "fp32")
    model.eval()
    decoder = CompiledDecoder(model) if how == "compiled" else None
    times, graphs = [], []
    for call, offset in enumerate([0, 7, 0, 13]):
        ids, mask = rollout_prompts(bench, rows, offset, call)
        g0 = graphs_compiled()
        t0 = now()
        with torch.no_grad():
            if decoder is not None:
                decoder.generate(
                    ids,
                    mask,
                    new,
                    temperature=1.0,
                    min_new_tokens=new,
                    pad_id=tok.pad_token_id,
                    eos_token_ids=[tok.eos_token_id],
                )
            else:
                extra = (
                    {}
                    if how == "dynamic"
                    else {"cache_implementation": "static", "disable_compile": how == "static_nocompile"}
                )
                model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    do_sample=True,
                    temperature=1.0,
                    max_new_tokens=new,
                    min_new_tokens=new,
                    pad_token_id=tok.pad_token_id,
                    **extra,
                )
        times.append(now() - t0)
        graphs.append(graphs_compiled() - g0)
        if times[0] > 240:  # a first call this slow: do not spend the run on three more
            break
    later = times[1:] or times
    mean_later = sum(later) / len(later)
    del model, decoder
    return {
        "first_s": times[0],
        "later_s": mean_later,
        "later_range": f"{min(later):.2f}-{max(later):.2f}",
        "tok_per_s": rows * new / mean_later,
        "graphs_per_call": "/".join(str(g) for g in graphs),
        "settings": f"{rows} rows x {new} tokens, prompt widths vary (+0/-7/+0/-13)",
        "calls": times,
    }


def run_backend(bench: Bench, ctx: GRPOContext, name: str) -> dict:
    """The backend rejection sampling and evaluation call (get_backend), 32 prompts x 8 samples x the
    completion length, temperature 0.6 / top-p 0.95 (the evaluation protocol), two calls."""
    from r1_pipeline.generation import get_backend

    new = bench.sizes.grpo_completion
    backend = get_backend(
        name, ctx.model_dir(), "cuda" if cuda() else "cpu", "bf16" if cuda() else "fp32", batch_size=256
    )
    rows = grpo_rows(bench.sizes, 64, seed=5)
    times, tokens = [], []
    for call in range(2):
        prompts = [[{"role": "user", "content": r["problem"]}] for r in rows[call * 32 : (call + 1) * 32]]
        t0 = now()
        out = backend.generate(prompts, n=8, temperature=0.6, top_p=0.95, max_new_tokens=new, seed=call)
        times.append(now() - t0)
        tokens.append(sum(s.num_tokens for g in out for s in g))
    del backend
    return {
        "first_s": times[0],
        "later_s": times[1],
        "later_range": f"{times[1]:.2f}",
        "tok_per_s": tokens[1] / times[1],
        "graphs_per_call": "—",
        "settings": f"32 prompts x 8 samples x <= {new} tokens, T 0.6, top-p 0.95",
        "calls": times,
    }


ROLLOUT_RAW = [
    ("gen_dynamic", "model.generate, dynamic cache (TRL's default path)", "dynamic"),
    (
        "gen_static_nocompile",
        "model.generate, static cache, disable_compile=True (what GRPOTrainer runs)",
        "static_nocompile",
    ),
    ("gen_static", "model.generate, static cache, generate's own compile", "static"),
    ("gen_compiled", "r1_pipeline CompiledDecoder (hf_compiled)", "compiled"),
]


def rollout_section(bench: Bench) -> None:
    """hf_compiled against TRL's HF generation: raw generate calls (why the static cache lost inside the trainer),
    GRPO steps in the same process (bare TRL, the stage with hf and with hf_compiled), and the backend that
    rejection sampling and evaluation use."""
    ctx = GRPOContext(bench)
    wanted = set(bench.args.rows.split(",")) if bench.args.rows else None

    def row(section, key, label, fn):
        if wanted is not None and key not in wanted:
            return {"status": "not run"}
        return row_result(bench, section, key, label, fn)

    ours = row(
        "grpo", "r_ours_hf", "ours: train_grpo, generation_backend hf", lambda: run_grpo_pipeline(bench, ctx, "pipe_hf")
    )
    bare = row("grpo", "r_bare_same", BASELINE_LABEL, lambda: run_grpo_ours_args(bench, ctx, {}, "r_bare_same"))
    comp = row(
        "grpo",
        "r_ours_compiled",
        "ours: train_grpo, generation_backend hf_compiled",
        lambda: run_grpo_pipeline(bench, ctx, "pipe_compiled", overrides=["grpo.generation_backend=hf_compiled"]),
    )
    for base_key, base in (("bare", bare), ("ours_hf", ours)):
        if base.get("status") == "ok" and comp.get("status") == "ok":
            bench.rows.append(
                {
                    "section": "rollout",
                    "key": f"ratio_{base_key}",
                    "status": "ok",
                    "label": f"GRPO step: generation speedup hf_compiled vs {base['label']} (x)",
                    "later_s": base["generate_s"] / comp["generate_s"],
                    "tok_per_s": comp["gen_tokens_per_s"] / base["gen_tokens_per_s"],
                    "first_s": base["s_per_step"] / comp["s_per_step"],
                    "later_range": "—",
                    "graphs_per_call": "—",
                    "settings": "later s = generate s ratio; first s = s/step ratio; tok/s = gen tok/s ratio",
                }
            )
    bench.save()
    raw = {key: (label, how) for key, label, how in ROLLOUT_RAW}
    order = [
        "gen_dynamic",
        "gen_compiled",
        "gen_static_nocompile",
        "backend_hf",
        "backend_hf_compiled",
        "gen_static",
    ]  # generate's own compile last: it may recompile for every prompt width
    for key in order:
        if key in raw:
            label, how = raw[key]
            row("rollout", key, label, lambda: run_raw_generate(bench, ctx, how))
        else:
            name = key.removeprefix("backend_")
            row("rollout", key, f"get_backend('{name}') (rejection, evaluate)", lambda: run_backend(bench, ctx, name))


# ------------------------------------------------------------------------------------------- rewards


def load_triples() -> list[dict]:
    return [json.loads(line) for line in TRIPLES.read_text().splitlines() if line.strip()]


def pad_long(text: str, target: int = 32_000) -> str:
    """The response preceded by copies of itself up to `target` characters: same final answer, long output."""
    if len(text) >= target:
        return text
    filler = (text + "\n\n") * (target // (len(text) + 2) + 1)
    return filler[: target - len(text)] + text


def run_rewards(bench: Bench, which: str) -> dict:
    rows = load_triples()
    rng = random.Random(0)
    limit, cap = bench.sizes.reward_counts[which]
    sample = rows if limit >= len(rows) else rng.sample(rows, limit)
    if which in ("long", "plain_long"):
        sample = [dict(r, response=pad_long(r["response"])) for r in sample]
    times, agree = [], 0
    start = time.perf_counter()
    if which in ("real", "long"):
        from r1_pipeline.rewards import accuracy_reward

        batch = 64  # TRL calls a reward with one generation batch
        for i in range(0, len(sample), batch):
            chunk = sample[i : i + batch]
            t0 = time.perf_counter()
            scores = accuracy_reward([r["response"] for r in chunk], answer=[r["gold_answer"] for r in chunk])
            dt = time.perf_counter() - t0
            times.extend([dt / len(chunk)] * len(chunk))
            agree += sum(bool(s) == bool(r["label"]) for s, r in zip(scores, chunk))
            if time.perf_counter() - start > cap:
                break
    else:
        from math_verify import parse, verify

        for r in sample:
            t0 = time.perf_counter()
            try:
                ok = bool(verify(parse(f"${r['gold_answer']}$"), parse(r["response"])))
            except Exception:
                ok = False
            times.append(time.perf_counter() - t0)
            agree += ok == bool(r["label"])
            if time.perf_counter() - start > cap:
                break
    n = len(times)
    total = sum(times)
    return {
        "n": n,
        "of": len(sample),
        "responses_per_s": n / total if total else None,
        "mean_ms": 1000 * total / n if n else None,
        "max_ms": 1000 * max(times) if times else None,
        "agreement": agree / n if n else None,
        "mean_chars": sum(len(r["response"]) for r in sample[:n]) / n if n else None,
    }


REWARD_VARIANTS = [
    ("real", "r1_pipeline accuracy reward, real responses"),
    ("long", "r1_pipeline accuracy reward, responses padded to 32k chars"),
    ("plain", "plain math_verify on whole responses"),
    ("plain_long", "plain math_verify on whole 32k-char responses"),
]


# ---------------------------------------------------------------------------------------------- rows


def row_result(
    bench: Bench, section: str, key: str, label: str, fn: Callable[[], dict] | None, na: str | None = None, **meta
) -> dict:
    row = {"section": section, "key": key, "label": label, **meta}
    if na:
        row.update(status="n/a", message=na)
    elif bench.remaining() <= 0:
        row.update(status="skipped", message="skipped (time budget)")
    else:
        bench.log(f"{section}: {label} {meta or ''}")
        t0 = time.time()
        logname = f"{section}_{key}" + "".join(f"_{v}" for v in meta.values())
        try:
            with capture_output(bench.out / "logs" / f"{logname}.log"):
                result = fn()
            row.update(status="ok", **result)
        except BaseException as exc:  # noqa: BLE001 - a row's failure must not stop the others
            if isinstance(exc, KeyboardInterrupt):
                raise
            row.update(status="error", message=f"error: {short_error(exc)}")
            bench.log_file.write(traceback.format_exc())
            bench.log(f"  failed: {row['message']}")
        finally:
            free_memory()
        row["row_seconds"] = time.time() - t0
        if row["status"] == "ok":
            bench.log(f"  done in {row['row_seconds']:.1f}s")
    bench.rows.append(row)
    bench.save()
    return row


def sft_rows(bench: Bench, group: str) -> None:
    wanted = set(bench.args.rows.split(",")) if bench.args.rows else None
    for seq in bench.sizes.seq_lens:
        for key, label, kind, changes, g in SFT_VARIANTS:
            if g != group or (wanted is not None and key not in wanted):
                continue
            if key == "ours_compile" and seq not in bench.sizes.compile_seq_lens:
                continue
            row_result(
                bench,
                "sft",
                key,
                label,
                lambda: run_sft(bench, key, kind, changes, seq),
                na=sft_na(key, changes, bench.args.mode),
                seq_len=seq,
            )


def grpo_section(bench: Bench) -> None:
    ctx = GRPOContext(bench)
    sizes = bench.sizes
    row_result(bench, "grpo", "bare", "bare TRL (GRPOConfig defaults)", lambda: run_grpo_bare_defaults(bench, ctx))
    pipe = row_result(bench, "grpo", "ours", "ours: r1_pipeline.grpo.train_grpo", lambda: run_grpo_pipeline(bench, ctx))
    bare_same = row_result(
        bench,
        "overhead",
        "bare_same",
        "bare TRL script, the same GRPOConfig",
        lambda: run_grpo_ours_args(bench, ctx, {}, "bare_same", like_pipeline=True),
    )
    pipe_copy = {k: v for k, v in pipe.items() if k not in ("section", "key", "label")}
    bench.rows.append({"section": "overhead", "key": "ours", "label": "ours: r1_pipeline.grpo.train_grpo", **pipe_copy})
    same_copy = {k: v for k, v in bare_same.items() if k not in ("section", "key", "label")}
    bench.rows.append({"section": "grpo", "key": "ours_bare", "label": BASELINE_LABEL, **same_copy})
    bench.rows.append(overhead_ratio("ratio", "ratio ours / bare (x)", pipe, bare_same))
    bench.save()
    async_run = row_result(
        bench,
        "overhead",
        "ours_async",
        "ours + MLFLOW_ENABLE_ASYNC_LOGGING=true (the stage default since tracking.configure sets it)",
        lambda: run_grpo_pipeline(bench, ctx, "pipeline_async", env={"MLFLOW_ENABLE_ASYNC_LOGGING": "true"}),
    )
    bench.rows.append(overhead_ratio("ratio_async", "ratio ours async / bare (x)", async_run, bare_same))
    bench.save()
    for key, label, changes, needs in GRPO_VARIANTS:
        changes = dict(changes)
        if changes.get("generation_batch_size") == "2x":
            changes["generation_batch_size"] = 2 * sizes.grpo_prompts * sizes.grpo_generations
        na = f"n/a ({needs} not installed)" if needs and not has_module(needs) else None
        if changes.get("use_transformers_continuous_batching") and not cuda():
            na = "n/a on CPU (its paged-attention loop took 27 s/step for 32 tokens in a quick run)"
        row_result(bench, "grpo", key, label, lambda: run_grpo_ours_args(bench, ctx, changes, key), na=na)


def overhead_ratio(key: str, label: str, ours: dict, bare: dict) -> dict:
    row = {"section": "overhead", "key": key, "label": label}
    if ours.get("status") == "ok" and bare.get("status") == "ok":
        row["status"] = "ok"
        for k in ("s_per_step", "generate_s", "reward_s", "other_s", "wall_s"):
            row[k] = ours[k] / bare[k] if bare.get(k) else None
    else:
        row.update(status="error", message="error: a run above failed or was skipped")
    return row


def reward_section(bench: Bench) -> None:
    na = None if TRIPLES.exists() else f"n/a ({TRIPLES} not found)"
    for key, label in REWARD_VARIANTS:
        row_result(bench, "reward", key, label, lambda: run_rewards(bench, key), na=na)


CHILD_GROUPS = ("liger", "compile", "zero2")


def child_command(bench: Bench, group: str, result_file: Path) -> list[str]:
    script = [
        str(Path(__file__).resolve()),
        "--mode",
        bench.args.mode,
        "--out",
        str(bench.out),
        "--child",
        group,
        "--child-result",
        str(result_file),
        "--budget-s",
        str(max(1, int(bench.remaining()))),
    ]
    if bench.args.quick:
        script.append("--quick")
    if bench.args.threads:
        script += ["--threads", str(bench.args.threads)]
    for flag, value in (
        ("--rows", bench.args.rows),
        ("--seq-lens", bench.args.seq_lens),
        ("--max-step-s", bench.args.max_step_s),
        ("--tokens-per-step", bench.args.tokens_per_step),
    ):
        if value:
            script += [flag, str(value)]
    if group != "zero2":
        return [sys.executable, *script]
    # As r1_pipeline.stage.launch_command starts a DeepSpeed stage: accelerate launch, one process.
    config = ROOT / "infra" / "accelerate" / ("multi_gpu_zero2.yaml" if cuda() else "cpu_zero2.yaml")
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(config),
        "--num_processes",
        "1",
        "--use_deepspeed",
        "--deepspeed_config_file",
        str(ROOT / "infra" / "deepspeed" / "zero2.json"),
        *script,
    ]


def child_rows(bench: Bench, group: str) -> list[tuple]:
    rows = []
    wanted = set(bench.args.rows.split(",")) if bench.args.rows else None
    for seq in bench.sizes.seq_lens:
        for key, label, _kind, changes, g in SFT_VARIANTS:
            if wanted is not None and key not in wanted:
                continue
            if g == group and not (key == "ours_compile" and seq not in bench.sizes.compile_seq_lens):
                rows.append((key, label, seq, changes))
    return rows


def run_child_group(bench: Bench, group: str, min_seconds: float) -> None:
    """Run a group of SFT rows in a child process; fill them in from its result file (or with its failure)."""
    wanted = child_rows(bench, group)
    if not wanted:
        return
    na = sft_na(wanted[0][0], wanted[0][3], bench.args.mode)
    if not bench.sizes.children and not na:
        na = "skipped (--quick: no child processes)"
    if na or bench.remaining() < min_seconds:
        for key, label, seq, _ in wanted:
            msg = na or "skipped (time budget)"
            bench.rows.append(
                {
                    "section": "sft",
                    "key": key,
                    "label": label,
                    "seq_len": seq,
                    "status": "n/a" if msg.startswith("n/a") else "skipped",
                    "message": msg,
                }
            )
        bench.save()
        return
    result_file = bench.out / "logs" / f"child-{group}.json"
    result_file.unlink(missing_ok=True)
    cmd = child_command(bench, group, result_file)
    bench.log(f"sft: child process for {group}: {' '.join(cmd)}")
    t0 = time.time()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    err = None
    with open(bench.out / "logs" / f"child_{group}.log", "a") as log:
        try:
            rc = subprocess.run(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(ROOT),
                timeout=max(30.0, bench.remaining() + 20),
                start_new_session=True,
            ).returncode
            if rc:
                err = f"error: child exited {rc} (see logs/child_{group}.log)"
        except subprocess.TimeoutExpired:
            err = "error: child timed out (time budget)"
    got = {}
    if result_file.exists():
        for r in json.loads(result_file.read_text()).get("rows", []):
            got[(r["key"], r.get("seq_len"))] = r
    for key, label, seq, _ in wanted:
        row = got.get((key, seq)) or {
            "section": "sft",
            "key": key,
            "label": label,
            "seq_len": seq,
            "status": "error",
            "message": err or "error: child wrote no result",
        }
        bench.rows.append(row)
    bench.log(f"  child {group} done in {time.time() - t0:.1f}s")
    bench.save()


def run_child(bench: Bench) -> None:
    """Inside a child process: run one group's SFT rows, write them to --child-result."""
    bench.header["peak"] = (
        json.loads((bench.out / "results.json").read_text())["header"].get("peak", {})
        if (bench.out / "results.json").exists()
        else {}
    )
    for key, label, seq, changes in child_rows(bench, bench.args.child):
        kind = next(v[2] for v in SFT_VARIANTS if v[0] == key)
        row_result(
            bench,
            "sft",
            key,
            label,
            lambda: run_sft(bench, key, kind, changes, seq),
            na=sft_na(key, changes, bench.args.mode),
            seq_len=seq,
        )


# ---------------------------------------------------------------------------------------------- report


def fmt(v: Any, spec: str = ".3g") -> str:
    if v is None:
        return "—"
    if isinstance(v, (int, float)) and spec:
        return format(v, spec)
    return str(v)


SFT_COLS = [
    ("tokens/s", "tokens_per_s", ",.0f"),
    ("MFU (6N)", "mfu_6n", ".1%"),
    ("MFU (6N+attn)", "mfu_6n_attn", ".1%"),
    ("s/step (min-max)", "s_per_step_range", ""),
    ("tokens/step", "tokens_per_step", ",.0f"),
    ("pad", "pad_fraction", ".1%"),
    ("peak mem GiB", "peak_mem_gib", ".1f"),
    ("settings", "settings", ""),
]
GRPO_COLS = [
    ("s/step (min-max)", "s_per_step_range", ""),
    ("generate s", "generate_s", ".2f"),
    ("reward s", "reward_s", ".3f"),
    ("logprob s", "logprob_s", ".2f"),
    ("fwd+bwd s", "fwd_bwd_s", ".2f"),
    ("optimizer s", "optimizer_s", ".3f"),
    ("other s", "other_s", ".3f"),
    ("completion tok/step", "completion_tokens_per_step", ",.0f"),
    ("gen tok/s", "gen_tokens_per_s", ",.0f"),
    ("settings", "settings", ""),
]
OVERHEAD_COLS = [
    ("s/step", "s_per_step", ".3f"),
    ("generate s", "generate_s", ".3f"),
    ("reward s", "reward_s", ".4f"),
    ("other s", "other_s", ".3f"),
    ("MLflow s/step", "mlflow_s", ".3f"),
    ("MLflow calls/step", "mlflow_calls_per_step", ".1f"),
    ("wall s (load+train+save)", "wall_s", ".2f"),
]
ROLLOUT_COLS = [
    ("first call s", "first_s", ".2f"),
    ("later calls s", "later_s", ".2f"),
    ("later range", "later_range", ""),
    ("tokens/s (later)", "tok_per_s", ",.0f"),
    ("graphs compiled per call", "graphs_per_call", ""),
    ("settings", "settings", ""),
]
REWARD_COLS = [
    ("responses", "n", ",.0f"),
    ("responses/s", "responses_per_s", ",.1f"),
    ("mean ms", "mean_ms", ".2f"),
    ("max ms", "max_ms", ".1f"),
    ("mean chars", "mean_chars", ",.0f"),
    ("agreement with label", "agreement", ".2%"),
]


def table(rows: list[dict], cols: list[tuple], first: list[tuple[str, Callable[[dict], str]]]) -> str:
    names = [c[0] for c in first] + [c[0] for c in cols]
    lines = ["| " + " | ".join(names) + " |", "|" + "|".join("---" for _ in names) + "|"]
    for r in rows:
        cells = [f(r) for _, f in first]
        if r.get("status") == "ok":
            cells += [fmt(r.get(key), spec) if spec else fmt(r.get(key)) for _, key, spec in cols]
        else:
            msg = r.get("message", r.get("status", "?"))
            cells += [msg] + ["—"] * (len(cols) - 1)
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def render(header: dict, rows: list[dict]) -> str:
    peak = header.get("peak", {})
    v = header.get("versions", {})
    unit = "TFLOP/s" if peak.get("device") == "cuda" else "GFLOP/s"
    scale = 1e12 if unit == "TFLOP/s" else 1e9
    out = [
        f"## Training benchmark ({header.get('mode', '?')})",
        "",
        f"- command: `{header.get('command', '')}` ({header.get('date', '')})"
        + "".join(f"; earlier: `{c}`" for c in header.get("earlier_commands", [])),
        f"- hardware: GPU {header.get('gpu', '?')}; CPU {header.get('cpu', '?')}; load average at start "
        f"{header.get('load_average', '?')}",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + f", python {header.get('python', '?')}",
        f"- measured matmul peak: {fmt(peak.get('peak_flops', 0) / scale, '.1f')} {unit} "
        f"({peak.get('matmul', '?')}, best of 10) — the MFU denominator",
    ]
    if header.get("model"):
        out.append(f"- model: {header['model']}")
    if header.get("total_s"):
        earlier = f" (+ {header['total_s_earlier']:.0f} s earlier)" if header.get("total_s_earlier") else ""
        out.append(f"- total time: {header['total_s']:.0f} s{earlier}")
    sft = [r for r in rows if r["section"] == "sft"]
    sft.sort(
        key=lambda r: (
            r.get("seq_len", 0),
            [v[0] for v in SFT_VARIANTS].index(r["key"]) if r["key"] in [v[0] for v in SFT_VARIANTS] else 99,
        )
    )
    out += [
        "",
        "### SFT throughput (non-pad tokens; MFU vs the measured peak)",
        "",
        table(sft, SFT_COLS, [("seq", lambda r: str(r.get("seq_len", ""))), ("variant", lambda r: r["label"])]),
    ]
    out += [
        "",
        "### GRPO step (mean over timed steps; HF generation, EOS suppressed)",
        "",
        table([r for r in rows if r["section"] == "grpo"], GRPO_COLS, [("variant", lambda r: r["label"])]),
    ]
    rollout = [r for r in rows if r["section"] == "rollout"]
    if rollout:
        out += [
            "",
            "### Rollouts: generation calls and the hf_compiled speedup",
            "",
            table(rollout, ROLLOUT_COLS, [("call", lambda r: r["label"])]),
        ]
    out += [
        "",
        "### Pipeline overhead (same GRPO steps, same process)",
        "",
        table([r for r in rows if r["section"] == "overhead"], OVERHEAD_COLS, [("run", lambda r: r["label"])]),
    ]
    out += [
        "",
        "### Reward verification on CPU (../shared/data/graded/verifier_triples.jsonl)",
        "",
        table([r for r in rows if r["section"] == "reward"], REWARD_COLS, [("input", lambda r: r["label"])]),
    ]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=["cpu", "gpu"], required=True)
    p.add_argument("--out", help="output folder (default outputs/bench/<mode>)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, no child processes (the smoke test)")
    p.add_argument("--budget-s", type=float, help="rows not started after this many seconds are skipped")
    p.add_argument(
        "--sections",
        default="sft,grpo,reward,liger,zero2,compile",
        help="comma-separated subset of sft,grpo,rollout,reward (in this process, in that order) and "
        "liger,zero2,compile (SFT rows in child processes, after them)",
    )
    p.add_argument(
        "--rows",
        help="sft (main group) and rollout sections: only these row keys (comma-separated; "
        "SFT: the keys of SFT_VARIANTS; rollout: r_ours_hf, r_bare_same, r_ours_compiled, gen_dynamic, "
        "gen_compiled, gen_static_nocompile, gen_static, backend_hf, backend_hf_compiled)",
    )
    p.add_argument(
        "--max-step-s",
        type=float,
        help="stop a row whose step takes longer (default: the mode's, 45 s "
        "on GPU; a first step that compiles flex attention at 4k took 65 s)",
    )
    p.add_argument(
        "--tokens-per-step",
        type=int,
        help="SFT token slots per device per optimizer step (batch = this // seq_len; default: the mode's, "
        "16,384 on GPU); one value for every row, so rows at one length compare at the same batch",
    )
    p.add_argument("--seq-lens", help="SFT sequence lengths (comma-separated; default: the mode's, 1024,4096 on GPU)")
    p.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's own choice); on a loaded CPU "
        "1 thread avoids OpenMP spin-waits against other processes",
    )
    p.add_argument(
        "--append",
        action="store_true",
        help="keep the rows of an earlier results.json in --out "
        "that this run does not measure again (e.g. a second run with --sections zero2,compile)",
    )
    p.add_argument(
        "--pack-logs",
        action="store_true",
        help="at the end, pack logs/ into logs.tar.gz (few files to copy back from a remote machine)",
    )
    p.add_argument("--child", choices=CHILD_GROUPS, help=argparse.SUPPRESS)
    p.add_argument("--child-result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.mode == "gpu" and args.quick:
        p.error("--quick is a CPU size")
    args.out = args.out or str(ROOT / "outputs" / "bench" / (args.mode + ("-quick" if args.quick else "")))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = SIZES["quick" if args.quick else args.mode]
    if args.seq_lens:
        sizes = dataclasses.replace(sizes, seq_lens=[int(x) for x in args.seq_lens.split(",")])
    if args.max_step_s:
        sizes = dataclasses.replace(sizes, max_step_s=args.max_step_s)
    if args.tokens_per_step:
        sizes = dataclasses.replace(sizes, tokens_per_step=args.tokens_per_step)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    bench = Bench(args, sizes)
    with capture_output(bench.out / "logs" / "imports.log"):
        import torch  # noqa: F401  (imports before the clock of any row)
        import transformers  # noqa: F401
        import trl  # noqa: F401
        from trl import GRPOTrainer, SFTTrainer  # noqa: F401
    if args.mode == "gpu" and not cuda():
        print("error: --mode gpu but torch sees no CUDA device", file=sys.stderr)
        return 2
    bench.work.mkdir(parents=True, exist_ok=True)
    if args.child:
        run_child(bench)
        return 0
    bench.header = collect_header(bench)
    prev = bench.previous_header
    if prev.get("peak"):  # appending: keep the peak the earlier rows' MFU was computed with
        bench.header["peak"] = prev["peak"]
        bench.header["earlier_commands"] = prev.get("earlier_commands", []) + [prev.get("command", "?")]
        bench.header["total_s_earlier"] = prev.get("total_s", 0) + prev.get("total_s_earlier", 0)
    else:
        bench.header["peak"] = measure_peak(sizes.matmul_n)
    s = sizes.model
    bench.header["model"] = (
        f"Qwen2 random init, hidden {s['hidden']}, {s['layers']} layers, {s['heads']} heads, "
        f"{s['kv_heads']} KV heads, FFN {s['ffn']}, vocab {s['vocab']}, tied embeddings"
    )
    bench.log(f"peak {bench.header['peak']}")
    bench.save()
    sections = set(args.sections.split(","))
    try:
        if "sft" in sections:
            sft_rows(bench, "main")
        if "grpo" in sections:
            grpo_section(bench)
        if "rollout" in sections:
            rollout_section(bench)
        if "reward" in sections:
            reward_section(bench)
        for group, min_s in (("liger", 45), ("zero2", 50), ("compile", 75)):
            if group in sections:
                run_child_group(bench, group, min_s)
    finally:
        bench.header["total_s"] = time.time() - bench.start
        bench.save()
        shutil.rmtree(bench.work, ignore_errors=True)
        if args.pack_logs:
            import tarfile

            with tarfile.open(bench.out / "logs.tar.gz", "w:gz") as tar:
                tar.add(bench.out / "logs", arcname="logs")
            shutil.rmtree(bench.out / "logs", ignore_errors=True)
    text = render(bench.header, bench.all_rows())
    print(text)
    bench.log(f"wrote {bench.out / 'table.md'} and {bench.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
