"""The typed schema of `params.yaml`: every hyperparameter of every stage, with a help text each.

`params.yaml` is the effective config that DVC tracks. Profiles (`profiles/<name>.yaml`) are overlays on the
schema defaults (which are the `tiny` CPU profile); `r1 config use <profile>` writes the merged, validated
result to `params.yaml`. The `r1_zero` section is an overlay of `grpo` in turn: it holds `enabled` and only
the values that differ, the rest is grpo's (Config._r1_zero_over_grpo). Any value can be overridden with `--set key.path=value` (YAML-parsed) or
`dvc exp run -S key.path=value`.

Validation errors are reported as one line per problem naming the key path, e.g.
`params.yaml: grpo.learning_rate: must be > 0 (got -0.001)`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from r1_pipeline.paths import PROJECT_ROOT

PROFILES_DIR = PROJECT_ROOT / "profiles"


class ConfigError(ValueError):
    """A params file that does not validate. `str()` is a one-line-per-problem message naming the key path."""


class Section(BaseModel):
    # Unknown keys are errors: a misspelled hyperparameter must never be silently ignored.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------------------------------- project


class ProjectParams(Section):
    seed: int = Field(0, ge=0, description="Global seed; stages derive their own seeds from it.")
    mlflow_experiment: str = Field(
        "r1-pipeline", min_length=1, description="MLflow experiment that every stage run is logged to."
    )
    mlflow_tracking_uri: str = Field(
        "sqlite:///mlflow.db",
        description="Default MLflow tracking URI when MLFLOW_TRACKING_URI is unset: a SQLite file in the "
        "project, so no server is needed. The services helper points MLFLOW_TRACKING_URI at a server instead.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where training and generation run; `auto` takes CUDA when available."
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="Training/generation dtype. bf16 needs a GPU with bf16 support."
    )


# ------------------------------------------------------------------------------------------------------ data


class SyntheticTaskParams(Section):
    """Chains of additions/subtractions whose running total stays in [0, total_max]."""

    chain_lengths: list[int] = Field(
        [4],
        min_length=1,
        description="Numbers of operations per problem; one difficulty level each. One length "
        "keeps the scratchpad's columns at one offset, which the tiny base learns on every seed.",
    )
    first_operand_max: int = Field(9, ge=1, description="First operand is drawn from 1..first_operand_max.")
    operand_max: int = Field(5, ge=1, description="Later operands are drawn from 1..operand_max.")
    total_max: int = Field(
        9,
        ge=1,
        description="Running totals are kept in 0..total_max (answers too: chance is 1/(total_max+1)). "
        "With 19 the tiny base needs 3x the steps to learn the additions table.",
    )
    heldout_fraction: float = Field(
        0.2, gt=0, lt=1, description="Share of expressions (by hash) reserved for evaluation; never trained on."
    )
    corpus_documents: int = Field(
        20000, ge=1, description="Documents in the pretraining corpus of the from-scratch base model."
    )
    corpus_style_weights: dict[str, float] = Field(
        {"scratchpad": 0.5, "lazy": 0.2, "direct": 0.15, "plain": 0.15},
        description="Mix of answer styles in the pretraining corpus: step-by-step <think> scratchpad, a lazy "
        "<think> that restates and guesses, a direct <answer>, a plain number. RL can then select a habit "
        "the base already has, as in R1-Zero.",
    )
    corpus_error_rate: float = Field(
        0.1, ge=0, le=1, description="Share of corpus documents with a wrong step or answer (a noisy base)."
    )
    cold_start_scratchpad_fraction: float = Field(
        0.25,
        ge=0,
        le=1,
        description="Share of synthetic cold-start examples whose <think> is the step-by-step "
        "scratchpad; the others only restate the problem (a cold start that fixes the format, not the habit). "
        "1.0 is the curated cold start (`make bench-seeds` reports both).",
    )

    @field_validator("chain_lengths")
    @classmethod
    def _positive_lengths(cls, v: list[int]) -> list[int]:
        if any(n < 1 for n in v):
            raise ValueError("every chain length must be >= 1")
        return v

    @field_validator("corpus_style_weights")
    @classmethod
    def _known_styles(cls, v: dict[str, float]) -> dict[str, float]:
        known = {"scratchpad", "lazy", "direct", "plain"}
        bad = set(v) - known
        if bad:
            raise ValueError(f"unknown corpus styles {sorted(bad)}; expected a subset of {sorted(known)}")
        if any(w < 0 for w in v.values()) or sum(v.values()) <= 0:
            raise ValueError("style weights must be >= 0 and sum to > 0")
        return v


class SourceParams(Section):
    """One data source, normalized into {id, source, problem, answer, solution}."""

    name: str = Field(..., min_length=1, description="Source name, used in record ids and stats.")
    type: Literal["synthetic", "jsonl", "parquet", "hf"] = Field(
        ..., description="synthetic task generator, a local JSONL/Parquet file, or a Hugging Face dataset id."
    )
    path: Optional[str] = Field(None, description="Local file (jsonl/parquet), relative to the project root.")
    hf_id: Optional[str] = Field(None, description="Hugging Face dataset id (type hf).")
    hf_config: Optional[str] = Field(None, description="Hugging Face dataset config name (type hf).")
    split: str = Field(
        "train",
        description="Split to read: for hf the dataset split; for synthetic `train` or `heldout`; ignored for files.",
    )
    problem_field: str = Field("problem", description="Field holding the problem text.")
    answer_field: Optional[str] = Field(
        "answer", description="Field holding the gold answer (or the solution it is extracted from)."
    )
    answer_format: Literal["plain", "gsm8k", "boxed"] = Field(
        "plain",
        description="How to read the gold answer from answer_field: as is, GSM8K's text after `####`, or the "
        "last \\boxed{} of a solution.",
    )
    solution_field: Optional[str] = Field(
        None, description="Field with a worked solution, used as the <think> text of cold-start conversations."
    )
    limit: Optional[int] = Field(None, ge=1, description="Keep at most this many records (after shuffling).")

    @model_validator(mode="after")
    def _needs_location(self) -> "SourceParams":
        if self.type in ("jsonl", "parquet") and not self.path:
            raise ValueError(f"type {self.type} needs `path`")
        if self.type == "hf" and not self.hf_id:
            raise ValueError("type hf needs `hf_id`")
        if self.type != "synthetic" and not self.answer_field:
            raise ValueError("a non-synthetic source needs `answer_field`")
        return self


class DataParams(Section):
    seed: int = Field(0, ge=0, description="Seed for shuffling, sampling and splits (deterministic outputs).")
    synthetic: SyntheticTaskParams = Field(
        default_factory=SyntheticTaskParams, description="The synthetic verifiable task."
    )
    rl_sources: list[SourceParams] = Field(
        default_factory=lambda: [SourceParams(name="arith", type="synthetic", split="train", limit=3000)],
        min_length=1,
        description="Sources of RL prompts with verifiable answers.",
    )
    cold_start_sources: list[SourceParams] = Field(
        default_factory=lambda: [SourceParams(name="arith", type="synthetic", split="train", limit=256)],
        description="Sources of cold-start SFT conversations (<think> reasoning then <answer>).",
    )
    eval_sets: list[SourceParams] = Field(
        default_factory=lambda: [SourceParams(name="arith_heldout", type="synthetic", split="heldout", limit=200)],
        min_length=1,
        description="Evaluation sets; training data is decontaminated against all of them.",
    )
    rl_val_fraction: float = Field(0.05, ge=0, lt=1, description="Share of RL prompts held out as a validation split.")
    near_duplicate_threshold: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Jaccard similarity of word 3-gram sets above which two training problems are near-duplicates.",
    )
    decontamination_ngram: int = Field(
        8, ge=1, description="Word n-gram size for decontamination against evaluation sets (open-r1 uses 8)."
    )
    from_hub: bool = Field(
        False,
        description="Read every source that names an `hf_id` from the Hugging Face hub instead of its "
        "local `path`: one switch between local copies (tests, air-gapped machines) and the hub (real runs).",
    )

    @model_validator(mode="after")
    def _unique_eval_names(self) -> "DataParams":
        names = [s.name for s in self.eval_sets]
        if len(set(names)) != len(names):
            raise ValueError(f"eval_sets names must be unique, got {names}")
        return self


# --------------------------------------------------------------------------------------------------- chat


class ChatParams(Section):
    system_prompt: Optional[str] = Field(
        None,
        description="System prompt of every conversation (R1 uses one that asks for <think>/<answer>). Null "
        "for the tiny profile, whose character-level model spends tokens on every character.",
    )


# --------------------------------------------------------------------------------------------------- training


class TrainerParams(Section):
    """Knobs shared by the TRL trainers (names as in transformers.TrainingArguments)."""

    learning_rate: float = Field(3e-4, gt=0, description="Peak learning rate.")
    lr_scheduler_type: str = Field("cosine", description="transformers scheduler name.")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of steps spent warming up.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    num_train_epochs: float = Field(2.0, gt=0, description="Epochs over the dataset (ignored when max_steps > 0).")
    max_steps: int = Field(-1, ge=-1, description="Optimizer steps; -1 uses num_train_epochs.")
    per_device_train_batch_size: int = Field(16, ge=1, description="Batch size per device.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations to save memory.")
    use_liger_kernel: bool = Field(
        False,
        description="Liger's Triton kernels (fused linear cross-entropy, RMSNorm, RoPE, SwiGLU; TRL's "
        "fused GRPO loss in GRPO stages). Needs a CUDA GPU and `pip install 'r1-pipeline[liger]'`.",
    )
    logging_steps: int = Field(5, ge=1, description="Log metrics every N steps.")
    save_steps: int = Field(50, ge=1, description="Write a resumable checkpoint every N steps.")
    save_total_limit: int = Field(2, ge=1, description="Resumable checkpoints kept.")
    deepspeed: Literal["none", "zero2", "zero3"] = Field(
        "none", description="DeepSpeed ZeRO stage, using infra/deepspeed/<stage>.json. Needs `accelerate launch`."
    )
    num_processes: int = Field(
        1, ge=1, description="Processes to launch the stage with (`accelerate launch` when > 1)."
    )
    accelerate_config: Optional[str] = Field(
        None,
        description="accelerate config file for the launch; null picks infra/accelerate/ by device and "
        "deepspeed (cpu_zero2.yaml on CPU, multi_gpu_zero2/3.yaml on GPUs).",
    )


class BaseModelParams(Section):
    source: Literal["scratch", "pretrained", "gguf"] = Field(
        "scratch",
        description="`scratch` trains a tokenizer and a small model on the synthetic corpus (tiny profile); "
        "`pretrained` resolves `model_name_or_path` (hub id at `revision`, or a local HF folder); `gguf` "
        "dequantizes the local `gguf_file` (checked against `gguf_sha256`). Every source ends as a plain HF folder.",
    )
    model_name_or_path: Optional[str] = Field(None, description="Hub id or local path of the base model.")
    revision: Optional[str] = Field(
        None,
        description="Hub revision (commit sha, tag or branch) passed to from_pretrained; pin a commit sha "
        "for a reproducible run.",
    )
    gguf_file: Optional[str] = Field(
        None,
        description="Local GGUF file for source `gguf`, relative to the project root (`r1 models fetch "
        "smollm2` puts SmolLM2-135M-Instruct at .cache/models/).",
    )
    gguf_sha256: Optional[str] = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="Expected sha256 of gguf_file: the base stage refuses other bytes.",
    )
    context_length: Optional[int] = Field(
        None,
        ge=16,
        description="Context window (max_position_embeddings) of a pretrained/GGUF base; the schema "
        "rejects sequence lengths beyond it and the base stage checks it against the model. Null for scratch, "
        "whose context is max_position_embeddings.",
    )
    architecture: Literal["qwen2", "llama"] = Field("qwen2", description="Architecture of a from-scratch model.")
    tokenizer_vocab_size: int = Field(
        320,
        ge=64,
        description="BPE vocabulary of the from-scratch tokenizer (digits stay single tokens; the "
        "256 byte tokens come first, so the merges are what is above 256).",
    )
    hidden_size: int = Field(128, ge=8, description="Hidden size of a from-scratch model.")
    num_hidden_layers: int = Field(4, ge=1, description="Transformer layers of a from-scratch model.")
    num_attention_heads: int = Field(4, ge=1, description="Attention heads of a from-scratch model.")
    num_key_value_heads: int = Field(2, ge=1, description="KV heads (GQA) of a from-scratch model.")
    intermediate_size: int = Field(384, ge=8, description="FFN size of a from-scratch model.")
    max_position_embeddings: int = Field(256, ge=16, description="Context length of a from-scratch model.")
    tie_word_embeddings: bool = Field(True, description="Share input and output embeddings.")
    pretrain_steps: int = Field(400, ge=1, description="Pretraining optimizer steps on the synthetic corpus.")
    pretrain_batch_size: int = Field(64, ge=1, description="Documents per pretraining step.")
    pretrain_learning_rate: float = Field(
        1e-3,
        gt=0,
        description="Peak pretraining learning rate (cosine). At 3e-3 the tiny base learns to copy "
        "from the prompt several hundred steps later, at a step that differs by seed.",
    )
    pretrain_warmup_steps: int = Field(30, ge=0, description="Pretraining warmup steps.")
    pretrain_save_steps: int = Field(100, ge=1, description="Write a resumable pretraining checkpoint every N steps.")

    @model_validator(mode="after")
    def _check(self) -> "BaseModelParams":
        if self.source == "pretrained" and not self.model_name_or_path:
            raise ValueError("source `pretrained` needs `model_name_or_path`")
        if self.source == "gguf" and not (self.gguf_file and self.gguf_sha256):
            raise ValueError("source `gguf` needs `gguf_file` and `gguf_sha256`")
        if self.source != "scratch" and self.context_length is None:
            raise ValueError(f"source `{self.source}` needs `context_length` (the model's max_position_embeddings)")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be divisible by num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be divisible by num_key_value_heads")
        return self


class SFTParams(TrainerParams):
    enabled: bool = Field(True, description="Run cold-start SFT; when false, GRPO starts from the base model.")
    max_length: int = Field(128, ge=8, description="Truncate conversations to this many tokens.")
    completion_only_loss: bool = Field(True, description="Loss on the assistant turn only, not the prompt.")
    packing: bool = Field(
        False,
        description="Pack several conversations into each row of max_length (best-fit-decreasing, per-document positions, no cross-document attention); faster when lengths vary.",
    )
    packed_attention: Literal["sdpa", "flex_attention"] = Field(
        "sdpa",
        description="Attention kernel for packing in rows: `sdpa` over a materialized block-diagonal mask "
        "(cost ~ rows x max_length^2), or `flex_attention` with a document BlockMask that skips the masked blocks "
        "(long rows, 4k-32k); flex's backward needs a GPU, so on CPU it falls back to sdpa with a warning.",
    )


class GRPOParams(TrainerParams):
    learning_rate: float = Field(
        3e-5,
        gt=0,
        description="Peak learning rate. On the tiny profile 1e-4 gave GRPO -14 to +23 points over "
        "its SFT start by seed, thread count and cold start, 3e-5 +11 and +25 on the two runs measured "
        "(docs/architecture.md); above 1e-4 collapsed a tiny model.",
    )
    lr_scheduler_type: str = Field("constant_with_warmup", description="transformers scheduler name.")
    max_steps: int = Field(150, ge=1, description="GRPO optimizer steps.")
    per_device_train_batch_size: int = Field(
        64, ge=1, description="Completions per device per step (= prompts x num_generations)."
    )
    num_generations: int = Field(8, ge=2, description="Completions per prompt (the GRPO group size).")
    num_iterations: int = Field(1, ge=1, description="Optimization passes over each batch of rollouts (mu).")
    steps_per_generation: Optional[int] = Field(
        None,
        ge=1,
        description="Optimizer steps served by one generation round (TRL's steps_per_generation; "
        "null = gradient_accumulation_steps). 2 generates two steps' rollouts in one batch: on an H200 1.37x "
        "faster steps (docs/benchmarks.md), at the price of rollouts one update old.",
    )
    beta: float = Field(0.04, ge=0, description="KL coefficient against the reference model (0 drops it).")
    epsilon: float = Field(0.2, gt=0, description="Lower clipping range of the policy ratio.")
    epsilon_high: Optional[float] = Field(
        0.28, gt=0, description="Upper clipping range (DAPO clip-higher); null uses epsilon."
    )
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = Field("dapo", description="GRPO loss normalization.")
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="Divide advantages by the reward std of the group, the batch, or not at all."
    )
    temperature: float = Field(0.7, gt=0, description="Sampling temperature of rollouts.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling of rollouts.")
    max_completion_length: int = Field(64, ge=1, description="Maximum tokens per rollout completion.")
    mask_truncated_completions: bool = Field(
        False, description="Exclude completions that hit max_completion_length from the loss."
    )
    reward_funcs: list[str] = Field(
        ["accuracy", "format"], min_length=1, description="Reward functions by registry name."
    )
    reward_weights: list[float] = Field([1.0, 0.5], description="One weight per reward function.")
    use_vllm: bool = Field(False, description="Generate rollouts with vLLM (needs the `vllm` extra and a GPU).")
    generation_backend: Literal["hf", "hf_compiled"] = Field(
        "hf",
        description="Rollout engine when use_vllm is off: `hf` is TRL's transformers generate; `hf_compiled` "
        "decodes with a static KV cache and a torch.compile'd step (CUDA graphs on GPU, bucketed prompt lengths: "
        "r1_pipeline.generation.CompiledDecoder), falling back to `hf` with a warning where it cannot run.",
    )
    vllm_mode: Literal["colocate", "server"] = Field("colocate", description="vLLM next to training or a server.")
    vllm_server_host: str = Field(
        "127.0.0.1", description="Host of the `trl vllm-serve` server (vllm_mode server; a node of its own on Slurm)."
    )
    vllm_server_port: int = Field(8000, ge=1, le=65535, description="Port of the `trl vllm-serve` server.")
    log_completions_steps: int = Field(
        25, ge=1, description="Log a table of sample completions to MLflow every N steps."
    )
    num_completions_to_log: int = Field(8, ge=1, description="Rows in each logged completions table.")
    max_prompts: Optional[int] = Field(None, ge=1, description="Use at most this many RL prompts.")
    # Parameters of the parametrized rewards (used when the reward is in reward_funcs; lengths in tokens).
    soft_overlong_max_length: Optional[int] = Field(
        None,
        ge=1,
        description="soft_overlong: the length (tokens) at which the punishment reaches -1 (DAPO's "
        "L_max); null = max_completion_length. Beyond max_completion_length is rejected: no completion gets there.",
    )
    soft_overlong_cache: Optional[int] = Field(
        None,
        ge=0,
        description="soft_overlong: the punishment ramp (tokens) before the window's end (DAPO's "
        "L_cache); null = a quarter of the window (open-r1's 1,024 / 256).",
    )
    cosine_max_len: Optional[int] = Field(
        None,
        ge=1,
        description="cosine: the length (tokens) at which the cosine schedule ends; null = "
        "max_completion_length. Beyond max_completion_length is rejected: the schedule would never finish.",
    )
    cosine_min_value_wrong: float = Field(-1.0, description="cosine: reward of a wrong answer at length 0.")
    cosine_max_value_wrong: float = Field(
        -0.5, description="cosine: reward of a wrong answer at cosine_max_len (a long wrong try is punished less)."
    )
    cosine_min_value_correct: float = Field(0.5, description="cosine: reward of a right answer at cosine_max_len.")
    cosine_max_value_correct: float = Field(1.0, description="cosine: reward of a right answer at length 0.")
    repetition_ngram_size: int = Field(3, ge=1, description="repetition_penalty: word n-gram size.")
    repetition_max_penalty: float = Field(
        -1.0, le=0, description="repetition_penalty: the penalty when every n-gram is a repeat (<= 0)."
    )
    reasoning_steps_target: int = Field(
        3, ge=1, description="reasoning_steps: steps for the full reward of 1.0 (open-r1 uses 3)."
    )
    reasoning_steps_count_lines: bool = Field(
        True,
        description="reasoning_steps: also count each non-empty <think> line as a step (the tiny model "
        "writes one equation a line); false for long chains of thought, which would all saturate.",
    )
    language_consistency_span: Literal["think", "completion"] = Field(
        "think",
        description="language_consistency: measure the share of English words in the <think> block "
        "(the R1 paper's chain of thought) or in the whole completion.",
    )

    @model_validator(mode="after")
    def _check(self) -> "GRPOParams":
        from r1_pipeline.rewards import REWARD_REGISTRY

        window = self.soft_overlong_max_length or self.max_completion_length
        if window > self.max_completion_length:
            raise ValueError(
                f"soft_overlong_max_length ({window}) is beyond max_completion_length "
                f"({self.max_completion_length}): no completion can reach it"
            )
        if self.soft_overlong_cache is not None and self.soft_overlong_cache > window:
            raise ValueError(f"soft_overlong_cache ({self.soft_overlong_cache}) is longer than its window ({window})")
        if self.cosine_max_len is not None and self.cosine_max_len > self.max_completion_length:
            raise ValueError(
                f"cosine_max_len ({self.cosine_max_len}) is beyond max_completion_length "
                f"({self.max_completion_length}): the schedule would never finish"
            )
        if self.cosine_min_value_wrong > self.cosine_max_value_wrong:
            raise ValueError(
                "cosine_min_value_wrong must be <= cosine_max_value_wrong (short wrong answers punished most)"
            )
        if self.cosine_min_value_correct > self.cosine_max_value_correct:
            raise ValueError("cosine_min_value_correct must be <= cosine_max_value_correct")
        if self.cosine_max_value_wrong >= self.cosine_min_value_correct:
            raise ValueError(
                "cosine_max_value_wrong must be below cosine_min_value_correct (a wrong answer never "
                "earns more than a right one)"
            )

        unknown = [n for n in self.reward_funcs if n not in REWARD_REGISTRY]
        if unknown:
            raise ValueError(f"unknown reward_funcs {unknown}; known: {sorted(REWARD_REGISTRY)}")
        if len(self.reward_weights) != len(self.reward_funcs):
            raise ValueError(
                f"reward_weights has {len(self.reward_weights)} entries for {len(self.reward_funcs)} reward_funcs"
            )
        batch = self.per_device_train_batch_size * self.gradient_accumulation_steps * self.num_processes
        if batch % self.num_generations:
            raise ValueError(
                f"per_device_train_batch_size x gradient_accumulation_steps x num_processes ({batch}) must be "
                f"divisible by num_generations ({self.num_generations})"
            )
        return self


class R1ZeroParams(GRPOParams):
    """The effective r1_zero section: grpo's values updated by the r1_zero overlay (see Config)."""

    enabled: bool = Field(True, description="Run the R1-Zero experiment: GRPO straight on the base model.")


