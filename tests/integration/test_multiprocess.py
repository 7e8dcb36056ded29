"""SFT and GRPO through `accelerate launch` with 2 processes and DeepSpeed ZeRO-2 on CPU (gloo).

The stage relaunches itself through accelerate because params ask for it (num_processes/deepspeed); only
rank 0 tracks, so each stage is one MLflow run.
"""

from __future__ import annotations

import subprocess
import sys
import uuid

import mlflow
import pytest
import yaml

from r1_pipeline.config import apply_overrides, profile_dict
from tests.conftest import stage_env

pytestmark = pytest.mark.slow
DS = ["deepspeed=zero2", "num_processes=2"]


def test_sft_and_grpo_with_two_processes_and_zero2(tmp_path):
    experiment = f"multiprocess-{uuid.uuid4().hex[:8]}"
    overrides = [f"project.mlflow_experiment={experiment}"] + [f"{s}.{kv}" for s in ("sft", "grpo") for kv in DS]
    raw = apply_overrides(profile_dict("micro"), overrides)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    env = stage_env()
    env.pop("MLFLOW_EXPERIMENT_NAME", None)
    for stage in ("data", "base", "sft", "grpo"):
        proc = subprocess.run([sys.executable, "-m", f"tasks.{stage}"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{stage}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        if stage in ("sft", "grpo"):
            assert f"{stage}: launching 2 processes" in proc.stdout
            assert "--use_deepspeed" in proc.stdout
            # DeepSpeed's own checkpoint layout: proof the engine (not plain DDP) trained
            assert list((tmp_path / "checkpoints" / stage).glob("checkpoint-*/global_step*"))
            assert (tmp_path / "outputs" / "models" / stage / "model.safetensors").exists()
    runs = mlflow.search_runs(experiment_names=[experiment], output_format="list")
    by_stage = sorted(r.data.tags.get("r1.stage") for r in runs)
    assert by_stage == ["base", "data", "grpo", "sft"], "one run per stage: only rank 0 may track"
    grpo = next(r for r in runs if r.data.tags["r1.stage"] == "grpo")
    assert grpo.info.status == "FINISHED" and "reward" in grpo.data.metrics
