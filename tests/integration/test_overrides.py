"""`r1 run --set KEY=VALUE` runs on a temporary overlay of params.yaml: the stages (and DVC) see the override
while the run runs, params.yaml has its exact bytes back afterwards (success, failure, SIGTERM; after a kill -9,
at the start of the next run), and DVC's records stay truthful (dvc.lock and the run cache hold the override,
the file's value is never served from the override's cache).

A toy DVC project with the real params schema, the real `r1 run` command, a real Prefect server and MLflow: its
stages are a few lines that read `data.seed` from params.yaml and log what they saw into the MLflow run the flow
made for them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from r1_ops import orchestration as orch
from tests.e2e.workspace import alive, dvc, micro_params, stage_env

pytestmark = pytest.mark.slow

EXPERIMENT = "r1-overrides-test"

SEED_STAGE = """
    import os, sys, time, yaml, mlflow
    seed = yaml.safe_load(open("params.yaml"))["data"]["seed"]
    with open("pid.txt", "w") as f:
        f.write(str(os.getpid()))
    with mlflow.start_run():  # the flow's child run (MLFLOW_RUN_ID)
        mlflow.log_param("seen.data.seed", seed)
    print(f"stage saw data.seed={seed}", flush=True)
    if seed == 13:
        sys.exit(3)  # a stage that fails with this value
    if seed == 11:
        time.sleep(600)  # a long stage, for the signals
    open("seed.out", "w").write(str(seed))
