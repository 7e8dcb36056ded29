"""End to end, as a user runs it: a real `prefect server start` and `mlflow server` (SQLite) on free ports, the
`local` deployment from prefect.yaml, a process worker, `prefect deployment run r1-pipeline/local --watch` on
the micro profile; then the result through the MLflow API (parent run, one child per stage, the registered
model and its alias, the report) and through DVC (clean status, `dvc push` to the local remote).
Also: `prefect flow-run cancel` of a running deployment run kills the stage's whole process tree."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time

import psutil
import pytest
import yaml

from r1_ops.orchestration import bin_path, kill_process_group
from tests.e2e.servers import session_servers
from tests.e2e.workspace import copy_project, dvc, stage_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EXPERIMENT = "r1-e2e"
STAGES = ["data", "base", "sft", "grpo", "r1_zero", "rejection", "distill", "evaluate", "report"]
UUID = re.compile(r"UUID: ([0-9a-f-]{36})")


def prefect_cli(args: list[str], env: dict, cwd, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [bin_path("prefect"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def deployment(request, tmp_path_factory):
    """Servers, a micro workspace, the work pool, `prefect deploy -n local` and a running process worker."""
    servers = session_servers(request, tmp_path_factory)
    base = tmp_path_factory.mktemp("e2e")
    ws = copy_project(base / "ws", overrides=[f"project.mlflow_experiment={EXPERIMENT}"])
    env = stage_env(
        {
            "PREFECT_API_URL": servers.prefect_api_url,
            "PREFECT_HOME": str(base / "prefect-client-home"),
            "MLFLOW_TRACKING_URI": servers.mlflow_uri,
            "R1_PROJECT_ROOT": str(ws),
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        }
    )
    env.pop("MLFLOW_EXPERIMENT_NAME", None)
    pool = prefect_cli(["work-pool", "create", "local-process", "--type", "process", "--overwrite"], env, ws)
    assert pool.returncode == 0, pool.stdout + pool.stderr
    deploy = prefect_cli(["--no-prompt", "deploy", "--name", "local"], env, ws, timeout=180)
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
    log = open(base / "worker.log", "w")
    worker = subprocess.Popen(
        [bin_path("prefect"), "worker", "start", "--pool", "local-process"],
        cwd=ws,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    request.addfinalizer(lambda: (kill_process_group(worker.pid, 10, worker), log.close()))
    return {"ws": ws, "env": env, "servers": servers, "worker": worker, "worker_log": base / "worker.log"}


def flow_run_state(flow_run_id: str, env: dict) -> str:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
        with get_client(sync_client=True) as client:
            return client.read_flow_run(flow_run_id).state.type.value


def stage_processes(ws) -> list[psutil.Process]:
    """Processes of a pipeline stage running in `ws` (dvc repro, the stage's python) — not the worker."""
    found = []
    for p in psutil.process_iter(["cmdline", "cwd"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if p.info["cwd"] == str(ws) and (
                "tasks." in cmd or "dvc repro" in cmd or cmd.endswith("repro --single-item data")
            ):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_cancel_kills_the_running_stage(deployment):
    ws, env = deployment["ws"], deployment["env"]
    out = prefect_cli(
        ["deployment", "run", "r1-pipeline/local", "--param", 'stages=["data", "base"]', "--param", "retries=0"],
        env,
        ws,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    flow_run_id = UUID.search(out.stdout).group(1)
    # base, not data: micro's data stage takes seconds and can finish before the cancel reaches the worker;
    # base pretrains for about half a minute
    deadline = time.time() + 240
    while not [p for p in stage_processes(ws) if "tasks.base" in " ".join(p.cmdline())]:
        assert time.time() < deadline, "the base stage never started:\n" + deployment["worker_log"].read_text()[-3000:]
        time.sleep(0.3)
    seen = {p.pid for p in stage_processes(ws)}
    cancel = prefect_cli(["flow-run", "cancel", flow_run_id], env, ws)
    assert cancel.returncode == 0, cancel.stdout + cancel.stderr
    deadline = time.time() + 90
    while flow_run_state(flow_run_id, env) not in ("CANCELLED", "CRASHED", "FAILED", "COMPLETED"):
        assert time.time() < deadline, flow_run_state(flow_run_id, env)
        time.sleep(1)
    assert flow_run_state(flow_run_id, env) == "CANCELLED"
    time.sleep(1)
    assert not [pid for pid in seen if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert stage_processes(ws) == []
    assert psutil.Process(deployment["worker"].pid).children(recursive=True) == []
    assert sorted(yaml.safe_load((ws / "dvc.lock").read_text())["stages"]) == ["data"]  # base was killed, not locked
    # data finished: forget it (lock and run cache) so the full run below starts from a workspace where no stage ran
    (ws / "dvc.lock").unlink()
    shutil.rmtree(ws / ".dvc" / "cache" / "runs", ignore_errors=True)


@pytest.fixture(scope="module")
def full_run(deployment):
    ws, env = deployment["ws"], deployment["env"]
    start = time.time()
    out = prefect_cli(
        ["deployment", "run", "r1-pipeline/local", "--watch", "--watch-timeout", "1500"], env, ws, timeout=1600
    )
    seconds = time.time() - start
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:] + deployment["worker_log"].read_text()[-5000:]
    print(f"micro pipeline through the deployment: {seconds:.0f}s")
    return UUID.search(out.stdout).group(1)


def test_deployment_run_is_tracked_in_mlflow(deployment, full_run):
    from mlflow import MlflowClient

    client = MlflowClient(deployment["servers"].mlflow_uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    parents = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`prefect.flow_run_id` = '{full_run}' and tags.`r1.pipeline` = 'parent'",
    )
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["r1.profile"] == "micro"
    assert parent.data.metrics["stages_ran"] == len(STAGES)
    kids = client.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    by_stage = {k.data.tags["r1.stage"]: k for k in kids}
    assert sorted(by_stage) == sorted(STAGES) and len(kids) == len(STAGES)
    for stage, run in by_stage.items():
        assert run.info.status == "FINISHED", stage
        assert run.data.tags["prefect.flow_run_id"] == full_run
        assert any(k.startswith(f"{stage}.") or k.startswith("project.") for k in run.data.params), stage
        assert f"{stage}_seconds" in run.data.metrics, stage
        # lineage: the stage's new dvc.lock entry (deps/outs hashes), the flow run's URL, the code's state
        outs = json.loads(run.data.tags["dvc.lock.outs"])
        assert outs and all(re.fullmatch(r"[0-9a-f]{32}(\.dir)?", md5) for md5 in outs.values()), stage
        assert run.data.tags["prefect.flow_run_url"].endswith(full_run) and run.data.tags["git.dirty"] in (
            "true",
            "false",
        )
    # the trainers' step metrics reach the child runs (report_to=["mlflow"] inside the resumed run)
    assert (
        len(
            client.get_metric_history(by_stage["grpo"].info.run_id, "train_loss")
            or client.get_metric_history(by_stage["grpo"].info.run_id, "loss")
        )
        >= 1
    )

    # the final model in the registry: registered by the grpo run that trained it, tagged with its evaluation
    # and the promotion decision; the evaluate run holds no copy of the weights
    name = f"{EXPERIMENT}-micro-grpo"
    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.run_id == by_stage["grpo"].info.run_id
    assert champion.tags["eval.run_id"] == by_stage["evaluate"].info.run_id
    bench = champion.tags["eval.primary_benchmark"]
    assert f"eval.{bench}.pass_at_1" in champion.tags and champion.tags[f"promotion.{bench}.decision"] == "promoted"
    assert champion.tags["r1.parent_model"].startswith(f"{EXPERIMENT}-micro-sft/")
    assert not client.list_artifacts(by_stage["evaluate"].info.run_id, "models")

    # the report, published as artifacts of the report stage's run
    report = {a.path for a in client.list_artifacts(by_stage["report"].info.run_id, "report")}
    assert "report/report.md" in report

    # the Prefect side: the result table and the link to the parent run
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: deployment["env"]["PREFECT_API_URL"]}):
        with get_client(sync_client=True) as pc:
            from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

            arts = {
                a.key: a
                for a in pc.read_artifacts(
                    artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[full_run])), limit=50
                )
            }
    for stage in STAGES:
        assert f"| {stage} | ran |" in arts["r1-stage-results"].data
    assert parent.info.run_id in arts["r1-mlflow-run"].data


def test_workspace_is_clean_and_pushes_to_the_remote(deployment, full_run):
    ws = deployment["ws"]
    assert json.loads(dvc(ws, "status", "--json", check=True).stdout or "{}") == {}
    push = dvc(ws, "push", check=True)
    assert "pushed" in push.stdout.lower() or "file" in push.stdout.lower(), push.stdout
    remote = ws / ".dvc-remote"
    assert sum(1 for p in remote.rglob("*") if p.is_file()) > 10
    assert json.loads(dvc(ws, "status", "--cloud", "--json", check=True).stdout or "{}") == {}
