"""The MLflow UI shows the pipeline's runs: headless Chromium against the real `mlflow server` (SQLite).

The runs are logged the way the flow logs them (a parent tagged `r1.pipeline=parent`, one child per stage with
`mlflow.parentRunId`, params and metrics), so the test needs no training. Chromium renders the single-page app
(`--virtual-time-budget` lets its JavaScript fetch the runs) and dumps the DOM; a screenshot of the runs page
stays in the test's tmp dir for a human to look at.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.e2e.servers import session_servers

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.fail("headless Chromium is not installed: `apt-get install -y chromium chromium-driver` (.ci/run does)")


def browse(url: str, profile: Path, *, screenshot: Path | None = None, budget_ms: int = 20000) -> str:
    """The page's DOM after its scripts ran (or write a screenshot); text only, tags stripped."""
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1400,900",
        f"--virtual-time-budget={budget_ms}",
    ]
    cmd += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    html = re.sub(r"<script.*?</script>|<style.*?</style>", " ", out.stdout, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


@pytest.fixture(scope="module")
def pipeline_runs(request, tmp_path_factory):
    from mlflow import MlflowClient

    servers = session_servers(request, tmp_path_factory)
    client = MlflowClient(servers.mlflow_uri)
    tag = uuid.uuid4().hex[:8]
    exp_id = client.create_experiment(f"r1-ui-{tag}")
    parent = client.create_run(
        exp_id, run_name=f"pipeline ui-{tag}", tags={"r1.pipeline": "parent", "r1.profile": "micro"}
    )
    client.log_param(parent.info.run_id, "override.grpo.learning_rate", "1e-4")
    children = {}
    for stage, seconds in (("data", 7.5), ("grpo", 16.9), ("evaluate", 23.0)):
        run = client.create_run(
            exp_id, run_name=stage, tags={"mlflow.parentRunId": parent.info.run_id, "r1.stage": stage}
        )
        client.log_param(run.info.run_id, f"{stage}.marker", f"ui-{tag}")
        client.log_metric(run.info.run_id, f"{stage}_seconds", seconds)
        client.set_terminated(run.info.run_id, "FINISHED")
        children[stage] = run.info.run_id
    client.set_terminated(parent.info.run_id, "FINISHED")
    return servers.mlflow_uri, exp_id, parent.info.run_id, children, tag


def test_runs_page_lists_the_pipeline_run(pipeline_runs, tmp_path):
    uri, exp_id, parent_id, _, tag = pipeline_runs
    text = browse(f"{uri}/#/experiments/{exp_id}/runs", tmp_path / "profile")
    assert f"pipeline ui-{tag}" in text, text[:3000]
    assert "4 matching runs" in text, text[:3000]  # the parent and its three stage runs
    shot = tmp_path / "mlflow-runs.png"
    browse(f"{uri}/#/experiments/{exp_id}/runs", tmp_path / "profile", screenshot=shot)
    assert shot.exists() and shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stage_run_page_shows_its_params_and_metrics(pipeline_runs, tmp_path):
    uri, exp_id, _, children, tag = pipeline_runs
    text = browse(f"{uri}/#/experiments/{exp_id}/runs/{children['grpo']}", tmp_path / "profile")
    assert "grpo_seconds" in text and "16.9" in text, text[:3000]
    assert "grpo.marker" in text and f"ui-{tag}" in text, text[:3000]


def test_experiment_opens_in_the_training_view(pipeline_runs, tmp_path):
    """The experiment kind the stages and the flow set (tracking.set_experiment_kind): MLflow 3 opens the
    experiment on its runs table, with the stage runs, not on the GenAI traces view; a kind chosen by someone
    else is left alone."""
    from mlflow import MlflowClient

    from flows.pipeline import UI_TRAINING_VIEW, mlflow_run_url
    from r1_pipeline.tracking import EXPERIMENT_KIND_TAG, TRAINING_KIND, set_experiment_kind

    uri, exp_id, parent_id, _, tag = pipeline_runs
    client = MlflowClient(uri)
    set_experiment_kind(client, exp_id)
    assert client.get_experiment(exp_id).tags[EXPERIMENT_KIND_TAG] == TRAINING_KIND
    # MLflow 3.17 chooses the view by a user-wide switch (GenAI by default) unless the link says otherwise:
    # the flow's links (mlflow_run_url) carry the training view's query parameter
    genai = browse(f"{uri}/#/experiments/{exp_id}", tmp_path / "profile")
    assert f"pipeline ui-{tag}" not in genai and "Traces" in genai, genai[:3000]
    link = mlflow_run_url(uri, exp_id, parent_id)
    assert link.endswith(UI_TRAINING_VIEW)
    text = browse(f"{uri}/#/experiments/{exp_id}/runs?{UI_TRAINING_VIEW}", tmp_path / "profile2")
    assert f"pipeline ui-{tag}" in text and "matching runs" in text, text[:3000]
    shot = tmp_path / "mlflow-experiment.png"
    browse(f"{uri}/#/experiments/{exp_id}/runs?{UI_TRAINING_VIEW}", tmp_path / "profile2", screenshot=shot)
    assert shot.stat().st_size > 10_000
    run_page = browse(link, tmp_path / "profile3")
    assert "Overview" in run_page and "r1.pipeline" in run_page, run_page[:3000]
    other = client.create_experiment(f"r1-ui-genai-{tag}", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    set_experiment_kind(client, other)
    assert client.get_experiment(other).tags[EXPERIMENT_KIND_TAG] == "genai_development"


def test_grpo_run_page_shows_the_rl_curves_first(pipeline_runs, tmp_path):
    """A GRPO run's model-metrics tab: sections by key prefix in ASCII order, so TRL's clip_ratio/* would come
    first; HeadlineMetricsCallback logs reward, accuracy and completion length as RL/*, the first section."""
    import mlflow
    from transformers import TrainerState

    from r1_pipeline.grpo import HeadlineMetricsCallback

    uri, exp_id, _, _, tag = pipeline_runs
    trl_log = {  # the keys GRPOTrainer logs each step (outputs/logs/grpo.jsonl)
        "clip_ratio/high_max": 0.0,
        "clip_ratio/low_mean": 0.0,
        "completions/mean_length": 28.0,
        "entropy": 0.4,
        "kl": 0.0,
        "loss": 0.01,
        "reward": 0.9,
        "reward_std": 0.3,
        "rewards/accuracy/mean": 0.6,
        "rewards/format/mean": 0.3,
    }
    mlflow.set_tracking_uri(uri)
    callback, state = HeadlineMetricsCallback(), TrainerState()
    with mlflow.start_run(experiment_id=exp_id, run_name=f"grpo-ui-{tag}") as run:
        for step in (1, 2, 3):
            logs = {k: v + 0.01 * step for k, v in trl_log.items()}
            mlflow.log_metrics(logs, step=step)  # as TRL's MLflowCallback does
            state.global_step = step
            callback.on_log(None, state, None, logs=logs)
    mlflow.flush_async_logging()
    history = mlflow.MlflowClient(uri).get_metric_history(run.info.run_id, "RL/completion_length")
    assert [(m.step, round(m.value, 2)) for m in history] == [(1, 28.01), (2, 28.02), (3, 28.03)]
    page = f"{uri}/#/experiments/{exp_id}/runs/{run.info.run_id}/model-metrics?workflowType=machine_learning"
    text = browse(page, tmp_path / "profile")
    sections = re.findall(r"(\S+) \((\d+)\) Add chart", text)
    assert sections and sections[0] == ("RL", "3"), sections
    assert [name for name, _ in sections].index("clip_ratio") > 0, sections
    shot = tmp_path / "mlflow-grpo-run.png"
    browse(page, tmp_path / "profile", screenshot=shot)
    assert shot.stat().st_size > 10_000
