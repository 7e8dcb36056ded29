"""Trustworthy reruns with real processes: one run of a stage per workspace (flock), MLflow status on SIGTERM
and on a crash, exit 2 through `accelerate launch`, and the Prefect flow killed with -9 (its stage tree dies
within seconds, its runs are closed, the next flow starts at once without waiting out the dead flow's lease).

Real components throughout: `python -m tasks.<stage>` subprocesses on the micro profile, real SIGKILL/SIGTERM,
an MLflow SQLite store, the Prefect flow against the session's real Prefect server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest
import yaml

from r1_pipeline.config import apply_overrides, profile_dict
from r1_pipeline.stage import HolderLock, process_alive
from tests.conftest import stage_env
from tests.e2e.workspace import ROOT, copy_project
from tests.e2e.workspace import stage_env as flow_env

pytestmark = pytest.mark.slow
LONG_BASE = "base.pretrain_steps=100000"  # far longer than any test waits: the stage is always caught running


def mlflow_client():
    from mlflow import MlflowClient

    return MlflowClient(os.environ["MLFLOW_TRACKING_URI"])


def stage_runs(experiment: str, stage: str) -> list:
    client = mlflow_client()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`r1.stage` = '{stage}'", order_by=["attributes.start_time DESC"]
    )


def start_stage(workdir: Path, stage: str, *args: str, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", f"tasks.{stage}", *args],
            cwd=workdir,
            env=stage_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def lock_holder(path: Path) -> dict | None:
    """The record of a held lock (None while free), probed with a shared flock that changes nothing."""
    lock = HolderLock(path)
    return lock.holder() if lock.held() else None


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: the process exited {proc.returncode}\n{log.read_text()[-4000:] if log else ''}")
        time.sleep(0.2)
    pytest.fail(f"{what}: not within {timeout:.0f}s\n{log.read_text()[-4000:] if log else ''}")


def training_started(experiment: str, stage: str, since: float):
    """A run of the stage started after `since` (epoch s) is RUNNING with its params logged: tracking is
    open, the body runs. (`since`: a run a SIGKILLed stage left RUNNING is not this one.)"""
    for run in stage_runs(experiment, stage):
        if (
            run.info.status == "RUNNING"
            and run.info.start_time >= since * 1000
            and any(k.startswith(f"{stage}.") for k in run.data.params)
        ):
            return run
    return None


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


# ---------------------------------------------------------------------------------- stages started by hand


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    wd = tmp_path_factory.mktemp("lifecycle")
    experiment = f"lifecycle-{uuid.uuid4().hex[:8]}"
    (wd / "params.yaml").write_text(
        yaml.safe_dump(apply_overrides(profile_dict("micro"), [f"project.mlflow_experiment={experiment}"]))
    )
    out = subprocess.run(
        [sys.executable, "-m", "tasks.data"], cwd=wd, env=stage_env(), capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return wd, experiment


def test_second_run_of_a_stage_exits_2_naming_the_holder_and_kill_9_leaves_no_stale_lock(workdir, tmp_path):
    wd, experiment = workdir
    lock = wd / ".r1" / "locks" / "base.lock"
    since = time.time()
    first = start_stage(wd, "base", "--set", LONG_BASE, log=tmp_path / "first.log")
    try:
        record = wait_for(
            lambda: (lock_holder(lock) or {}).get("pid") == first.pid and lock_holder(lock),
            120,
            "the first run never held the lock",
            first,
            tmp_path / "first.log",
        )
        assert record["command"] == f"python -m tasks.base --set {LONG_BASE}" and record["host"]
        start = time.monotonic()
        second = subprocess.run(
            [sys.executable, "-m", "tasks.base"], cwd=wd, env=stage_env(), capture_output=True, text=True, timeout=120
        )
        seconds = time.monotonic() - start
        clock = time.strftime("%H:%M:%S", time.localtime(record["started"]))
        assert second.returncode == 2, (second.stdout[-2000:], second.stderr[-2000:])
        assert (
            f"error: base: already running in this workspace (pid {first.pid} since {clock}, "
            f"python -m tasks.base --set {LONG_BASE}); wait for it or kill it"
        ) in second.stderr
        # at once: only the imports (several seconds on 2 busy cores), no waiting for the holder
        assert seconds < 45, seconds
        assert first.poll() is None, "the second run must not disturb the first"
        assert lock_holder(lock)["pid"] == first.pid
        first_run = wait_for(
            lambda: training_started(experiment, "base", since),
            180,
            "training never started",
            first,
            tmp_path / "first.log",
        )
    finally:
        kill_group(first)  # kill -9 of the holder (and its process group)
    assert lock_holder(lock) is None, "a killed holder must not leave the lock held"
    third = subprocess.run(
        [sys.executable, "-m", "tasks.base"], cwd=wd, env=stage_env(), capture_output=True, text=True, timeout=300
    )
    assert third.returncode == 0, third.stderr[-3000:]
    assert f"base: the previous run here (pid {first.pid} since" in third.stdout  # it knows it died
    assert lock.read_text() == ""  # a clean exit leaves no holder record behind
    # ... and ends the MLflow run the killed holder left RUNNING (nobody else ever would)
    assert f"base: ended its MLflow run {first_run.info.run_id} (still RUNNING) as KILLED" in third.stdout
    dead = mlflow_client().get_run(first_run.info.run_id)
    assert dead.info.status == "KILLED" and dead.data.tags["r1.status"] == "died"


def test_sigterm_ends_the_stage_run_killed(workdir, tmp_path):
    wd, experiment = workdir
    log = tmp_path / "stage.log"
    since = time.time()
    proc = start_stage(wd, "base", "--set", LONG_BASE, log=log)
    try:
        run = wait_for(lambda: training_started(experiment, "base", since), 180, "training never started", proc, log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM, log.read_text()[-3000:]
    finally:
        kill_group(proc)
    assert "error: base: terminated (SIGTERM)" in log.read_text()
    after = mlflow_client().get_run(run.info.run_id)
    assert after.info.status == "KILLED" and after.data.tags["r1.status"] == "killed"
    assert lock_holder(wd / ".r1" / "locks" / "base.lock") is None


def test_an_exception_in_the_stage_ends_its_run_failed(workdir, tmp_path):
    wd, experiment = workdir
    for rel in ("params.yaml", "outputs/data/corpus.jsonl"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes((wd / rel).read_bytes())
    with open(tmp_path / "outputs/data/corpus.jsonl", "a") as f:
        f.write("{not json\n")  # a corrupt input: not a StageError, a crash
    before = {r.info.run_id for r in stage_runs(experiment, "base")}
    out = subprocess.run(
        [sys.executable, "-m", "tasks.base"], cwd=tmp_path, env=stage_env(), capture_output=True, text=True, timeout=300
    )
    assert out.returncode not in (0, 2), (out.returncode, out.stderr[-3000:])
    new = [r for r in stage_runs(experiment, "base") if r.info.run_id not in before]
    assert len(new) == 1, out.stderr[-3000:]
    assert new[0].info.status == "FAILED" and new[0].data.tags["r1.status"] == "failed"


def test_exit_2_survives_accelerate_launch(tmp_path):
    """Two DeepSpeed ranks (torchrun, CPU/gloo) fail on a missing input: accelerate says 1, the stage says 2."""
    raw = apply_overrides(
        profile_dict("micro"),
        ["sft.num_processes=2", "sft.deepspeed=zero2", f"project.mlflow_experiment=lifecycle-{uuid.uuid4().hex[:8]}"],
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    env = stage_env()
    env.pop("MLFLOW_EXPERIMENT_NAME", None)
    out = subprocess.run(
        [sys.executable, "-m", "tasks.sft"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert "sft: launching 2 processes" in out.stdout and "--use_deepspeed" in out.stdout
    assert "error: sft: input outputs/models/base not found" in out.stderr
    assert "ChildFailedError" in out.stderr  # accelerate/torchrun did fail with its own exit code 1 ...
    assert out.returncode == 2, out.stderr[-3000:]  # ... and the launcher turned it back into 2
    assert "a rank exited 2" in out.stderr
    assert not (tmp_path / "outputs" / "models").exists()


# ----------------------------------------------------------------------------------------- the Prefect flow


FLOW_EXPERIMENT = f"lifecycle-flow-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def flow_ws(tmp_path_factory):
    return copy_project(
        tmp_path_factory.mktemp("lifecycle-flow") / "ws", overrides=[f"project.mlflow_experiment={FLOW_EXPERIMENT}"]
    )


@pytest.fixture(scope="module", autouse=True)
def drain_prefect_logs():
    """Send the in-process flows' queued logs and events while the session's Prefect server still runs: at
    interpreter exit (after the server is stopped) Prefect's workers would retry against it for a minute."""
    yield
    if "prefect" in sys.modules:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        for worker in (APILogWorker, EventsWorker):
            worker.drain_all(timeout=30)


