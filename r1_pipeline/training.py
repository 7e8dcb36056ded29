"""Shared training plumbing: TRL/transformers arguments from params, atomic final saves (resume: checkpoints.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from r1_pipeline import checkpoints, paths
from r1_pipeline.config import PROJECT_ROOT, Config, TrainerParams
from r1_pipeline.errors import StageError, require_package
from r1_pipeline.io import atomic_path, clean_stale_siblings, replace_dir, tmp_prefix, write_jsonl
from r1_pipeline.modeling import resolve_device, save_tokenizer
from r1_pipeline.tracking import is_main_process

# ------------------------------------------------------------------------------ params section -> TRL config
# A section field goes to the TRL config class under its own name when the class has a field of that name.
# The exceptions are listed once, here: fields no TRL config receives, and fields translated by hand.
# tests/unit/test_training.py fails on a section field that is none of these, and on a translation whose
# TRL field no longer exists.

PIPELINE_ONLY = {
    "enabled": "whether the stage runs at all (tasks/<stage>.py)",
    "num_processes": "the stage relaunches itself through accelerate (r1_pipeline/stage.py, launch_command)",
    "accelerate_config": "the accelerate config file of that relaunch",
    "packed_attention": "the attention kernel of our packing in rows (r1_pipeline/sft.py)",
    "reward_funcs": "built by r1_pipeline.rewards and passed to the trainer, not to its config",
    "generation_backend": "picks the trainer class (r1_pipeline.grpo.compiled_rollout_trainer_class)",
    "log_completions_steps": "our MLflow completion tables (TRL's log_completions does not reach MLflow)",
    "num_completions_to_log": "rows of those tables",
    "max_prompts": "cuts the RL dataset (r1_pipeline.grpo.rl_dataset)",
    **dict.fromkeys(
        (
            "soft_overlong_max_length",
            "soft_overlong_cache",
            "cosine_max_len",
            "cosine_min_value_wrong",
            "cosine_max_value_wrong",
            "cosine_min_value_correct",
            "cosine_max_value_correct",
            "repetition_ngram_size",
            "repetition_max_penalty",
            "reasoning_steps_target",
            "reasoning_steps_count_lines",
            "language_consistency_span",
        ),
        "a parameter of a reward function (r1_pipeline.rewards.reward_funcs reads the section)",
    ),
    **dict.fromkeys(
        (
            "student_hidden_size",
            "student_num_hidden_layers",
            "student_num_attention_heads",
            "student_num_key_value_heads",
            "student_intermediate_size",
            "student_init",
            "student_model_name_or_path",
            "student_pretrain_steps",
        ),
        "the distilled student's shape and init (tasks/distill.py)",
    ),
    "method": "picks the distill trainer (SFT on traces or TRL's DistillationTrainer)",
    "baseline_without_traces": "trains the answers-only comparison student (tasks/distill.py)",
}

# section field -> the TRL field it sets, by hand in translated_kwargs
TRANSLATED = {
    "warmup_ratio": "warmup_steps",
    "deepspeed": "deepspeed",
    "packing": "packing",
    "epsilon_high": "epsilon_high",
    "vllm_server_host": "vllm_server_host",
    "vllm_server_port": "vllm_server_port",
}


def deepspeed_config_path(name: str) -> str | None:
    if name == "none":
        return None
    path = PROJECT_ROOT / "infra" / "deepspeed" / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"DeepSpeed config {path} not found (params: deepspeed: {name})")
    return str(path)


def translated_kwargs(section: TrainerParams) -> dict[str, Any]:
    """The TRANSLATED fields: values that mean something else in TRL, or only under a condition."""
    out: dict[str, Any] = {
        "warmup_steps": section.warmup_ratio,  # transformers 5: a float below 1 is a ratio of the total steps
        "deepspeed": deepspeed_config_path(section.deepspeed),  # a ZeRO stage name -> its config file
    }
    if hasattr(section, "packing"):
        out["packing"] = False  # ours packs in rows (r1_pipeline/sft.py); TRL's packing is padding-free, off
    if hasattr(section, "epsilon_high"):
        out["epsilon_high"] = section.epsilon if section.epsilon_high is None else section.epsilon_high
    if getattr(section, "use_vllm", False) and section.vllm_mode == "server":
        out.update(vllm_server_host=section.vllm_server_host, vllm_server_port=section.vllm_server_port)
    return out


def trl_field_names(trl_class: type) -> set[str]:
    return {f.name for f in dataclasses.fields(trl_class)}


def unmapped_fields(trl_class: type, section_class: type[TrainerParams], unused: tuple[str, ...] = ()) -> list[str]:
    """Section fields that trl_class has no field for and that are neither pipeline-only nor translated."""
    names = trl_field_names(trl_class)
    return [
        n
        for n in section_class.model_fields
        if n not in names and n not in PIPELINE_ONLY and n not in TRANSLATED and n not in unused
    ]


def trl_kwargs(
    trl_class: type,
    section: TrainerParams,
    cfg: Config,
    stage: str,
    report: bool = True,
    unused: tuple[str, ...] = (),
    **overrides,
) -> dict[str, Any]:
    """Keyword arguments for a TRL config class (trl.SFTConfig, trl.GRPOConfig, ...) from a params section:
    every section field the class has, by name; the TRANSLATED ones; the run-wide settings; then `overrides`.

    `unused`: section fields this class does not take on purpose (named at the call). Only one trainer per
    stage reports to MLflow (`report`): a second trainer in the same run would log the same
    TrainingArguments keys with other values, which MLflow rejects.
    """
    unmapped = unmapped_fields(trl_class, type(section), unused)
    if unmapped:
        raise StageError(
            f"{stage}: {', '.join(unmapped)}: no field of that name in {trl_class.__name__}; map "
            "them in r1_pipeline/training.py (PIPELINE_ONLY or TRANSLATED)"
        )
    if section.use_liger_kernel:
        require_package(
            "liger_kernel", f"{stage}.use_liger_kernel", "pip install 'r1-pipeline[liger]', on a CUDA machine"
        )
    # by name: after the check above, every field that is neither listed nor unused is a TRL field
    kwargs = {
        n: getattr(section, n)
        for n in type(section).model_fields
        if n not in PIPELINE_ONLY and n not in TRANSLATED and n not in unused
    }
    kwargs.update(translated_kwargs(section))
    kwargs.update(
        output_dir=str(paths.checkpoint_dir(stage)),
        seed=cfg.project.seed,
        bf16=cfg.project.precision == "bf16",
        use_cpu=resolve_device(cfg.project.device) == "cpu",
        save_strategy="steps",
        report_to=["mlflow"] if report and is_main_process() else [],
        run_name=stage,
        logging_first_step=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    kwargs.update(overrides)
    return kwargs


def trl_args(
    trl_class: type,
    section: TrainerParams,
    cfg: Config,
    stage: str,
    report: bool = True,
    unused: tuple[str, ...] = (),
    **overrides,
):
    """The TRL config instance of trl_kwargs: the one line from a params section to the trainer's `args`."""
    return trl_class(**trl_kwargs(trl_class, section, cfg, stage, report, unused, **overrides))