class RejectionParams(Section):
    backend: Literal["hf", "hf_compiled", "vllm"] = Field(
        "hf", description="Generation backend (`hf_compiled`: static KV cache + compiled decode step, see grpo)."
    )
    source_model: Literal["grpo", "r1_zero", "sft"] = Field("grpo", description="Model that generates traces.")
    num_prompts: int = Field(512, ge=1, description="RL prompts to sample from.")
    num_samples: int = Field(8, ge=1, description="Completions generated per prompt (N).")
    max_kept_per_prompt: int = Field(2, ge=1, description="Correct traces kept per prompt (M).")
    temperature: float = Field(0.7, gt=0, description="Sampling temperature.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling.")
    max_new_tokens: int = Field(64, ge=1, description="Maximum tokens per completion.")
    batch_size: int = Field(256, ge=1, description="Sequences generated per forward batch.")
    min_think_chars: int = Field(1, ge=0, description="Readability: minimum characters inside <think>.")
    max_completion_chars: int = Field(4000, ge=1, description="Readability: maximum completion length.")
    max_repeated_ngram_fraction: float = Field(
        0.5, ge=0, le=1, description="Readability: reject when this share of word 4-grams are repeats."
    )
    max_non_ascii_fraction: float = Field(
        0.2, ge=0, le=1, description="Readability (mixed language): reject above this share of non-ASCII letters."
    )


