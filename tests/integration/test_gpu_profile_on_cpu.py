"""The `gpu` profile's code paths on CPU: bf16 and DeepSpeed ZeRO-2 through `accelerate launch` for SFT, GRPO
and distillation, with the model sizes shrunk to the micro profile's (CI has no GPU; the H200 run is in
docs/benchmarks.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from r1_pipeline.config import deep_merge, profile_dict, validate
from r1_pipeline.io import read_jsonl
from tests.conftest import stage_env

pytestmark = pytest.mark.slow

# the gpu profile's own settings that select code paths (kept), vs its sizes (replaced by micro's)
SHRINK = yaml.safe_load((Path(__file__).parents[2] / "profiles/micro.yaml").read_text())


def gpu_on_cpu() -> dict:
    raw = deep_merge(profile_dict("gpu"), SHRINK)
    raw["project"]["device"] = "cpu"
    return raw


def test_gpu_profile_keeps_bf16_and_zero2_after_shrinking():
    cfg = validate(gpu_on_cpu())
    assert cfg.project.precision == "bf16"
    assert {cfg.sft.deepspeed, cfg.grpo.deepspeed, cfg.r1_zero.deepspeed, cfg.distill.deepspeed} == {"zero2"}


def test_gpu_profile_stages_run_on_cpu(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(gpu_on_cpu()))
    for stage in ["data", "base", "sft", "grpo", "rejection", "distill", "evaluate"]:
        traces = tmp_path / "outputs/rejection/traces.jsonl"
        if stage == "distill" and not traces.read_text().strip():
            # micro-sized models solve (almost) nothing: give the student correct cold-start traces instead,
            # so that its DeepSpeed path runs rather than the stage's documented skip
            traces.write_text((tmp_path / "outputs/data/cold_start.jsonl").read_text())
        proc = subprocess.run(
            [sys.executable, "-m", f"tasks.{stage}"],
            cwd=tmp_path,
            env=stage_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, f"{stage} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        if stage in {"sft", "grpo", "distill"}:
            # relaunched through accelerate with the DeepSpeed config the profile names
            assert f"{stage}: launching 1 processes" in proc.stdout and "--use_deepspeed" in proc.stdout, proc.stdout[
                -2000:
            ]
    for model in ["base", "sft", "grpo", "distill"]:
        assert (tmp_path / "outputs/models" / model / "model.safetensors").exists()
        dtype = json.loads((tmp_path / "outputs/models" / model / "config.json").read_text()).get("dtype")
        assert dtype in {"bfloat16", "float32"}
    assert any("reward" in row for row in read_jsonl(tmp_path / "outputs/logs/grpo.jsonl"))
    metrics = json.loads((tmp_path / "outputs/metrics/evaluate.json").read_text())
    assert {"base", "sft", "grpo", "distill"} <= {key.split(".")[0] for key in metrics}, metrics
