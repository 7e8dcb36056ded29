"""Pods that keep their results: a real S3-compatible server (moto's server mode) is the DVC remote and the
MLflow artifact store; a fresh clone runs the flow (pull before, push after each stage), and a second fresh
clone with no shared disk restores every stage from the remote instead of rerunning it: through the flow (no
stage command runs, no new MLflow training run, identical outputs) and through the documented plain DVC
commands (`dvc pull --run-cache`, `dvc repro --pull`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from r1_ops import services
from r1_ops.orchestration import kill_process_group
from r1_pipeline.registry import model_digest
from tests.e2e.servers import session_servers
from tests.e2e.workspace import copy_project, stage_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
STAGES = "data,base,sft"
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3(request, tmp_path_factory):
    port = services.free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    request.addfinalizer(lambda: (kill_process_group(proc.pid, 5, proc), log.close()))
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            time.sleep(0.2)
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=url,
        **{k.lower(): v for k, v in CREDS.items() if k != "AWS_DEFAULT_REGION"},
        region_name="us-east-1",
    )
    client.create_bucket(Bucket="r1-cache")
    return url, client


@pytest.fixture(scope="module")
def mlflow_s3(request, tmp_path_factory, s3):
    url, _ = s3
    base = tmp_path_factory.mktemp("mlflow-s3")
    saved = dict(os.environ)
    os.environ.update({**CREDS, "MLFLOW_S3_ENDPOINT_URL": url})
    try:
        svc = services.start_mlflow(
            f"sqlite:///{base / 'mlflow.db'}",
            "s3://r1-cache/mlflow",
            services.free_port(),
            base / "mlflow.log",
            cwd=base,
        )
    finally:
        os.environ.clear()
        os.environ.update(saved)
    request.addfinalizer(svc.stop)
    services.wait_healthy(svc)
    return svc.url


def r1_run(ws: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("r1")), "run", "--stages", STAGES],
        cwd=ws,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def lock_outs(pod: Path) -> dict[str, dict[str, str]]:
    """Each stage's outs in the clone's dvc.lock: {stage: {path: md5}} (DVC writes dvc.lock whether a stage ran
    or was restored from the run cache)."""
    import yaml

    stages = yaml.safe_load((pod / "dvc.lock").read_text())["stages"]
    return {name: {o["path"]: o["md5"] for o in entry["outs"]} for name, entry in stages.items()}


def stage_runs(client, experiment: str) -> set[str]:
    """The ids of the active MLflow runs the stages trained into (the flow deletes the child run of a stage that
    DVC restored instead of running)."""
    exp = client.get_experiment_by_name(experiment)
    return {
        r.info.run_id for r in client.search_runs([exp.experiment_id], max_results=1000) if "r1.stage" in r.data.tags
    }


def test_second_fresh_clone_restores_every_stage_from_the_remote(request, tmp_path_factory, tmp_path, s3, mlflow_s3):
    from mlflow import MlflowClient

    url, client = s3
    servers = session_servers(request, tmp_path_factory)
    origin = copy_project(tmp_path / "origin", overrides=["project.mlflow_experiment=r1-s3"])
    env = stage_env(
        {
            **CREDS,
            "PREFECT_API_URL": servers.prefect_api_url,
            "MLFLOW_TRACKING_URI": mlflow_s3,
            "R1_DVC_REMOTE_URL": "s3://r1-cache/dvc",
            "R1_DVC_REMOTE_ENDPOINT_URL": url,
        }
    )
    env.pop("MLFLOW_EXPERIMENT_NAME", None)
    pods = []
    for name in ("pod1", "pod2", "pod3"):  # fresh clones: no outputs, no DVC cache, no dvc.lock, nothing shared on disk
        subprocess.run(["git", "clone", "-q", str(origin), str(tmp_path / name)], check=True)
        pods.append(tmp_path / name)
    first = r1_run(pods[0], env)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="r1-cache", Prefix="dvc/").get("Contents", [])]
    assert any("/runs/" in k for k in keys) and len(keys) > 10, keys[:20]
    first_out = first.stdout + first.stderr
    for stage in STAGES.split(","):
        assert re.search(rf"^{stage}\s+ran\b", first_out, re.M), first_out[-3000:]
    ml = MlflowClient(mlflow_s3)
    trained = stage_runs(ml, "r1-s3")
    versions = {(v.name, v.version) for v in ml.search_model_versions()}
    assert len(trained) == len(STAGES.split(",")) and versions, (trained, versions)

    # pod2: the same flow in a second fresh clone. Every stage comes back from the remote (DVC's run cache plus
    # the objects it names, `dvc repro --pull`); no stage's command runs, no MLflow training run or model version
    # appears, and the outputs are pod1's, byte for byte.
    second = r1_run(pods[1], env)
    second_out = second.stdout + second.stderr
    assert "Running stage" not in second_out, second_out[-4000:]
    for stage in STAGES.split(","):
        assert re.search(rf"^{stage}\s+skipped \(restored from DVC run cache\)", second_out, re.M), second_out[-3000:]
    assert stage_runs(ml, "r1-s3") == trained
    assert {(v.name, v.version) for v in ml.search_model_versions()} == versions

    def runs(pod):
        return {p.relative_to(pod / ".dvc/cache/runs") for p in (pod / ".dvc/cache/runs").rglob("*") if p.is_file()}

    assert runs(pods[0]) and runs(pods[0]) <= runs(pods[1])
    assert lock_outs(pods[1]) == lock_outs(pods[0])
    assert model_digest(pods[1] / "outputs/models/sft") == model_digest(pods[0] / "outputs/models/sft")
    for metrics in ("outputs/metrics/sft.json", "outputs/data/stats.json"):
        assert (pods[1] / metrics).read_bytes() == (pods[0] / metrics).read_bytes(), metrics
    assert json_status(pods[1], env, STAGES.split(",")) == {}  # restored means up to date

    # pod3: the documented commands without Prefect (infra/README.md, "Results that outlive the pod")
    dvc = [str(Path(sys.executable).with_name("dvc"))]
    for args in (
        ["remote", "add", "--local", "-d", "-f", "r1-shared", "s3://r1-cache/dvc"],
        ["remote", "modify", "--local", "r1-shared", "endpointurl", url],
        ["pull", "--run-cache", "--allow-missing"],
    ):
        subprocess.run(dvc + args, cwd=pods[2], env=env, check=True, capture_output=True, timeout=300)
    third = subprocess.run(
        dvc + ["repro", "--pull", STAGES.split(",")[-1]],
        cwd=pods[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    third_out = third.stdout + third.stderr
    assert third.returncode == 0 and "Running stage" not in third_out, third_out[-4000:]
    assert sorted(re.findall(r"^Stage '(\w+)' is cached - skipping run", third_out, re.M)) == sorted(STAGES.split(","))
    assert lock_outs(pods[2]) == lock_outs(pods[0])

    # the MLflow artifacts (the sft model registered by pod1's run) live in the S3 bucket
    ml_keys = [o["Key"] for o in client.list_objects_v2(Bucket="r1-cache", Prefix="mlflow/").get("Contents", [])]
    assert any(k.endswith("model.safetensors") for k in ml_keys), ml_keys[:20]


def json_status(pod: Path, env: dict, stages: list[str]) -> dict:
    import json

    out = subprocess.run(
        [str(Path(sys.executable).with_name("dvc")), "status", "--json", *stages],
        cwd=pod,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(out.stdout.strip() or "{}")
