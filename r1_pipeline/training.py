"""Shared training plumbing: TRL/transformers arguments from params, resumable checkpoints, atomic saves."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from r1_pipeline import paths
from r1_pipeline.config import PROJECT_ROOT, Config, TrainerConfig
from r1_pipeline.io import atomic_path, write_jsonl
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


def fingerprint(*parts: Any) -> str:
    """A hash of everything a run depends on (its config section and its input files)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, (str, Path)) and Path(part).exists():
            p = Path(part)
            files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
            for f in files:
                h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
                h.update(f.read_bytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()


def resume_checkpoint(stage: str, fp: str) -> str | None:
    """Last checkpoint of an interrupted run with the same fingerprint, else None (stale ones are wiped).

    Checkpoints live in checkpoints/<stage>, outside DVC's outs: `dvc repro` deletes outs before a stage
    runs, and a killed run must find its checkpoints again.
    """
    from transformers.trainer_utils import get_last_checkpoint

    ckpt_dir = paths.checkpoint_dir(stage)
    marker = ckpt_dir / "fingerprint.txt"
    if ckpt_dir.exists() and (not marker.exists() or marker.read_text().strip() != fp):
        if is_main_process():
            shutil.rmtree(ckpt_dir)
    if is_main_process():
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(fp)
    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.exists() else None
    if last:
        print(f"{stage}: resuming from {last}")
    return last


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
    return out


def save_trainer_final(trainer, tokenizer, stage: str, extra: dict | None = None) -> Path:
    """Like save_final for a trainer (gathers ZeRO-3 shards through the trainer's own save_model)."""
    out = paths.model_dir(stage)
    tmp = out.with_name(f".{out.name}.trainer-save")
    trainer.save_model(str(tmp))  # collective under DeepSpeed: every rank calls it
    if is_main_process():
        save_tokenizer(tokenizer, tmp)
        if extra:
            (tmp / "r1_model_info.json").write_text(json.dumps(extra, indent=2, sort_keys=True))
        for f in ("training_args.bin",):
            (tmp / f).unlink(missing_ok=True)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
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