def save_trainer_final(trainer, tokenizer, stage: str, extra: dict | None = None) -> Path:
    """Save the trainer's final model and the tokenizer to outputs/models/<stage> in one atomic rename
    (ZeRO-3 shards gathered through the trainer's own save_model), then remove the stage's checkpoints: the run
    is finished, a rerun trains from step 0."""
    out = paths.model_dir(stage)
    tmp = out.with_name(tmp_prefix(out) + "trainer")  # one name on every rank: save_model is collective
    if is_main_process():
        clean_stale_siblings(out)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(tmp))  # collective under DeepSpeed: every rank calls it
    if is_main_process():
        save_tokenizer(tokenizer, tmp)
        if extra:
            (tmp / "r1_model_info.json").write_text(json.dumps(extra, indent=2, sort_keys=True))
        for f in ("training_args.bin",):
            (tmp / f).unlink(missing_ok=True)
        replace_dir(tmp, out)  # the old complete model or the new complete one, never a mix
    checkpoints.finish(stage, trainer)
    return out


def write_log_history(trainer, stage: str) -> None:
    """The trainer's step log (restored on resume) as JSONL for the report's curves."""
    if is_main_process():
        write_jsonl(paths.train_log(stage), trainer.state.log_history)


SKIP_MARKER = "SKIPPED"


def mark_skipped(stage: str, reason: str) -> None:
    """A disabled stage still writes its declared out (DVC needs it): a folder that says why it is empty."""
    if not is_main_process():
        return
    with atomic_path(paths.model_dir(stage), is_dir=True) as tmp:
        (tmp / SKIP_MARKER).write_text(reason + "\n")
    write_jsonl(paths.train_log(stage), [])  # the declared step log exists, empty
    print(f"{stage}: skipped ({reason})")


def is_skipped(model_path: Path) -> bool:
    return (Path(model_path) / SKIP_MARKER).exists()
