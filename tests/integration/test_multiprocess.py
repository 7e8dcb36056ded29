"""SFT and GRPO through `accelerate launch` with 2 processes and DeepSpeed ZeRO-2 on CPU (gloo).

The stage relaunches itself through accelerate because params ask for it (num_processes/deepspeed); only
rank 0 tracks, so each stage is one MLflow run.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import mlflow
import pytest
import yaml

from r1_pipeline.config import apply_overrides, profile_dict
from tests.conftest import stage_env

pytestmark = pytest.mark.slow
DS = ["deepspeed=zero2", "num_processes=2"]
FAULTS = Path(__file__).parent / "faults"


def test_sft_and_grpo_with_two_processes_and_zero2(tmp_path):
    experiment = f"multiprocess-{uuid.uuid4().hex[:8]}"
    overrides = [f"project.mlflow_experiment={experiment}"] + [f"{s}.{kv}" for s in ("sft", "grpo") for kv in DS]
    raw = apply_overrides(profile_dict("micro"), overrides)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    env = stage_env()
    env.pop("MLFLOW_EXPERIMENT_NAME", None)

    def run(stage, fault=None):
        run_env = dict(env)
        if fault:  # a real SIGKILL of every rank right after a complete checkpoint (tests/integration/faults)
            run_env.update(PYTHONPATH=f"{FAULTS}:{env['PYTHONPATH']}", R1_TEST_FAULT=fault)
        return subprocess.run(
            [sys.executable, "-m", f"tasks.{stage}"],
            cwd=tmp_path,
            env=run_env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    for stage in ("data", "base"):
        proc = run(stage)
        assert proc.returncode == 0, f"{stage}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    # killed after the step-2 checkpoint: DeepSpeed's own layout (proof the engine, not plain DDP, trained),
    # marked complete by rank 0 behind a barrier; the rerun resumes it on both ranks
    killed = run("sft", fault="after_save:2")
    assert killed.returncode != 0
    ckpt = tmp_path / "checkpoints" / "sft" / "checkpoint-2"
    assert list(ckpt.glob("global_step*")) and (ckpt / "r1_complete.json").exists()
    for stage in ("sft", "grpo"):
        proc = run(stage)
        assert proc.returncode == 0, f"{stage}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        assert f"{stage}: launching 2 processes" in proc.stdout
        assert "--use_deepspeed" in proc.stdout
        assert (tmp_path / "outputs" / "models" / stage / "model.safetensors").exists()
        assert not (tmp_path / "checkpoints" / stage).exists(), "a finished stage leaves no checkpoint"
        if stage == "sft":
            assert "sft: resuming from checkpoints/sft/checkpoint-2" in proc.stdout
    runs = mlflow.search_runs(experiment_names=[experiment], output_format="list")
    finished = sorted(r.data.tags.get("r1.stage") for r in runs if r.info.status == "FINISHED")
    assert finished == ["base", "data", "grpo", "sft"], "one run per stage run: only rank 0 may track"
    killed = [r for r in runs if r.info.status != "FINISHED"]
    assert [r.data.tags.get("r1.stage") for r in killed] == ["sft"]  # the SIGKILLed attempt, not left FINISHED
    grpo = next(r for r in runs if r.data.tags["r1.stage"] == "grpo")
    assert grpo.info.status == "FINISHED" and "reward" in grpo.data.metrics
