"""Shared training plumbing: TRL/transformers arguments from params, atomic final saves (resume: checkpoints.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from r1_pipeline import checkpoints, paths
from r1_pipeline.config import PROJECT_ROOT, Config, TrainerConfig
from r1_pipeline.io import atomic_path, clean_stale_siblings, replace_dir, tmp_prefix, write_jsonl
from r1_pipeline.modeling import resolve_device, save_tokenizer
from r1_pipeline.stage import require_package
from r1_pipeline.tracking import is_main_process

TRAINER_FIELDS = (
    "learning_rate", "lr_scheduler_type", "weight_decay", "max_grad_norm", "num_train_epochs",
    "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "gradient_checkpointing",
    "use_liger_kernel",
    "logging_steps", "save_steps", "save_total_limit",
)


def deepspeed_config_path(name: str) -> str | None:
    if name == "none":
        return None
    path = PROJECT_ROOT / "infra" / "deepspeed" / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"DeepSpeed config {path} not found (params: deepspeed: {name})")
    return str(path)


def trainer_kwargs(tc: TrainerConfig, cfg: Config, stage: str, report: bool = True) -> dict[str, Any]:
    """Keyword arguments for a TRL config class (SFTConfig, GRPOConfig, ...) from a params section.

    Only one trainer per stage reports to MLflow (`report`): a second trainer in the same run would log
    the same TrainingArguments keys with other values, which MLflow rejects.
    """
    device = resolve_device(cfg.project.device)
    if tc.use_liger_kernel:
        require_package("liger_kernel", f"{stage}.use_liger_kernel", "pip install 'r1-pipeline[liger]', on a CUDA machine")
    kwargs = {name: getattr(tc, name) for name in TRAINER_FIELDS}
    kwargs.update(
        warmup_steps=tc.warmup_ratio,  # transformers 5: a float below 1 is a ratio of the total steps
        output_dir=str(paths.checkpoint_dir(stage)),
        seed=cfg.project.seed,
        bf16=cfg.project.precision == "bf16",
        use_cpu=device == "cpu",
        save_strategy="steps",
        report_to=["mlflow"] if report and is_main_process() else [],
        run_name=stage,
        logging_first_step=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        deepspeed=deepspeed_config_path(tc.deepspeed),
    )
    return kwargs


def save_final(model, tokenizer, stage: str, extra: dict | None = None) -> Path:
    """Save the final model and tokenizer to outputs/models/<stage> in one atomic rename."""
    out = paths.model_dir(stage)
    if not is_main_process():
        return out
    with atomic_path(out, is_dir=True) as tmp:
        model.save_pretrained(tmp)
        save_tokenizer(tokenizer, tmp) if hasattr(tokenizer, "save_pretrained") else None
        if extra:
            (tmp / "r1_model_info.json").write_text(json.dumps(extra, indent=2, sort_keys=True))
    checkpoints.finish(stage)
    return out


def save_trainer_final(trainer, tokenizer, stage: str, extra: dict | None = None) -> Path:
    """Like save_final for a trainer (gathers ZeRO-3 shards through the trainer's own save_model), then
    removes the stage's checkpoints: the run is finished, a rerun trains from step 0."""
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
