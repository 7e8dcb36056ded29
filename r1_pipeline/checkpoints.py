"""Resumable training that never resumes the wrong thing: resume keys, complete checkpoints, cleanup when done.

Trainer checkpoints live in checkpoints/<name>, outside DVC's outs (`dvc repro` deletes outs before a stage
runs, and a killed run must find its checkpoints again). Three rules keep them honest:

1. **Resume continues an unfinished run of the same thing.** The folder carries the run's resume key
   (`resume_key`): the stage's params section, the `project` and `chat` sections, the inputs' bytes, the hash of
   the project code the stage imports (`codedeps.code_hash`) and the versions of the training libraries. A
   folder with another key is wiped, so a code fix, a precision switch or a TRL upgrade trains from step 0.
2. **Only complete checkpoints are resumed.** transformers writes `checkpoint-N/` file by file, so a kill during
   a save leaves a partial folder that `get_last_checkpoint` would pick on every retry. `CompleteMarker` writes
   `r1_complete.json` into the folder in `on_save`, which transformers calls after the whole checkpoint (weights,
   optimizer, scheduler, RNG state, trainer state) is on disk, behind a barrier across ranks. A folder without
   it is moved aside to `checkpoints/<name>/incomplete/` with a warning and never resumed.
3. **A finished stage leaves no checkpoints.** transformers always saves at `max_steps`; kept, that checkpoint
   would make a forced rerun (`dvc repro -f`) "resume" at the end, train zero steps and publish the old weights.
   `finish` removes the folder once the final model is in place, so every rerun trains from step 0.

In a multi-process launch rank 0 does the cleanup, and every rank waits for it (a barrier) before it looks for
the last checkpoint.
"""

from __future__ import annotations

import json
import shutil
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from r1_pipeline import paths
from r1_pipeline.codedeps import code_hash
from r1_pipeline.io import write_json, write_text

COMPLETE_MARKER = "r1_complete.json"
KEY_FILE = "resume_key.txt"
LIBRARIES = ("torch", "transformers", "trl", "accelerate", "deepspeed", "peft", "datasets", "tokenizers")


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def fingerprint(*parts: Any) -> str:
    """A hash of values (JSON) and files or folders (their relative names and bytes)."""
    import hashlib

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


def resume_key(cfg, stage: str, section: Any, *inputs: Any) -> str:
    """Everything that changes what a stage's training produces (see the module docstring, rule 1).

    `stage` names the stage module whose code counts (`distill` for both students of the distill stage);
    `section` is its params section (a pydantic model or plain JSON); `inputs` are files, folders or values.
    """
    dump = section.model_dump(mode="json") if hasattr(section, "model_dump") else section
    return fingerprint(
        {
            "section": dump,
            "project": cfg.project.model_dump(mode="json"),
            "chat": cfg.chat.model_dump(mode="json"),
            "code": code_hash(stage),
            "libraries": library_versions(),
        },
        *inputs,
    )


def _checkpoints(folder: Path) -> list[Path]:
    found = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def is_complete(checkpoint: Path, key: str) -> bool:
    marker = checkpoint / COMPLETE_MARKER
    if not marker.is_file() or not (checkpoint / "trainer_state.json").is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("resume_key") == key
    except (OSError, ValueError):
        return False


def prepare(folder: Path, key: str) -> Path | None:
    """Rank 0's part: wipe a folder of another run, move incomplete checkpoints aside; the last complete one."""
    if folder.exists() and (not (folder / KEY_FILE).is_file() or (folder / KEY_FILE).read_text().strip() != key):
        print(f"{folder}: checkpoints of another configuration, code or library version; starting from step 0")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / KEY_FILE, key)
    last = None
    for ckpt in _checkpoints(folder):
        if is_complete(ckpt, key):
            last = ckpt
            continue
        aside = folder / "incomplete" / f"{ckpt.name}.{time.strftime('%Y%m%dT%H%M%S')}"
        aside.parent.mkdir(exist_ok=True)
        ckpt.rename(aside)
        print(f"warning: {ckpt} is incomplete (killed during a save?); moved aside to {aside}", flush=True)
    return last


class CompleteMarker(TrainerCallback):
    """Marks `checkpoint-N` complete once transformers has written all of it (see the module docstring)."""

    def __init__(self, trainer, key: str):
        self.trainer, self.key = trainer, key

    def on_save(self, args, state, control, **kwargs):
        self.trainer.accelerator.wait_for_everyone()  # every rank's shards are written
        if state.is_world_process_zero:
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                write_json(ckpt / COMPLETE_MARKER, {"resume_key": self.key, "step": state.global_step})


def train(trainer, name: str, key: str) -> None:
    """`trainer.train()`, resumed only from a complete checkpoint of an unfinished run with the same key.

    `name` is the folder under checkpoints/ (the trainer's output_dir must be that folder).
    """
    folder = paths.checkpoint_dir(name)
    if Path(trainer.args.output_dir).resolve() != folder.resolve():
        raise ValueError(f"trainer output_dir {trainer.args.output_dir} is not {folder}")
    trainer.add_callback(CompleteMarker(trainer, key))
    if trainer.is_world_process_zero():
        prepare(folder, key)
    trainer.accelerator.wait_for_everyone()  # rank 0's cleanup is done before anyone looks
    complete = [c for c in _checkpoints(folder) if is_complete(c, key)]
    last = str(complete[-1]) if complete else None
    if last:
        print(f"{name}: resuming from {last}", flush=True)
    trainer.train(resume_from_checkpoint=last)


def finish(name: str, trainer=None) -> None:
    """Remove checkpoints/<name> once the stage's final output is in place: a rerun trains from step 0."""
    if trainer is not None:
        trainer.accelerator.wait_for_everyone()
    from r1_pipeline.tracking import is_main_process

    if is_main_process():
        shutil.rmtree(paths.checkpoint_dir(name), ignore_errors=True)