class DistillParams(TrainerParams):
    enabled: bool = Field(True, description="Distill the rejection-sampled traces into a smaller student.")
    student_hidden_size: int = Field(96, ge=8, description="Hidden size of the from-scratch student.")
    student_num_hidden_layers: int = Field(3, ge=1, description="Layers of the student.")
    student_num_attention_heads: int = Field(4, ge=1, description="Attention heads of the student.")
    student_num_key_value_heads: int = Field(2, ge=1, description="KV heads of the student.")
    student_intermediate_size: int = Field(288, ge=8, description="FFN size of the student.")
    student_init: Literal["pretrain", "random", "pretrained"] = Field(
        "pretrain",
        description="`pretrain` pretrains a from-scratch student on the base corpus first (same recipe, fewer "
        "parameters); `random` starts from random weights; `pretrained` loads student_model_name_or_path.",
    )
    student_model_name_or_path: Optional[str] = Field(
        None, description="Hub id or local path of a pretrained student (student_init `pretrained`)."
    )
    student_pretrain_steps: int = Field(
        300, ge=1, description="Pretraining steps of the student on the base corpus (student_init `pretrain`)."
    )
    max_length: int = Field(128, ge=8, description="Truncate conversations to this many tokens.")
    method: Literal["sft", "logit"] = Field(
        "sft", description="`sft` on traces (R1-Distill); `logit` adds TRL's logit-level distillation."
    )
    baseline_without_traces: bool = Field(
        True,
        description="Also train a same-size student on answers only (no <think> traces) as the comparison.",
    )

    @model_validator(mode="after")
    def _check(self) -> "DistillParams":
        if self.student_init == "pretrained" and not self.student_model_name_or_path:
            raise ValueError("student_init `pretrained` needs `student_model_name_or_path`")
        return self