def run_flow(**kwargs):
    from flows.pipeline import r1_pipeline

    state = r1_pipeline(return_state=True, **kwargs)
    try:
        return str(state.state_details.flow_run_id), state.result()
    except BaseException as exc:  # noqa: BLE001
        return str(state.state_details.flow_run_id), exc


@pytest.fixture(scope="module")
def killed_flow(prefect_api, flow_ws, tmp_path_factory):
    """The flow in a subprocess, kill -9 while `base` trains: what is left 10 s later."""
    log = tmp_path_factory.mktemp("killed-flow") / "flow.log"
    code = (
        "from flows.pipeline import r1_pipeline\n"
        f"r1_pipeline(stages=['data', 'base'], overrides=[{LONG_BASE!r}], project_dir={str(flow_ws)!r}, "
        "retries=0, kill_grace_s=3)\n"
    )
    env = flow_env({"PREFECT_API_URL": prefect_api, "PYTHONPATH": str(ROOT)})
    since = time.time()
    with open(log, "w") as out:
        flow = subprocess.Popen(
            [sys.executable, "-c", code], cwd=flow_ws, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    stage_lock = flow_ws / ".r1" / "locks" / "base.lock"
    try:
        record = wait_for(lambda: lock_holder(stage_lock), 300, "base never started under the flow", flow, log)
        child = wait_for(lambda: training_started(FLOW_EXPERIMENT, "base", since), 180, "base never trained", flow, log)
        workspace = json.loads((flow_ws / ".r1" / "locks" / "workspace.lock").read_text())
        tree = psutil.Process(flow.pid).children(recursive=True)
        stage_pgid = os.getpgid(record["pid"])
        assert record["pid"] in {p.pid for p in tree}
        flow.kill()  # kill -9 of the flow process
        flow.wait()
        killed_at = time.monotonic()
        left = [p.pid for p in tree]
        while time.monotonic() - killed_at < 10 and [p for p in left if process_alive(p)]:
            time.sleep(0.1)
        survivors = [p for p in left if process_alive(p)]
        gone_after = time.monotonic() - killed_at
        status = mlflow_client().get_run(child.info.run_id)
        return {
            "flow": flow,
            "log": log,
            "record": record,
            "child": child,
            "survivors": survivors,
            "gone_after": gone_after,
            "status": status,
            "workspace": workspace,
            "stage_pgid": stage_pgid,
            "tree": left,
        }
    finally:
        if flow.poll() is None:
            flow.kill()
            flow.wait()


def test_kill_9_of_the_flow_takes_the_stage_tree_down_within_10s(killed_flow):
    k = killed_flow
    assert not k["survivors"], (k["survivors"], k["log"].read_text()[-3000:])
    assert k["gone_after"] < 10
    # nothing of the stage's process group either (dvc, sh, the stage, its workers); zombies waiting for
    # init to reap them are dead already
    assert not [
        p
        for p in psutil.process_iter(["pid", "status"])
        if p.info["status"] != psutil.STATUS_ZOMBIE and _pgid(p.pid) == k["stage_pgid"]
    ]
    # not RUNNING: the stage's watchdog closed it before killing itself
    assert k["status"].info.status == "KILLED" and k["status"].data.tags.get("r1.status") == "orphaned", (
        k["status"].info.status,
        k["status"].data.tags,
    )
    assert k["workspace"]["pid"] == k["flow"].pid and k["workspace"]["lease_id"]


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


@pytest.fixture(scope="module")
def next_flow(killed_flow, prefect_api, flow_ws):
    """The next flow in the same checkout, right after the kill: (active slots before it, results, seconds)."""
    from prefect.client.orchestration import get_client

    from flows.pipeline import workspace_limit_name

    with get_client(sync_client=True) as client:
        before = client.read_global_concurrency_limit_by_name(workspace_limit_name(flow_ws.resolve())).active_slots
    start = time.monotonic()
    _, results = run_flow(
        stages=["data", "base"],
        overrides=["base.pretrain_steps=6"],
        project_dir=str(flow_ws),
        retries=0,
        workspace_wait_s=45,
    )
    return before, results, time.monotonic() - start


def test_the_next_flow_releases_the_dead_flows_lease_and_runs_at_once(killed_flow, next_flow, flow_ws):
    """Without the recovery the dead flow's slot lease (300 s) would hold the workspace limit: a 45 s wait fails."""
    from prefect.client.orchestration import get_client

    from flows.pipeline import workspace_limit_name

    dead = killed_flow["workspace"]
    before, results, seconds = next_flow
    assert before == 1  # the dead flow's lease still held the slot when the next flow started
    assert not isinstance(results, BaseException), repr(results)
    assert [r["status"] for r in results] == ["skipped", "ran"]
    assert seconds < 240  # flow start, dvc, a 6-step base: no lease wait (that fails at 45 s)
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(workspace_limit_name(flow_ws.resolve())).active_slots == 0
        dead_run = client.read_flow_run(dead["flow_run_id"])
        assert dead_run.state.is_crashed(), dead_run.state
    client = mlflow_client()
    parent = client.get_run(dead["parent_run_id"])
    assert parent.info.status == "KILLED" and parent.data.tags["r1.status"] == "orphaned"
    assert (flow_ws / ".r1" / "locks" / "workspace.lock").read_text() == ""  # clean exit: no record left


def test_exit_2_through_accelerate_is_not_retried_by_the_flow(next_flow, prefect_api, flow_ws):
    """sft (on the base model `next_flow` trained) on two DeepSpeed ranks, liger asked for but not installed:
    StageError in each rank -> exit 2 through
    accelerate -> dvc "exited with 2" -> not retried (a 30 s backoff would show)."""
    from flows.pipeline import PipelineFailed

    start = time.monotonic()
    _, exc = run_flow(
        stages=["sft"],
        overrides=["sft.num_processes=2", "sft.deepspeed=zero2", "sft.use_liger_kernel=true"],
        project_dir=str(flow_ws),
        retries=2,
        retry_delay_s=30,
    )
    assert isinstance(exc, PipelineFailed), repr(exc)
    res = exc.results[0]
    assert res["error"] == "exit 2" and res["attempts"] == 1, res
    assert "not retried" in str(exc) and "a rank exited 2" in str(exc)
    assert time.monotonic() - start < 150
    child = mlflow_client().get_run(res["run_id"])
    assert child.info.status == "FAILED" and child.data.tags["r1.exit_code"] == "2"


def test_a_sigkilled_stage_is_marked_failed_by_the_flow(next_flow, prefect_api, flow_ws):
    """An OOM kill of the stage process itself: the flow sees the exit status and ends the child run FAILED."""
    lock = flow_ws / ".r1" / "locks" / "base.lock"
    killed: dict = {}
    since = time.time()

    def killer():
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            record = lock_holder(lock)
            if record and training_started(FLOW_EXPERIMENT, "base", since):
                os.kill(record["pid"], signal.SIGKILL)  # the stage process only, as the OOM killer would
                killed["pid"] = record["pid"]
                return
            time.sleep(0.2)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    _, exc = run_flow(stages=["base"], overrides=[LONG_BASE], project_dir=str(flow_ws), retries=0)
    t.join(5)
    assert killed, "the stage was never caught training"
    from flows.pipeline import PipelineFailed

    assert isinstance(exc, PipelineFailed), repr(exc)
    res = exc.results[0]
    child = mlflow_client().get_run(res["run_id"])
    assert child.info.status == "FAILED" and child.data.tags["r1.status"] == "failed"
    assert child.data.tags["r1.exit_code"] in ("-9", "137"), child.data.tags
    assert lock_holder(lock) is None