"""


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    ws = tmp_path_factory.mktemp("overrides")
    (ws / "params.yaml").write_text(micro_params([f"project.mlflow_experiment={EXPERIMENT}"]))
    (ws / "seed.py").write_text(textwrap.dedent(SEED_STAGE))
    (ws / "dvc.yaml").write_text(
        yaml.safe_dump(
            {
                "stages": {
                    "seed": {
                        "cmd": "python seed.py",
                        "deps": ["seed.py"],
                        "params": ["data.seed"],
                        "outs": ["seed.out"],
                    },
                }
            },
            sort_keys=False,
        )
    )
    subprocess.run([orch.bin_path("dvc"), "init", "--no-scm", "-q"], cwd=ws, check=True, env=stage_env())
    return ws


def r1_run(ws: Path, prefect_api: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [orch.bin_path("r1"), "run", "--stages", "seed", "--retries", "0", *args],
        cwd=ws,
        env=stage_env({"PREFECT_API_URL": prefect_api}),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_r1_run(ws: Path, prefect_api: str, log: Path, *args: str) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(
            [orch.bin_path("r1"), "run", "--stages", "seed", "--retries", "0", *args],
            cwd=ws,
            env=stage_env({"PREFECT_API_URL": prefect_api}),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def latest_stage_run(since: float):
    from mlflow import MlflowClient

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string="tags.`r1.stage` = 'seed'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    assert runs and runs[0].info.start_time >= since * 1000 - 1000, "no MLflow run of the stage since the start"
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    return runs[0], parent


def file_seed(ws: Path) -> int:
    return yaml.safe_load((ws / "params.yaml").read_text())["data"]["seed"]


def locked_seed(ws: Path) -> int:
    return yaml.safe_load((ws / "dvc.lock").read_text())["stages"]["seed"]["params"]["params.yaml"]["data.seed"]


def wait_for_stage(ws: Path, proc: subprocess.Popen, log: Path, since: float) -> int:
    deadline = time.time() + 180
    while time.time() < deadline:
        pid_file = ws / "pid.txt"
        if pid_file.exists() and pid_file.stat().st_mtime >= since and pid_file.read_text().strip():
            return int(pid_file.read_text())
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.2)
    pytest.fail("the stage never started:\n" + log.read_text()[-3000:])


def test_an_override_that_succeeds_leaves_params_yaml_as_it_was(prefect_api, toy):
    before = (toy / "params.yaml").read_bytes()
    assert file_seed(toy) != 7
    since = time.time()
    out = r1_run(toy, prefect_api, "--set", "data.seed=7")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert (toy / "params.yaml").read_bytes() == before
    assert not (toy / orch.PARAMS_OVERLAY).exists()
    # the override took effect in the stage, and every record says so
    assert (toy / "seed.out").read_text() == "7"
    child, parent = latest_stage_run(since)
    assert child.data.params["seen.data.seed"] == "7" and child.info.status == "FINISHED"
    assert parent.data.params["override.data.seed"] == "7"
    assert locked_seed(toy) == 7
    # DVC tells the truth about the workspace: its outputs come from another data.seed than the file's
    status = json.loads(dvc(toy, "status", "--json", check=True).stdout or "{}")
    assert status == {"seed": [{"changed deps": {"params.yaml": {"data.seed": "modified"}}}]}, status

    # the file's value is not served from the override's run cache: the stage runs again, with the file's seed
    out = r1_run(toy, prefect_api)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert (toy / "seed.out").read_text() == str(file_seed(toy)) and locked_seed(toy) == file_seed(toy)
    assert "Running stage 'seed'" in out.stdout + out.stderr
    # the override again: DVC's run cache has that run (keyed on seed 7) and restores it, no stage runs
    out = r1_run(toy, prefect_api, "--set", "data.seed=7")
    text = out.stdout + out.stderr
    assert out.returncode == 0 and "restored from DVC run cache" in text and "Running stage" not in text, text[-3000:]
    assert (toy / "seed.out").read_text() == "7"
    assert (toy / "params.yaml").read_bytes() == before


def test_an_override_whose_stage_fails_leaves_params_yaml_as_it_was(prefect_api, toy):
    before = (toy / "params.yaml").read_bytes()
    since = time.time()
    out = r1_run(toy, prefect_api, "--set", "data.seed=13")
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    assert "stage saw data.seed=13" in out.stdout + out.stderr
    assert (toy / "params.yaml").read_bytes() == before
    assert not (toy / orch.PARAMS_OVERLAY).exists()
    child, parent = latest_stage_run(since)
    assert child.data.params["seen.data.seed"] == "13" and child.info.status == "FAILED"
    assert parent.data.params["override.data.seed"] == "13" and parent.info.status == "FAILED"


def test_sigterm_during_an_override_run_leaves_params_yaml_as_it_was(prefect_api, toy, tmp_path):
    before = (toy / "params.yaml").read_bytes()
    log = tmp_path / "run.log"
    since = time.time()
    proc = start_r1_run(toy, prefect_api, log, "--set", "data.seed=11")
    try:
        stage_pid = wait_for_stage(toy, proc, log, since)
        assert file_seed(toy) == 11  # the overlay, while the run runs
        proc.send_signal(signal.SIGTERM)  # what a Prefect worker sends to cancel, or `kill`
        proc.wait(timeout=150)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (toy / "params.yaml").read_bytes() == before, log.read_text()[-3000:]
    assert not (toy / orch.PARAMS_OVERLAY).exists()
    assert not alive(stage_pid)


def test_after_a_kill_9_the_next_run_puts_params_yaml_back_first(prefect_api, toy, tmp_path):
    before = (toy / "params.yaml").read_bytes()
    log = tmp_path / "run.log"
    since = time.time()
    proc = start_r1_run(toy, prefect_api, log, "--set", "data.seed=11")
    stage_pgid = None
    try:
        stage_pgid = os.getpgid(wait_for_stage(toy, proc, log, since))
        proc.kill()  # kill -9: no handler runs, the overlay stays behind
        proc.wait()
        assert file_seed(toy) == 11 and (toy / orch.PARAMS_OVERLAY).exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if stage_pgid:
            # the stage's process group (its dvc died with the flow; the toy stage has no watchdog of its own)
            try:
                os.killpg(stage_pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    out = r1_run(toy, prefect_api)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert "died with its overrides applied" in text, text[-4000:]
    assert (toy / "params.yaml").read_bytes() == before
    assert not (toy / orch.PARAMS_OVERLAY).exists()
    # the next run ran on the file's value, not on the dead run's override (ran, or restored from the run cache)
    assert (toy / "seed.out").read_text() == str(file_seed(toy)) and locked_seed(toy) == file_seed(toy)
