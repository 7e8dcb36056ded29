"""The Model Registry end to end on the micro profile, against a real MLflow SQLite store: each training stage
registers its own model (pyfunc, signature, input example, run_id = the training run, parent version), the
evaluate stage promotes on evidence, and `models:/<name>@champion` answers a prompt."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from r1_pipeline.config import load_config, profile_dict
from tests.conftest import stage_env

pytestmark = pytest.mark.slow
EXPERIMENT = "r1-registry-test"


def run(workdir: Path, stage: str, *args: str) -> subprocess.CompletedProcess:
    env = {**stage_env(), "MLFLOW_EXPERIMENT_NAME": EXPERIMENT}
    proc = subprocess.run(
        [sys.executable, "-m", f"tasks.{stage}", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"{stage} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    wd = tmp_path_factory.mktemp("registry")
    (wd / "params.yaml").write_text("# profile: micro\n" + yaml.safe_dump(profile_dict("micro")))
    for stage in ("data", "base", "sft", "grpo"):
        run(wd, stage)
    run(wd, "evaluate", "--set", "evaluate.models=[base,sft,grpo]")
    return wd


@pytest.fixture
def client():
    from mlflow import MlflowClient

    return MlflowClient()


def stage_run(client, stage: str):
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs(
        [exp.experiment_id], f"tags.`r1.stage` = '{stage}'", order_by=["attributes.start_time DESC"]
    )
    assert runs, f"no {stage} run"
    return runs[0]


def test_training_run_registers_its_model_as_a_pyfunc_version(workdir, client):
    sft, base = stage_run(client, "sft"), stage_run(client, "base")
    version = client.get_model_version(f"{EXPERIMENT}-micro-sft", "1")
    assert version.run_id == sft.info.run_id  # the run that trained the weights, not the evaluate run
    assert version.tags["r1.parent_model"] == f"{EXPERIMENT}-micro-base/1"
    assert client.get_model_version(f"{EXPERIMENT}-micro-base", "1").run_id == base.info.run_id
    assert sft.data.tags["registry.version"] == f"{EXPERIMENT}-micro-sft/1"
    assert version.tags["git.dirty"] in ("true", "false", "unknown")
    from mlflow.models import Model

    info = Model.load(version.source)
    assert info.signature.inputs.input_names() == ["prompt"]
    assert {p.name for p in info.signature.params} == {"max_new_tokens", "temperature", "top_p"}
    assert info.saved_input_example_info is not None
    # the evaluate run holds no copy of the weights: only the per-problem outcomes (a few KB)
    evaluate = stage_run(client, "evaluate")
    assert not list(Path(evaluate.info.artifact_uri.removeprefix("file://")).rglob("*.safetensors"))


def test_champion_loads_and_answers_a_prompt(workdir, client):
    import mlflow
    import pandas as pd
    import torch

    from r1_pipeline.modeling import load_model_and_tokenizer

    name = f"{EXPERIMENT}-micro-sft"
    champion = client.get_model_version_by_alias(name, "champion")
    assert str(champion.version) == "1" and champion.tags["promotion.arith_heldout.decision"] == "promoted"
    assert str(client.get_model_version_by_alias(name, "champion-arith_heldout").version) == "1"
    assert float(champion.tags["eval.arith_heldout.pass_at_1"]) >= 0
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    prompt = json.loads((workdir / "outputs/data/eval/arith_heldout.jsonl").read_text().splitlines()[0])["problem"]
    answer = model.predict(pd.DataFrame({"prompt": [prompt]}), params={"max_new_tokens": 16})
    # the same completion as greedy decoding of the Hugging Face folder with the evaluation's chat format
    cfg = load_config(workdir / "params.yaml")
    hf, tok = load_model_and_tokenizer(workdir / "outputs/models/sft", "cpu", "fp32")
    messages = ([{"role": "system", "content": cfg.chat.system_prompt}] if cfg.chat.system_prompt else []) + [
        {"role": "user", "content": prompt}
    ]
    ids = tok(
        tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False),
        return_tensors="pt",
        add_special_tokens=False,
    )
    with torch.no_grad():
        out = hf.generate(**ids, max_new_tokens=16, do_sample=False, pad_token_id=tok.pad_token_id)
    expected = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    assert answer == [expected]


def evaluate_with(workdir: Path, monkeypatch, outcome, k: int = 2, models=("sft",)) -> list[dict]:
    """promote_models inside a real evaluate-like run, with records whose verdicts `outcome(problem, sample)` sets."""
    import mlflow

    from r1_pipeline import registry
    from r1_pipeline.io import read_jsonl
    from r1_pipeline.metrics import summarize

    monkeypatch.chdir(workdir)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
    cfg = load_config("params.yaml", [f"evaluate.num_samples={k}"])
    problems = read_jsonl("outputs/data/eval/arith_heldout.jsonl")
    records = [
        {
            "model": m,
            "benchmark": "arith_heldout",
            "problem_id": p["id"],
            "sample_idx": i,
            "gold": p["answer"],
            "correct": outcome(n, i),
            "extracted": None,
        }
        for m in models
        for n, p in enumerate(problems)
        for i in range(k)
    ]
    metrics = {m: {"arith_heldout": {**summarize([r for r in records if r["model"] == m])}} for m in models}
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name="evaluate-test"):
        return registry.promote_models(cfg, metrics, records)


def retrain_sft(workdir: Path, steps: int) -> None:
    run(workdir, "sft", "--set", f"sft.max_steps={steps}")


def test_promotion_needs_evidence_and_is_tagged(workdir, client, monkeypatch):
    name = f"{EXPERIMENT}-micro-sft"
    # version 1 (the champion) scored on the real evaluation: its stored outcomes are the baseline
    retrain_sft(workdir, 2)  # new weights: version 2, registered by this sft run
    v2 = client.get_model_version(name, "2")
    assert v2.run_id == stage_run(client, "sft").info.run_id
    # every problem wrong: worse than (or equal to) the champion: the alias stays
    [d] = evaluate_with(workdir, monkeypatch, lambda n, i: False)
    assert (d["version"], d["decision"]) == ("2", "kept")
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    tags = client.get_model_version(name, "2").tags
    assert tags["promotion.arith_heldout.decision"] == "kept" and "promotion.arith_heldout.stderr" in tags
    assert tags["promotion.arith_heldout.champion_version"] == "1"
    # another k: not comparable, never promoted even when perfect
    [d] = evaluate_with(workdir, monkeypatch, lambda n, i: True, k=3)
    assert d["decision"] == "not comparable" and "k 3 vs 2" in d["reason"]
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    # every sample right on every problem (the micro champion solves at most a few): clearly better
    v1 = client.get_model_version(name, "1")
    assert float(v1.tags["eval.arith_heldout.pass_at_1"]) < 0.5
    [d] = evaluate_with(workdir, monkeypatch, lambda n, i: True)
    assert d["decision"] == "promoted" and float(d["difference"]) > 2 * float(d["stderr"])
    assert str(client.get_model_version_by_alias(name, "champion").version) == "2"
    assert str(client.get_model_version_by_alias(name, "champion-arith_heldout").version) == "2"
    assert client.get_model_version(name, "2").tags["promotion.arith_heldout.decision"] == "promoted"


def test_unevaluated_model_is_never_promoted(workdir, client, monkeypatch):
    """The old bug: distill became champion with "pass@1 on None". A version with a benchmark entry but no
    evaluation records is `not evaluated` and leaves the alias where it is, even with no champion at all."""
    import mlflow

    from r1_pipeline import registry

    monkeypatch.chdir(workdir)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
    name = f"{EXPERIMENT}-micro-sft"
    before = client.get_model_version_by_alias(name, "champion").version
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name="evaluate-test"):
        done = registry.promote_models(load_config("params.yaml"), {"sft": {"unscored": {"k": 2}}}, [])
    assert [(d["benchmark"], d["decision"]) for d in done] == [("unscored", "not evaluated")]
    assert client.get_model_version_by_alias(name, "champion").version == before
    assert "champion-unscored" not in client.get_registered_model(name).aliases


def test_lineage_prints_data_to_registered_model(workdir, client):
    from r1_pipeline.io import sha256_file

    name = f"{EXPERIMENT}-micro-grpo"
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("r1")), "lineage", f"{name}@champion"],
        cwd=workdir,
        env={**stage_env()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    kinds = [ln.split()[0] for ln in lines]
    assert kinds == ["data", "base", "data", "sft", "data", "grpo", "eval", "model"], proc.stdout
    corpus, cold, rl = (
        sha256_file(workdir / "outputs/data" / f) for f in ("corpus.jsonl", "cold_start.jsonl", "rl_train.jsonl")
    )
    assert corpus[:12] in lines[0] and cold[:12] in lines[2] and rl[:12] in lines[4]
    grpo_run = stage_run(client, "grpo").info.run_id
    assert f"{name}/1" in lines[5] and grpo_run in lines[5] and f"{EXPERIMENT}-micro-sft/1" in lines[3]
    assert stage_run(client, "evaluate").info.run_id in lines[6] and "pass@1" in lines[6]
    assert "champion" in lines[7] and "promoted" in lines[7]
    # a training run id names the same chain; an unknown reference is one clear line, exit 2
    by_run = subprocess.run(
        [str(Path(sys.executable).with_name("r1")), "lineage", grpo_run],
        cwd=workdir,
        env=stage_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert by_run.stdout.splitlines()[-2:] == proc.stdout.splitlines()[-2:]
    bad = subprocess.run(
        [str(Path(sys.executable).with_name("r1")), "lineage", f"{name}/99"],
        cwd=workdir,
        env=stage_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and len(bad.stderr.strip().splitlines()) == 1
