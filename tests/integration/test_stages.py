"""Each stage runs alone (as `dvc repro` runs it) on the micro profile, from the outputs of the stages before it.

One work dir per module; stages run in pipeline order, each test checking its stage's declared outputs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from r1_pipeline.config import apply_overrides, profile_dict
from r1_pipeline.io import read_jsonl
from tests.conftest import stage_env

pytestmark = pytest.mark.slow


def run(workdir: Path, stage: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", f"tasks.{stage}", *args],
        cwd=workdir,
        env=stage_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{stage} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    wd = tmp_path_factory.mktemp("micro")
    (wd / "params.yaml").write_text(yaml.safe_dump(profile_dict("micro")))
    run(wd, "data")
    return wd


def model_ok(path: Path) -> None:
    assert (path / "config.json").exists() and (path / "model.safetensors").exists()
    assert (path / "tokenizer.json").exists() and (path / "r1_pipeline_tokenizer.json").exists()


def stage_metrics(wd: Path, stage: str) -> dict:
    return json.loads((wd / "outputs" / "metrics" / f"{stage}.json").read_text())


def test_base_trains_tokenizer_and_model_from_scratch(workdir):
    run(workdir, "base")
    out = workdir / "outputs/models/base"
    model_ok(out)
    info = json.loads((out / "r1_model_info.json").read_text())
    assert info["source"] == "scratch" and info["architecture"] == "qwen2" and info["parameters"] > 1000
    from r1_pipeline.modeling import load_tokenizer

    tok = load_tokenizer(out)
    # digits and signed operands are single tokens; tags are atomic and survive decoding
    ids = tok("<think>\n123+2=125\n</think>", add_special_tokens=False)["input_ids"]
    pieces = tok.convert_ids_to_tokens(ids)
    assert "<think>" in pieces and "</think>" in pieces and "+2" in pieces
    assert all(len(p) == 1 for p in pieces if p.isdigit())
    assert tok.decode(ids, skip_special_tokens=True) == "<think>\n123+2=125\n</think>"
    chat = tok.apply_chat_template([{"role": "user", "content": "1+2"}], tokenize=False, add_generation_prompt=True)
    assert chat == "<|im_start|>user\n1+2<|im_end|>\n<|im_start|>assistant\n"
    assert stage_metrics(workdir, "base")["base_parameters"] == info["parameters"]
    # pretraining logs its cost like the post-training stages: a cost row in the train log, cost/* in MLflow
    cost = [r["cost"] for r in read_jsonl(workdir / "outputs/logs/base.jsonl") if "cost" in r]
    assert len(cost) == 1 and cost[0]["tokens"] > 0 and cost[0]["tokens_per_s_per_device"] > 0
    import mlflow

    run_ = mlflow.search_runs(
        experiment_names=["r1-pipeline"], filter_string="tags.`r1.stage` = 'base'", output_format="list"
    )[0]
    assert run_.data.metrics["cost/tokens"] == cost[0]["tokens"] and run_.data.metrics["cost/mfu"] > 0


def test_sft_trains_on_completions(workdir):
    run(workdir, "sft")
    model_ok(workdir / "outputs/models/sft")
    log = read_jsonl(workdir / "outputs/logs/sft.jsonl")
    assert any("loss" in row for row in log)


def test_grpo_uses_reward_registry_and_logs_completion_tables(workdir):
    run(workdir, "grpo")
    model_ok(workdir / "outputs/models/grpo")
    log = [r for r in read_jsonl(workdir / "outputs/logs/grpo.jsonl") if "reward" in r]
    assert len(log) == 3
    assert {"rewards/accuracy/mean", "rewards/format/mean", "completions/mean_length"} <= set(log[0])
    # the micro base partly solves its task: rewards vary, so the steps ran a real gradient
    assert any(r["rewards/accuracy/mean"] > 0 for r in log) and any(r["reward_std"] > 0 for r in log)
    assert any(r["grad_norm"] > 0 for r in read_jsonl(workdir / "outputs/logs/grpo.jsonl") if "grad_norm" in r)
    import mlflow

    run_ = mlflow.search_runs(
        experiment_names=["r1-pipeline"], filter_string="tags.`r1.stage` = 'grpo'", output_format="list"
    )[0]
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(run_.info.run_id, "completions")]
    assert "completions/grpo_step_00002.json" in artifacts and "completions/grpo_step_00003.json" in artifacts
    assert run_.data.params["grpo.reward_funcs"] == "['accuracy', 'format']"
    assert "train_loss" in run_.data.metrics or "loss" in run_.data.metrics
    # the headline curves, again under RL/ so that MLflow's run page shows them first: the same values per step
    client = mlflow.MlflowClient()
    for trl_key, headline in (
        ("reward", "RL/reward"),
        ("rewards/accuracy/mean", "RL/accuracy"),
        ("completions/mean_length", "RL/completion_length"),
    ):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_.info.run_id, headline))
        assert history == [(r["step"], pytest.approx(r[trl_key])) for r in log], headline


def test_r1_zero_logs_length_per_step(workdir):
    run(workdir, "r1_zero")
    model_ok(workdir / "outputs/models/r1_zero")
    log = [r for r in read_jsonl(workdir / "outputs/logs/r1_zero.jsonl") if "reward" in r]
    assert [r["step"] for r in log] == [1, 2] and all("completions/mean_length" in r for r in log)


def test_steps_per_generation_reuses_one_generation_round(workdir, tmp_path):
    """`steps_per_generation: 2` (TRL's knob): rollouts are generated on steps 1 and 3 and serve two steps each."""
    import shutil

    for rel in ("outputs/data", "outputs/models/base"):
        shutil.copytree(workdir / rel, tmp_path / rel)
    cfg = apply_overrides(profile_dict("micro"), ["r1_zero.steps_per_generation=2", "r1_zero.max_steps=4"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(cfg))
    run(tmp_path, "r1_zero")
    log = [r for r in read_jsonl(tmp_path / "outputs/logs/r1_zero.jsonl") if "loss" in r]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert [r["step"] for r in log if "completions/mean_length" in r] == [1, 3]


def test_rejection_writes_dataset_and_stats(workdir):
    run(workdir, "rejection")
    stats = json.loads((workdir / "outputs/rejection/stats.json").read_text())
    assert stats["samples"] == 16 * 4
    assert stats["kept"] + sum(stats["rejected"].values()) == stats["samples"]
    kept = read_jsonl(workdir / "outputs/rejection/traces.jsonl")
    assert len(kept) == stats["kept"]


def test_distill_trains_student_and_no_trace_baseline(workdir):
    # The micro RL model solves (almost) nothing, so give distill real traces: the cold-start data has the
    # same schema as rejection's output.
    traces = workdir / "outputs/rejection/traces.jsonl"
    original = traces.read_text()
    traces.write_text((workdir / "outputs/data/cold_start.jsonl").read_text())
    try:
        run(workdir, "distill")
    finally:
        traces.write_text(original)
    for name in ("distill", "distill_no_traces"):
        model_ok(workdir / f"outputs/models/{name}")
    info = json.loads((workdir / "outputs/models/distill/r1_model_info.json").read_text())
    base_info = json.loads((workdir / "outputs/models/base/r1_model_info.json").read_text())
    assert info["parameters"] < base_info["parameters"]


def test_evaluate_writes_records_and_metrics(workdir):
    run(workdir, "evaluate")
    metrics = json.loads((workdir / "outputs/eval/metrics.json").read_text())
    assert set(metrics) == {"base", "sft", "grpo", "r1_zero", "distill", "distill_no_traces"}
    s = metrics["grpo"]["arith_heldout"]
    assert {"pass@1", "pass@1_stderr", "cons@2", "format_rate"} <= set(s)
    records = read_jsonl(workdir / "outputs/eval/records.jsonl")
    problems = read_jsonl(workdir / "outputs/data/eval/arith_heldout.jsonl")  # micro's task has few held out
    assert problems and len(records) == 6 * len(problems) * 2
    assert {(r["model"], r["problem_id"]) for r in records} == {(m, p["id"]) for m in metrics for p in problems}
    assert {"model", "benchmark", "problem_id", "sample_idx", "text", "extracted", "correct"} <= set(records[0])


def test_report_writes_markdown_and_plots(workdir):
    run(workdir, "report")
    out = workdir / "outputs/report"
    text = (out / "report.md").read_text()
    assert "| grpo | arith_heldout |" in text and "R1-Zero over the base" in text
    cost_rows = text.split("## Cost by stage")[1]
    assert all(f"\n| {stage} |" in cost_rows for stage in ("base", "sft", "grpo", "r1_zero", "distill"))
    for png in ("accuracy.png", "rl_curves.png", "rejection.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_missing_input_is_a_clear_error(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(profile_dict("micro")))
    proc = subprocess.run(
        [sys.executable, "-m", "tasks.grpo"], cwd=tmp_path, env=stage_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "input outputs/models/sft not found: run the `sft` stage first" in proc.stderr
    assert not (tmp_path / "outputs" / "models").exists()


def test_killed_training_stage_resumes_from_its_last_checkpoint(workdir):
    """SIGKILL mid-run leaves no declared output; the next run resumes from the last checkpoint."""
    overrides = ["sft.max_steps=60", "sft.save_steps=5"]
    raw = apply_overrides(yaml.safe_load((workdir / "params.yaml").read_text()), overrides)
    (workdir / "params.yaml").write_text(yaml.safe_dump(raw))
    out = workdir / "outputs/models/sft"
    import shutil

    shutil.rmtree(out)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tasks.sft"],
        cwd=workdir,
        env=stage_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    ckpts = workdir / "checkpoints/sft"
    deadline = time.time() + 240
    while time.time() < deadline and not (ckpts / "checkpoint-10").exists():
        time.sleep(0.2)
    assert (ckpts / "checkpoint-10").exists(), "no checkpoint appeared"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "a killed stage must not leave its declared output"
    done = run(workdir, "sft")
    assert "sft: resuming from checkpoints/sft/checkpoint-" in done.stdout
    steps = [r["step"] for r in read_jsonl(workdir / "outputs/logs/sft.jsonl") if "loss" in r]
    assert steps == list(range(1, 61))  # the restored history and the resumed steps, each once
    assert not ckpts.exists(), "a finished stage removes its checkpoints (a rerun trains from step 0)"
    model_ok(out)