class EvaluateParams(Section):
    models: list[Literal["base", "sft", "grpo", "r1_zero", "distill", "distill_no_traces"]] = Field(
        ["base", "sft", "grpo", "r1_zero", "distill", "distill_no_traces"],
        description="Models to evaluate (those the run did not produce are skipped).",
    )
    backend: Literal["hf", "hf_compiled", "vllm"] = Field(
        "hf", description="Generation backend (`hf_compiled`: static KV cache + compiled decode step, see grpo)."
    )
    num_samples: int = Field(4, ge=1, description="k samples per problem (pass@1 = mean accuracy over k).")
    temperature: float = Field(0.6, gt=0, description="Sampling temperature (R1: 0.6).")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling (R1: 0.95).")
    max_new_tokens: int = Field(64, ge=1, description="Maximum tokens per sample.")
    max_problems: Optional[int] = Field(None, ge=1, description="Evaluate at most this many problems per set.")
    batch_size: int = Field(256, ge=1, description="Sequences generated per forward batch.")


class ReportParams(Section):
    title: str = Field("r1-pipeline report", description="Report title.")


class Config(Section):
    project: ProjectParams = Field(default_factory=ProjectParams, description="Run-wide settings.")
    data: DataParams = Field(default_factory=DataParams, description="The data stage.")
    chat: ChatParams = Field(default_factory=ChatParams, description="Conversation format.")
    base: BaseModelParams = Field(default_factory=BaseModelParams, description="The base model stage.")
    sft: SFTParams = Field(default_factory=SFTParams, description="Cold-start SFT stage.")
    grpo: GRPOParams = Field(default_factory=GRPOParams, description="Reasoning RL stage.")
    r1_zero: R1ZeroParams = Field(
        default_factory=R1ZeroParams,
        description="R1-Zero stage: an overlay of grpo, `enabled` and only the "
        "values that differ (every other key is grpo's).",
    )
    rejection: RejectionParams = Field(default_factory=RejectionParams, description="Rejection sampling stage.")
    distill: DistillParams = Field(default_factory=DistillParams, description="Distillation stage.")
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams, description="Evaluation stage.")
    report: ReportParams = Field(default_factory=ReportParams, description="Report stage.")

    @model_validator(mode="before")
    @classmethod
    def _r1_zero_over_grpo(cls, data: Any) -> Any:
        """The effective r1_zero is grpo's values updated by the r1_zero overlay, validated as R1ZeroParams
        (so a bad overlay key is reported as r1_zero.<key>). When grpo itself is invalid its errors are
        reported once, under grpo, and the overlay is validated on the schema defaults."""
        if not isinstance(data, dict) or not isinstance(data.get("r1_zero", {}), dict):
            return data  # a constructed section, or not a mapping (the schema names r1_zero)
        grpo = data.get("grpo") or {}
        try:
            base = grpo if isinstance(grpo, GRPOParams) else GRPOParams.model_validate(grpo)
        except ValidationError:
            base = GRPOParams()
        return {**data, "r1_zero": {**base.model_dump(), **data.get("r1_zero", {})}}

    @field_serializer("r1_zero")
    def _r1_zero_differences(self, r1_zero: R1ZeroParams, info) -> dict:
        """Written back (params.yaml, `r1 config show`) as the overlay: `enabled` and what differs from grpo."""
        full, grpo = r1_zero.model_dump(mode=info.mode), self.grpo.model_dump(mode=info.mode)
        return {"enabled": full["enabled"], **{k: v for k, v in full.items() if k != "enabled" and v != grpo[k]}}

    @model_validator(mode="after")
    def _lengths_fit_the_context(self) -> "Config":
        """A sequence longer than the model's context silently degrades (or crashes mid-run on a GPU)."""
        ctx = self.base.context_length or self.base.max_position_embeddings
        key = "base.context_length" if self.base.context_length else "base.max_position_embeddings"
        lengths = {
            "sft.max_length": self.sft.max_length,
            "grpo.max_completion_length": self.grpo.max_completion_length,
            "r1_zero.max_completion_length": self.r1_zero.max_completion_length,
            "rejection.max_new_tokens": self.rejection.max_new_tokens,
            "distill.max_length": self.distill.max_length,
            "evaluate.max_new_tokens": self.evaluate.max_new_tokens,
        }
        too_long = [f"{k} ({v})" for k, v in lengths.items() if v > ctx]
        if too_long:
            raise ValueError(f"{', '.join(too_long)} exceed the model's context: {key} is {ctx}")
        return self


