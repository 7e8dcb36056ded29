"""`dvc repro` owns the pipeline: end to end on the micro profile, a no-op the second time, and a GRPO param
change reruns grpo and what follows it (not what precedes it). Works in a throwaway copy of the project."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from r1_ops.orchestration import bin_path, sha256_file, stage_graph
from r1_pipeline import paths
from r1_pipeline.io import read_jsonl
from tests.e2e.workspace import copy_project, dvc, git, stage_env, stages_ran, stages_skipped

pytestmark = pytest.mark.slow

ALL = list(paths.stage_names())
# r1_zero is an overlay of grpo (its effective config is grpo updated by r1_zero), so a grpo value it does not
# override changes r1_zero too; it sits beside grpo in the DAG, not after it.
AFTER_GRPO = ["grpo", "r1_zero", "rejection", "distill", "evaluate", "report"]


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    """A micro copy after one full `dvc repro`, with dvc.lock committed (so `dvc metrics diff` has a base)."""
    ws = copy_project(tmp_path_factory.mktemp("dvc") / "ws", overrides=["project.mlflow_experiment=r1-dvc-test"])
    start = time.time()
    first = dvc(ws, "repro")
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    git(ws, "add", "-A")
    git(ws, "commit", "-q", "-m", "micro pipeline reproduced")
    return ws, first.stdout, time.time() - start


def test_stage_order_comes_from_dvc(reproduced):
    ws, _, _ = reproduced
    graph = stage_graph(ws)
    assert graph.order == ALL
    assert graph.upstream["rejection"] == {"data", "sft", "grpo", "r1_zero"}
    assert graph.upstream["data"] == set()


def test_repro_end_to_end_then_nothing_to_do(reproduced):
    ws, first, seconds = reproduced
    assert stages_ran(first) == ALL, first[-3000:]
    for out in ("outputs/models/grpo", "outputs/eval/metrics.json", "outputs/report/report.md"):
        assert (ws / out).exists(), out
    print(f"full micro dvc repro: {seconds:.0f}s")

    second = dvc(ws, "repro")
    assert second.returncode == 0, second.stderr
    assert stages_ran(second.stdout) == []
    assert sorted(stages_skipped(second.stdout)) == sorted(ALL)
    status = dvc(ws, "status", "--json", check=True)
    assert json.loads(status.stdout or "{}") == {}

    metrics = json.loads(dvc(ws, "metrics", "show", "--json", check=True).stdout)
    workspace = next(iter(metrics.values()))["data"]  # one revision: the workspace
    assert "outputs/eval/metrics.json" in workspace
    assert "pass@1" in json.dumps(workspace["outputs/eval/metrics.json"]["data"])


def test_invalid_override_fails_fast_and_writes_nothing(reproduced):
    ws, _, _ = reproduced
    params_before = (ws / "params.yaml").read_bytes()
    lock_before = sha256_file(ws / "dvc.lock")
    start = time.time()
    out = subprocess.run(
        [bin_path("r1"), "run", "--set", "grpo.learning_rate=oops", "--set", "grpo.nonexistent_knob=1"],
        cwd=ws,
        env=stage_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.time() - start
    assert out.returncode == 2, out.stdout + out.stderr
    assert "grpo.learning_rate" in out.stderr and "valid number" in out.stderr, out.stderr
    assert "grpo.nonexistent_knob" in out.stderr, out.stderr
    assert elapsed < 30, f"took {elapsed:.1f}s"
    assert (ws / "params.yaml").read_bytes() == params_before
    assert sha256_file(ws / "dvc.lock") == lock_before
    assert json.loads(dvc(ws, "status", "--json", check=True).stdout or "{}") == {}
    assert (ws / "outputs/models/grpo/model.safetensors").exists()


def test_editing_the_prompt_module_outdates_every_stage_that_imports_it(reproduced):
    """dvc.yaml's code deps are the stages' import closures, so a one-line edit of r1_pipeline/chat.py (the
    prompt and the <think>/<answer> format) is seen by DVC in every stage that runs it."""
    from r1_pipeline.codedeps import stage_closure

    ws, _, _ = reproduced
    importers = {s for s in ALL if Path("r1_pipeline/chat.py") in stage_closure(s, ws)}
    assert {"data", "sft", "grpo", "r1_zero", "rejection", "distill", "evaluate"} <= importers
    chat = ws / "r1_pipeline" / "chat.py"
    chat.write_text(chat.read_text() + "\n# one-line edit\n")
    try:
        status = json.loads(dvc(ws, "status", "--json", check=True).stdout or "{}")
        assert set(status) == importers, status
    finally:
        git(ws, "checkout", "r1_pipeline/chat.py")
    assert json.loads(dvc(ws, "status", "--json", check=True).stdout or "{}") == {}


def test_changing_precision_outdates_every_training_stage(reproduced):
    ws, _, _ = reproduced
    raw = yaml.safe_load((ws / "params.yaml").read_text())
    raw["project"]["precision"] = "bf16"
    (ws / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    try:
        status = json.loads(dvc(ws, "status", "--json", check=True).stdout)
        assert {"base", "sft", "grpo", "r1_zero", "distill"} <= set(status), status
    finally:
        git(ws, "checkout", "params.yaml")


def test_forced_rerun_of_a_finished_stage_trains_from_step_0(reproduced):
    ws, _, _ = reproduced
    model = ws / "outputs/models/sft/model.safetensors"
    before = model.stat().st_mtime_ns
    assert not (ws / "checkpoints/sft").exists(), "a finished stage leaves no checkpoint behind"
    forced = dvc(ws, "repro", "-f", "--single-item", "sft")
    assert forced.returncode == 0, forced.stdout[-3000:] + forced.stderr[-3000:]
    assert "resuming" not in forced.stdout
    steps = [r["step"] for r in read_jsonl(ws / "outputs/logs/sft.jsonl") if "loss" in r]
    max_steps = yaml.safe_load((ws / "params.yaml").read_text())["sft"]["max_steps"]
    assert steps == list(range(1, max_steps + 1))
    assert model.stat().st_mtime_ns != before  # a new model was written, not the old one re-published
    assert json.loads(dvc(ws, "status", "--json", check=True).stdout or "{}") == {}  # deterministic: same bytes


def test_grpo_param_change_reruns_grpo_and_what_follows(reproduced):
    ws, _, _ = reproduced

    def locked_lr() -> float:
        # float(): PyYAML (YAML 1.1) reads DVC's `3e-05` as a string
        return float(
            yaml.safe_load((ws / "dvc.lock").read_text())["stages"]["grpo"]["params"]["params.yaml"]["grpo"][
                "learning_rate"
            ]
        )

    assert locked_lr() == 3e-05

    # What DVC sees as changed: grpo and r1_zero (which inherits grpo.learning_rate); nothing upstream.
    raw = yaml.safe_load((ws / "params.yaml").read_text())
    raw["grpo"]["learning_rate"] = 1e-4
    (ws / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    status = json.loads(dvc(ws, "status", "--json", check=True).stdout)
    assert sorted(status) == ["grpo", "r1_zero"], status
    git(ws, "checkout", "params.yaml")

    # An experiment with the new value: grpo, r1_zero and every stage downstream of them rerun, and nothing
    # before them. --force-downstream makes the downstream reruns unconditional: on the
    # micro profile GRPO's rewards are all zero, its update is zero and its weights come out byte-identical,
    # so plain `dvc repro` would (correctly) stop after grpo.
    exp = dvc(ws, "exp", "run", "-S", "grpo.learning_rate=1e-4", "--force-downstream", "-n", "grpo-lr-1e-4")
    assert exp.returncode == 0, exp.stdout[-4000:] + exp.stderr[-4000:]
    ran = stages_ran(exp.stdout)
    assert sorted(ran) == sorted(AFTER_GRPO), exp.stdout[-3000:]
    assert [s for s in ran if s != "r1_zero"] == [s for s in AFTER_GRPO if s != "r1_zero"]  # in DAG order
    assert ran.index("r1_zero") < ran.index("evaluate")
    assert set(stages_skipped(exp.stdout)) == {"data", "base", "sft"}
    assert locked_lr() == 1e-4

    exps = dvc(ws, "exp", "show", "--json", check=True).stdout
    assert "grpo-lr-1e-4" in exps
    params_diff = json.loads(dvc(ws, "params", "diff", "--json", check=True).stdout)
    lr = params_diff["params.yaml"]["grpo.learning_rate"]
    assert (float(lr["old"]), float(lr["new"])) == (3e-05, 1e-4), lr
    metrics_diff = json.loads(dvc(ws, "metrics", "diff", "--json", "--all", check=True).stdout)
    assert "outputs/metrics/grpo.json" in metrics_diff
    assert "grpo_seconds" in metrics_diff["outputs/metrics/grpo.json"]

    again = dvc(ws, "repro")
    assert stages_ran(again.stdout) == []
