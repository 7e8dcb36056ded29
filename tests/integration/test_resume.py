"""Resume means: continue an unfinished run of the same thing, and end exactly where an uninterrupted run ends.

Every stage runs as DVC runs it (`python -m tasks.<stage>` in a subprocess) on the micro profile with real
trainers. Kills are real SIGKILLs at a chosen point of a checkpoint save (tests/integration/faults).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from r1_pipeline.config import apply_overrides, profile_dict
from r1_pipeline.io import read_jsonl
from tests.conftest import stage_env

pytestmark = pytest.mark.slow

FAULTS = Path(__file__).parent / "faults"
OVERRIDES = ["grpo.max_steps=4"]  # sft: 4 steps, a checkpoint every 2; grpo the same


def run(wd: Path, stage: str, *args: str, fault: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = stage_env()
    if fault:
        env["PYTHONPATH"] = f"{FAULTS}:{env['PYTHONPATH']}"
        env["R1_TEST_FAULT"] = fault
    proc = subprocess.run(
        [sys.executable, "-m", f"tasks.{stage}", *args], cwd=wd, env=env, capture_output=True, text=True, timeout=600
    )
    if check:
        assert proc.returncode == 0, f"{stage} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def workdir(root: Path, name: str, source: Path | None = None, overrides: list[str] = ()) -> Path:
    wd = root / name
    wd.mkdir()
    (wd / "params.yaml").write_text(yaml.safe_dump(apply_overrides(profile_dict("micro"), OVERRIDES + list(overrides))))
    if source is not None:
        for rel in ("outputs/data", "outputs/models/base", "outputs/models/sft"):
            if (source / rel).exists():
                shutil.copytree(source / rel, wd / rel)
    return wd


def weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    import torch

    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def losses(wd: Path, stage: str) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_jsonl(wd / f"outputs/logs/{stage}.jsonl") if "loss" in r}


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted reference: data, base, sft and grpo in one work dir."""
    wd = workdir(tmp_path_factory.mktemp("resume"), "straight")
    for stage in ("data", "base", "sft", "grpo"):
        run(wd, stage)
    return wd


@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_killed_after_a_checkpoint_then_rerun_equals_uninterrupted(straight, tmp_path, stage):
    wd = workdir(tmp_path, "killed", source=straight)
    shutil.rmtree(wd / f"outputs/models/{stage}", ignore_errors=True)
    killed = run(wd, stage, fault="after_save:2", check=False)
    assert killed.returncode == -9, killed.stdout[-2000:] + killed.stderr[-2000:]
    assert (wd / f"checkpoints/{stage}/checkpoint-2/r1_complete.json").exists()
    assert not (wd / f"outputs/models/{stage}").exists()

    rerun = run(wd, stage)
    assert f"resuming from checkpoints/{stage}/checkpoint-2" in rerun.stdout
    assert_same_weights(wd / f"outputs/models/{stage}", straight / f"outputs/models/{stage}")
    assert losses(wd, stage) == losses(straight, stage)  # steps 1-2 restored from the checkpoint, 3-4 retrained
    assert sorted(losses(wd, stage)) == [1, 2, 3, 4]
    assert not (wd / f"checkpoints/{stage}").exists(), "a finished stage leaves no checkpoint to resume"


def test_kill_during_a_save_skips_the_partial_checkpoint(straight, tmp_path):
    wd = workdir(tmp_path, "partial", source=straight)
    shutil.rmtree(wd / "outputs/models/sft")
    killed = run(wd, "sft", fault="during_save:4", check=False)
    assert killed.returncode == -9
    partial = wd / "checkpoints/sft/checkpoint-4"
    assert partial.is_dir() and not (partial / "trainer_state.json").exists()  # really half-written

    rerun = run(wd, "sft")
    assert "checkpoints/sft/checkpoint-4 is incomplete" in rerun.stdout
    assert "resuming from checkpoints/sft/checkpoint-2" in rerun.stdout
    assert_same_weights(wd / "outputs/models/sft", straight / "outputs/models/sft")


def test_finished_stage_reruns_from_step_0(straight, tmp_path):
    """What `dvc repro -f sft` does after a finished sft: the stage command again. It must train, not restore."""
    wd = workdir(tmp_path, "forced", source=straight)
    shutil.rmtree(wd / "outputs/models/sft")
    run(wd, "sft")  # a finished sft in this work dir
    before = (wd / "outputs/models/sft/model.safetensors").stat().st_mtime_ns
    rerun = run(wd, "sft")
    assert "resuming" not in rerun.stdout
    assert sorted(losses(wd, "sft")) == [1, 2, 3, 4]
    assert (wd / "outputs/models/sft/model.safetensors").stat().st_mtime_ns != before
    assert_same_weights(wd / "outputs/models/sft", straight / "outputs/models/sft")  # same recipe, same result


def test_checkpoints_of_another_precision_are_not_resumed(straight, tmp_path):
    wd = workdir(tmp_path, "precision", source=straight)
    shutil.rmtree(wd / "outputs/models/sft")
    assert run(wd, "sft", fault="after_save:2", check=False).returncode == -9
    rerun = run(wd, "sft", "--set", "project.precision=bf16")
    assert "checkpoints of another configuration" in rerun.stdout and "resuming" not in rerun.stdout
    assert sorted(losses(wd, "sft")) == [1, 2, 3, 4]