# ------------------------------------------------------------------------------------------------ loading


def _format_errors(err: ValidationError, origin: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in e["loc"]).replace(".[", "[")
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (misspelled?)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        got = e.get("input")
        shown = "" if e["type"] in ("extra_forbidden", "missing") or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{origin}: {loc or '<root>'}: {msg}{shown}")
    return "\n".join(lines)


def deep_merge(base: dict, overlay: dict) -> dict:
    """Recursively merge `overlay` into a copy of `base` (lists and scalars are replaced, dicts merged)."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (['a','b','c'], yaml-parsed value)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected KEY.PATH=VALUE")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {item!r}: empty key segment")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from None
    return parts, value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    out = copy.deepcopy(raw)
    for item in overrides:
        parts, value = parse_override(item)
        node = out
        for p in parts[:-1]:
            if not isinstance(node.setdefault(p, {}), dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
            node = node[p]
        node[parts[-1]] = value
    return out


def load_yaml(path: Path) -> dict:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return data


def validate(raw: dict, origin: str = "params", root: Path | None = None) -> Config:
    """Validate a raw dict; also checks that every local data file exists (relative to `root`)."""
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, origin)) from None
    root = Path(root) if root else Path.cwd()
    missing = []
    for section in ("rl_sources", "cold_start_sources", "eval_sets"):
        for i, src in enumerate(getattr(cfg.data, section)):
            if src.path and not (cfg.data.from_hub and src.hf_id) and not (root / src.path).exists():
                missing.append(f"{origin}: data.{section}[{i}].path: file not found: {src.path}")
    if cfg.base.source == "pretrained" and cfg.base.model_name_or_path:
        p = cfg.base.model_name_or_path
        if (p.startswith(("/", "./", "../")) or p.startswith("~")) and not (root / p).expanduser().exists():
            missing.append(f"{origin}: base.model_name_or_path: local path not found: {p}")
    if cfg.base.source == "gguf" and cfg.base.gguf_file and not (root / cfg.base.gguf_file).exists():
        missing.append(
            f"{origin}: base.gguf_file: file not found: {cfg.base.gguf_file} (SmolLM2: `r1 models fetch smollm2`)"
        )
    if missing:
        raise ConfigError("\n".join(missing))
    return cfg


def profile_path(name: str) -> Path:
    path = PROFILES_DIR / f"{name}.yaml"
    if name != "tiny" and not path.exists():
        known = sorted(["tiny"] + [p.stem for p in PROFILES_DIR.glob("*.yaml")])
        raise ConfigError(f"unknown profile {name!r}; known profiles: {', '.join(sorted(set(known)))}")
    return path


def profile_dict(name: str) -> dict:
    """Schema defaults (the tiny profile) with the profile overlay merged on top."""
    raw = Config().model_dump(mode="json")
    if name == "tiny":
        return raw
    return deep_merge(raw, load_yaml(profile_path(name)))


def load_config(
    params_path: str | Path = "params.yaml",
    overrides: list[str] | None = None,
    profile: str | None = None,
) -> Config:
    """Load and validate params (or a profile), then apply `key=value` overrides."""
    if profile:
        raw, origin = profile_dict(profile), f"profile {profile}"
    else:
        raw, origin = load_yaml(Path(params_path)), str(params_path)
    raw = apply_overrides(raw, overrides or [])
    root = Path(params_path).resolve().parent if not profile else Path.cwd()
    return validate(raw, origin, root)


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, default_flow_style=False, width=110)


def flat_params(cfg_section: BaseModel, prefix: str = "") -> dict[str, Any]:
    """Flatten a section to dotted keys (for MLflow params)."""
    out: dict[str, Any] = {}
    for key, value in cfg_section.model_dump(mode="json").items():
        _flatten(f"{prefix}{key}", value, out)
    return out


def _flatten(key: str, value: Any, out: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{key}.{k}", v, out)
    else:
        out[key] = value


def describe(model: type[BaseModel] = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key path, type/default, help) for every field: the documentation of params.yaml."""
    rows = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        sub = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if sub is not None:
            rows.append((prefix + name, "section", field.description or ""))
            rows.extend(describe(sub, prefix + name + "."))
        else:
            default = field.default if field.default_factory is None else "(see params.yaml)"
            rows.append((prefix + name, repr(default), field.description or ""))
    return rows
