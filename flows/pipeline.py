"""Prefect flow `r1-pipeline`: the DVC stages in DVC's order, one Prefect task per stage.

DVC owns the graph (the order comes from `dvc dag`), Prefect owns execution, MLflow owns run history:

- each stage runs as `dvc repro --single-item <stage>` in a process group of its own, with a timeout, its output
  streamed line by line to the Prefect logger; cancellation (Ctrl-C, `prefect flow-run cancel`) and timeouts
  kill the whole process tree;
- a stage that is up to date (`dvc status`) is reported `skipped` and costs nothing; one that DVC finds
  unchanged after all (or restores from its run cache) is reported `skipped` too;
- transient failures are retried with exponential backoff; a stage that exits 2 (invalid params or a missing
  input: `r1_pipeline.stage.run_stage`), a timeout, or a DVC error outside the stage's command is not;
- one slot on a global concurrency limit `r1-workspace-<host>-<checkout hash>` for the whole run (one pipeline
  per checkout at a time: DVC's outputs, params.yaml and dvc.lock are shared state), and `gpu_slots[stage]`
  slots on `r1-gpu-<host>` around each GPU stage; both limits are created when missing;
- before that slot, the checkout's file lock `.r1/locks/workspace.lock` (flock: the OS drops it when the flow
  dies). The flow writes its pid, flow run, slot lease ids and MLflow parent run into it. Prefect leases a
  slot for 5 minutes and renews it; a flow killed with -9 leaves its lease held until it expires. The next
  flow that gets the file lock knows no live flow holds the checkout, so it releases the dead flow's leases
  (workspace and GPU), marks its flow run Crashed and its MLflow runs still RUNNING as KILLED
  (`r1.status=orphaned`), logging each, and starts at once instead of waiting out the lease;
- each stage gets the flow's pid and start time (R1_PARENT_PID/_START/_PGID) and `dvc` the kernel's parent-death
  signal: when the flow process dies, dvc dies with it and the stage's watchdog marks its MLflow run KILLED and
  kills the stage's whole process tree within seconds (r1_pipeline.stage);
- one MLflow parent run per pipeline run and one child run per stage attempt, created here and handed to the
  stage as MLFLOW_RUN_ID (with a matching MLFLOW_EXPERIMENT_NAME); the stage's own tracking code logs into it
  and the flow ends it FINISHED/FAILED/KILLED from the exit status;
- overrides (`key=value`) are validated by the params schema first, then applied to params.yaml for this run
  only and undone when it ends, whatever the end (success, failure, SIGTERM, Ctrl-C; after a kill -9 the next
  run in the checkout undoes them first): DVC reads the file while the stages run, so dvc.lock and the run
  cache hold the values each stage really ran with, and params.yaml keeps the bytes git has. Afterwards `dvc
  status` reports the overridden stages as changed (their outputs and dvc.lock are the override's, the file is
  not); the next run without the override reruns them or restores them from the run cache. The overrides and
  both params hashes go to the MLflow parent run and to a Prefect artifact.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from r1_ops import orchestration as orch
from r1_pipeline import stage as stage_proc
from r1_pipeline.config import ConfigError, load_config
from r1_pipeline.tracking import git_commit, set_experiment_kind

FLOW_NAME = "r1-pipeline"
DEFAULT_TIMEOUT_S = 6 * 3600.0
# A DVC error that says nothing about the stage command: retrying cannot help, except for DVC's own lock.
_TRANSIENT_DVC = re.compile(r"Unable to acquire lock|Resource temporarily unavailable|database is locked")
_EXIT_CODE = re.compile(r"exited with (-?\d+)")


class StageFailed(RuntimeError):
    """A stage failed in a way that may not happen again (a crash, OOM kill, a lost server): retried."""

    def __init__(self, message: str, result: dict[str, Any]):
        super().__init__(message)
        self.result = result


class PermanentStageFailure(StageFailed):
    """Invalid params or missing input (exit code 2), a timeout, a DVC error: retrying would fail the same way."""


class PipelineFailed(RuntimeError):
    def __init__(self, message: str, results: list[dict[str, Any]]):
        super().__init__(message)
        self.results = results


def _retry_transient(task, task_run, state) -> bool:  # noqa: ARG001 (Prefect's retry_condition_fn signature)
    exc = state.data
    return isinstance(exc, StageFailed) and not isinstance(exc, PermanentStageFailure)


# ------------------------------------------------------------------------------------------------- MLflow


def mlflow_run_url(ui_base: str, experiment_id: str, run_id: str) -> str:
    # MLflow 3.17's UI picks its GenAI or model-training view from a user-wide switch (browser storage, GenAI
    # by default) or from this query parameter; the experiment's kind tag counts only without the switch.
    return f"{ui_base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{UI_TRAINING_VIEW}"


UI_TRAINING_VIEW = "workflowType=machine_learning"


def mlflow_ui_base(tracking_uri: str) -> str:
    """Where a browser finds the runs: the tracking server itself, else a local `mlflow ui` (default port)."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return os.environ.get("R1_MLFLOW_UI_URL", "http://127.0.0.1:5000")


# -------------------------------------------------------------------------------------------- concurrency


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "host"


def workspace_limit_name(root: Path) -> str:
    """The one-pipeline-at-a-time limit: `r1-workspace-<key>` (orchestration.workspace_key: $R1_WORKSPACE_KEY,
    else the shared DVC remote, else this host and checkout path). Pods that clone the repository and share
    one DVC remote share one slot: their outputs and dvc.lock meet in that remote and in git."""
    return f"r1-workspace-{_slug(orch.workspace_key(root))}"


def gpu_limit_name() -> str:
    """`r1-gpu-<pool>`: $R1_GPU_POOL (the k8s-gpu deployment sets it, so every pod draws on one budget of
    cluster GPUs), else this host's GPUs. Set its limit to the GPU count (`prefect gcl update`)."""
    import socket

    return f"r1-gpu-{_slug(os.environ.get('R1_GPU_POOL') or socket.gethostname())}"


def ensure_concurrency_limit(name: str, limit: int, at_least: int | None = None) -> int:
    """Create the global concurrency limit when missing; return its limit (error when below `at_least`)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            current = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
            except ObjectAlreadyExists:
                pass
            current = client.read_global_concurrency_limit_by_name(name)
    if at_least is not None and current.limit < at_least:
        raise orch.OrchestrationError(
            f"global concurrency limit {name!r} has {current.limit} slot(s) but a stage asks for {at_least}: "
            f"`prefect gcl update {name} --limit <number of GPUs>`"
        )
    return current.limit


LEASE_S = 300.0  # Prefect's default; renewed every 0.75 x LEASE_S while held (a dead flow's lease: see below)
_HELD: dict[str, stage_proc.HolderLock] = {}  # checkout -> the workspace lock this process holds for it


@contextlib.contextmanager
def leased_slots(name: str, occupy: int, timeout_s: float | None = None, on_lease=None):
    """`prefect.concurrency.sync.concurrency(name, occupy, strict=True)`, plus the lease id handed to
    `on_lease(lease_id)` after acquiring (and `on_lease(None)` after releasing).

    The public context manager keeps its lease id to itself; the flow records it in the workspace lock file so
    the next flow can release it if this process dies. Built from the same pieces as that context manager in
    prefect 3.7 (acquire with a lease, a renewal thread, release, the acquisition/release events).
    """
    from prefect._internal.concurrency.cancellation import CancelledError
    from prefect.concurrency._events import emit_concurrency_acquisition_events, emit_concurrency_release_events
    from prefect.concurrency._leases import maintain_concurrency_lease
    from prefect.concurrency._sync import acquire_concurrency_slots_with_lease, release_concurrency_slots_with_lease
    from prefect.concurrency.context import ConcurrencyContext

    response = acquire_concurrency_slots_with_lease(
        [name], occupy, timeout_seconds=timeout_s, strict=True, lease_duration=LEASE_S
    )
    lease_id = response.lease_id
    events = emit_concurrency_acquisition_events(response.limits, occupy)
    if on_lease is not None:
        on_lease(lease_id)
    try:
        with maintain_concurrency_lease(lease_id, LEASE_S, raise_on_lease_renewal_failure=True):
            yield lease_id
    finally:
        try:
            release_concurrency_slots_with_lease(lease_id)
        except CancelledError:
            if ctx := ConcurrencyContext.get():
                ctx.cleanup_lease_ids.append(lease_id)
        if on_lease is not None:
            on_lease(None)
        emit_concurrency_release_events(response.limits, occupy, events)


@contextlib.contextmanager
def hold_workspace(root: Path, limit: str, wait_s: float | None, logger):
    """The checkout's file lock, then its one-slot Prefect limit; cleans up after a dead previous holder."""
    from prefect.runtime import flow_run

    start = time.monotonic()
    lock = orch.acquire_workspace_lock(
        root,
        wait_s,
        on_wait=lambda who: logger.info("another pipeline run holds this checkout (%s): waiting", who),
        role="r1-pipeline flow",
        flow_run_id=str(flow_run.get_id() or ""),
        workspace_limit=limit,
    )
    try:
        if lock.previous:
            recover_dead_flow(lock.previous, lock.path, logger, root)
        left = None if wait_s is None else max(1.0, wait_s - (time.monotonic() - start))
        with leased_slots(
            limit, 1, timeout_s=left, on_lease=lambda lease: lock.update(lease_id=str(lease) if lease else None)
        ):
            _HELD[str(root)] = lock
            try:
                yield lock
            finally:
                _HELD.pop(str(root), None)
    finally:
        lock.release()


def recover_dead_flow(previous: dict[str, Any], lock_path: Path, logger, root: Path | None = None) -> None:
    """A flow of this checkout died without cleaning up (its record is still in the lock file we now hold, so
    it is not running): release its Prefect slot leases, mark its flow run Crashed and its MLflow runs that
    still say RUNNING as KILLED, drop its dead `dvc`'s entries from DVC's rwlock. Each step is logged; none
    can fail this run."""
    logger.warning(
        "the previous pipeline run in this checkout (%s, flow run %s) ended without cleaning up; "
        "releasing what it held",
        stage_proc.describe_holder(previous, lock_path, held=False),
        previous.get("flow_run_id") or "?",
    )
    if root is not None:
        try:
            removed = orch.clear_dead_dvc_locks(root)
            for pid, cmd in sorted({(e["pid"], e["cmd"]) for e in removed}):
                logger.warning(
                    "removed %d entries of dead pid %s (%s) from DVC's rwlock",
                    sum(e["pid"] == pid for e in removed),
                    pid,
                    cmd,
                )
        except Exception as exc:  # noqa: BLE001
            logger.warning("could not check DVC's rwlock: %s", exc)
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for key, what in (("lease_id", previous.get("workspace_limit") or "workspace"), ("gpu_lease_id", "GPU")):
            if previous.get(key):
                try:
                    client.release_concurrency_slots_with_lease(UUID(previous[key]))
                    logger.warning("released its Prefect concurrency lease %s (%s slots)", previous[key], what)
                except Exception as exc:  # noqa: BLE001
                    logger.warning("could not release its lease %s: %s (it expires by itself)", previous[key], exc)
        if previous.get("flow_run_id"):
            try:
                from prefect.states import Crashed

                run = client.read_flow_run(UUID(previous["flow_run_id"]))
                if run.state is not None and not run.state.is_final():
                    client.set_flow_run_state(
                        run.id,
                        Crashed(message="the flow process died (found by the next run in this checkout)"),
                        force=True,
                    )
                    logger.warning("marked its flow run %s Crashed", run.id)
            except Exception as exc:  # noqa: BLE001
                logger.warning("could not mark its flow run %s Crashed: %s", previous["flow_run_id"], exc)
    if previous.get("parent_run_id") and previous.get("tracking_uri"):
        try:
            from mlflow import MlflowClient

            ml = MlflowClient(previous["tracking_uri"])
            parent = ml.get_run(previous["parent_run_id"])
            runs = ml.search_runs(
                [parent.info.experiment_id],
                filter_string=(f"tags.mlflow.parentRunId = '{parent.info.run_id}' and attributes.status = 'RUNNING'"),
            )
            for run in [*runs, parent]:
                if run.info.status == "RUNNING":
                    ml.set_tag(run.info.run_id, "r1.status", "orphaned")
                    ml.set_terminated(run.info.run_id, "KILLED")
                    logger.warning(
                        "marked its MLflow run %s (%s) KILLED",
                        run.info.run_id,
                        run.data.tags.get("r1.stage") or "parent",
                    )
        except Exception as exc:  # noqa: BLE001
            logger.warning("could not close its MLflow runs: %s", exc)


# ------------------------------------------------------------------------------------------------ the task


def tag_lock_entry(client, run_id: str, project_dir: str | Path, stage: str) -> None:
    """The stage's new dvc.lock entry (written by DVC after the stage succeeded) on its MLflow run: the hashes
    of its deps and outs (`dvc.lock.deps`/`dvc.lock.outs`, JSON path -> md5) and of its params."""
    entry = orch.dvc_lock_entry(project_dir, stage)
    if entry is None:
        return
    for key in ("deps", "outs"):
        client.set_tag(run_id, f"dvc.lock.{key}", json.dumps(entry[key], sort_keys=True)[:8000])
    client.set_tag(run_id, "dvc.lock.params_sha256", entry["params_sha256"])


@task(name="dvc-stage", cache_policy=NO_CACHE, persist_result=False, retry_condition_fn=_retry_transient)
def run_dvc_stage(stage: str, spec: dict[str, Any]) -> dict[str, Any]:
    """`dvc repro --single-item <stage>` in its own process group, into a fresh MLflow child run."""
    from mlflow import MlflowClient
    from prefect.runtime import flow_run, task_run

    logger = get_run_logger()
    client = MlflowClient(spec["tracking_uri"])
    attempt = task_run.get_run_count() or 1
    child = client.create_run(
        spec["experiment_id"],
        run_name=stage,
        tags={
            "mlflow.parentRunId": spec["parent_run_id"],
            "r1.stage": stage,
            "r1.attempt": str(attempt),
            "prefect.flow_run_id": str(flow_run.get_id() or ""),
            "prefect.task_run_id": str(task_run.get_id() or ""),
            **({"prefect.flow_run_url": str(flow_run.get_flow_run_ui_url())} if flow_run.get_flow_run_ui_url() else {}),
        },
    )
    run_id = child.info.run_id
    url = mlflow_run_url(spec["ui_base"], spec["experiment_id"], run_id)
    env = orch.subprocess_env(
        {
            **orch.fail_fast_mlflow_client_env(),
            "MLFLOW_TRACKING_URI": spec["tracking_uri"],
            "MLFLOW_EXPERIMENT_NAME": spec["experiment"],
            "MLFLOW_RUN_ID": run_id,
            "PREFECT__FLOW_RUN_ID": str(flow_run.get_id() or ""),
            "R1_PIPELINE_RUN": spec["parent_run_id"],
            "R1_PREFECT_FLOW_RUN_URL": str(flow_run.get_flow_run_ui_url() or ""),
            **stage_proc.parent_env(),  # the stage's watchdog ends it when this process is gone
        }
    )
    # --pull (with a shared remote): a stage whose command, deps and params ran in another clone is restored from
    # the run cache, its outputs' objects fetched from the remote (a fresh clone has none of them locally)
    cmd = [orch.bin_path("dvc"), "repro", "--single-item", *(["--pull"] if spec.get("pull") else []), stage]
    timeout = spec["timeout_s"]
    logger.info("%s: %s (timeout %.0fs, attempt %d, MLflow run %s)", stage, " ".join(cmd[1:]), timeout, attempt, url)
    markers: list[str] = []

    def on_line(line: str) -> None:
        if line.startswith(("Running stage", "Stage '", "ERROR")) or "exited with" in line:
            markers.append(line)
        logger.info("[%s] %s", stage, line)

    result = {"stage": stage, "run_id": run_id, "run_url": url, "attempts": attempt}
    try:
        if spec["gpu_slots"] > 0:
            lock = _HELD.get(spec["project_dir"])
            record = (lambda lease: lock.update(gpu_lease_id=str(lease) if lease else None)) if lock else None
            with leased_slots(spec["gpu_limit"], spec["gpu_slots"], on_lease=record):
                proc = orch.run_in_process_group(cmd, spec["project_dir"], env, timeout, on_line, spec["kill_grace_s"])
        else:
            proc = orch.run_in_process_group(cmd, spec["project_dir"], env, timeout, on_line, spec["kill_grace_s"])
    except BaseException:
        # Cancelled (Prefect's TerminationSignal, Ctrl-C): the process group is already gone.
        try:
            client.set_tag(run_id, "r1.status", "killed")
            client.set_terminated(run_id, "KILLED")
        except Exception as exc:  # noqa: BLE001 (the cancellation must propagate whatever MLflow says)
            logger.warning("could not mark MLflow run %s KILLED: %s", run_id, exc)
        raise
    result["seconds"] = round(proc.seconds, 1)
    if proc.timed_out:
        client.set_tag(run_id, "r1.status", "timeout")
        client.set_terminated(run_id, "FAILED")
        raise PermanentStageFailure(
            f"stage {stage} timed out after {timeout:.0f}s (process tree killed)",
            {**result, "status": "failed", "error": "timeout"},
        )
    if proc.returncode != 0:
        text = "\n".join(markers)
        m = _EXIT_CODE.search(text)
        code = int(m.group(1)) if m else None
        client.set_tag(run_id, "r1.status", "failed")
        client.set_tag(run_id, "r1.exit_code", str(code if code is not None else proc.returncode))
        client.set_terminated(run_id, "FAILED")
        last = "\n".join(proc.tail[-15:])
        info = {**result, "status": "failed", "error": f"exit {code if code is not None else proc.returncode}"}
        if code == 2:
            raise PermanentStageFailure(
                f"stage {stage} exited 2 (invalid params or missing input; not retried):\n{last}", info
            )
        if code is None and not _TRANSIENT_DVC.search(last):
            raise PermanentStageFailure(
                f"dvc repro {stage} failed (exit {proc.returncode}; not retried):\n{last}", info
            )
        raise StageFailed(f"stage {stage} failed (exit {code if code is not None else proc.returncode}):\n{last}", info)
    outcome = orch.repro_outcome(markers, stage)
    if outcome in ("skipped", "cached"):
        # DVC found nothing to do (or restored the outputs from its run cache): no stage process ran.
        client.delete_run(run_id)
        return {
            **result,
            "status": "skipped",
            "note": "restored from DVC run cache" if outcome == "cached" else "unchanged",
            "run_id": None,
            "run_url": None,
        }
    client.set_tag(run_id, "r1.status", "ran")
    tag_lock_entry(client, run_id, spec["project_dir"], stage)
    client.set_terminated(run_id, "FINISHED")
    return {**result, "status": "ran"}


# ------------------------------------------------------------------------------------------------ the flow


def attach_report(client, parent_id: str, root: Path, results: list[dict[str, Any]]) -> None:
    """The report stage's output on the parent run, where a user lands first: its files as artifacts
    (`report/`) and report.md as the run's description (MLflow shows `mlflow.note.content` on the run page)."""
    if not any(r["stage"] == "report" and r["status"] == "ran" for r in results):
        return
    folder = root / "outputs" / "report"
    if not folder.is_dir():
        return
    client.log_artifacts(parent_id, str(folder), "report")
    md = folder / "report.md"
    if md.is_file():
        client.set_tag(parent_id, "mlflow.note.content", md.read_text()[:60000])


def results_markdown(results: list[dict[str, Any]], parent_url: str | None) -> str:
    lines = ["# r1-pipeline stage results", ""]
    if parent_url:
        lines += [f"MLflow parent run: [{parent_url}]({parent_url})", ""]
    lines += ["| stage | status | seconds | attempts | MLflow run | note |", "|---|---|---|---|---|---|"]
    for r in results:
        link = f"[{r['run_id'][:8]}]({r['run_url']})" if r.get("run_url") else "–"
        secs = f"{r['seconds']:.1f}" if r.get("seconds") is not None else "–"
        lines.append(
            f"| {r['stage']} | {r['status']} | {secs} | {r.get('attempts', '–')} | {link} | {r.get('note') or r.get('error') or ''} |"
        )
    return "\n".join(lines) + "\n"


def results_table(results: list[dict[str, Any]]) -> str:
    """Plain-text table for a terminal."""
    rows = [("stage", "status", "seconds", "MLflow run")]
    for r in results:
        why = r.get("note") or r.get("error")
        rows.append(
            (
                r["stage"],
                r["status"] + (f" ({why})" if why else ""),
                f"{r['seconds']:.1f}" if r.get("seconds") is not None else "-",
                r.get("run_url") or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


@dataclass
class PipelineRun:
    """One run of the flow, filled in phase by phase: what was asked (`plan`), the workspace it holds, the
    params it runs with (`overrides_applied`), its MLflow parent run (`open_parent_run`), what the stages did
    (`run_stages`)."""

    root: Path
    graph: orch.StageGraph
    selected: list[str]
    overrides: list[str]
    gpu_slots: dict[str, int]
    timeouts: dict[str, float]
    default_timeout_s: float
    retries: int
    retry_delay_s: float
    kill_grace_s: float
    tracking_uri: str
    experiment: str
    workspace_limit: str
    gpu_limit: str
    sync: bool  # a shared DVC remote: pull before the stages, `--pull` each stage, push each stage that ran
    started: float = field(default_factory=time.time)
    lock: Any = None  # the checkout's HolderLock while the run holds the workspace
    params_file_sha: str = "none"  # params.yaml as git has it (without the overrides)
    client: Any = None  # MlflowClient
    experiment_id: str = ""
    parent_id: str = ""
    parent_url: str = ""
    ui_base: str = ""
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def params_path(self) -> Path:
        return self.root / "params.yaml"

    def stage_spec(self, stage: str) -> dict[str, Any]:
        """What the stage task needs (plain values: Prefect passes them to a task run)."""
        return {
            "project_dir": str(self.root),
            "tracking_uri": self.tracking_uri,
            "experiment": self.experiment,
            "experiment_id": self.experiment_id,
            "parent_run_id": self.parent_id,
            "ui_base": self.ui_base,
            "timeout_s": float(self.timeouts.get(stage, self.default_timeout_s)),
            "gpu_slots": self.gpu_slots.get(stage, 0),
            "kill_grace_s": self.kill_grace_s,
            "gpu_limit": self.gpu_limit,
            "pull": self.sync,
        }


@flow(name=FLOW_NAME, log_prints=True)
def r1_pipeline(
    stages: list[str] | None = None,
    overrides: list[str] | None = None,
    gpu_slots: dict[str, int] | None = None,
    timeouts: dict[str, float] | None = None,
    default_timeout_s: float = DEFAULT_TIMEOUT_S,
    retries: int = 2,
    retry_delay_s: float = 30.0,
    kill_grace_s: float = 10.0,
    workspace_wait_s: float | None = None,
    project_dir: str | None = None,
    workspace_limit: str | None = None,
    gpu_limit: str | None = None,
    dvc_remote: str | None = None,
) -> list[dict[str, Any]]:
    """Run the DVC pipeline stage by stage.

    Args:
        stages: a subset of stages to run (in pipeline order); None runs every stage. Each selected stage runs
            with `--single-item`: stages outside the subset are not brought up to date.
        overrides: `key.path=value` params overrides for this run only: in params.yaml while it runs, undone
            when it ends (see module doc).
        gpu_slots: GPU slots per stage on the `r1-gpu` concurrency limit ({} on CPU).
        timeouts: seconds per stage; stages not listed get `default_timeout_s`.
        retries: retries of a transiently failing stage, after `retry_delay_s`, then doubling.
        kill_grace_s: seconds between SIGTERM and SIGKILL when a stage's process tree is killed.
        workspace_wait_s: how long to wait for the checkout (its file lock, then its workspace slot; None: as
            long as it takes).
        project_dir: the checkout to run in (default: the working directory).
        workspace_limit: name of the one-slot global concurrency limit held for the whole run
            (default `r1-workspace-<host>-<hash of the checkout path>`).
        gpu_limit: name of the GPU-slots limit (default `r1-gpu-<host>`; created with as many slots as the
            largest gpu_slots value when missing: set it to the GPU count with `prefect gcl update`).
        dvc_remote: an S3-compatible DVC remote (`s3://bucket/path`; default `$R1_DVC_REMOTE_URL`, endpoint
            `$R1_DVC_REMOTE_ENDPOINT_URL`) shared by every clone: the run cache and outputs are pulled from it
            before the stages, each stage runs as `dvc repro --single-item --pull` (restored from the run cache
            when another clone ran it with the same inputs) and each stage that ran is pushed right after, so a
            pod's results outlive it.
    """
    logger = get_run_logger()
    run = plan(
        stages,
        overrides,
        gpu_slots,
        timeouts,
        default_timeout_s,
        retries,
        retry_delay_s,
        kill_grace_s,
        project_dir,
        workspace_limit,
        gpu_limit,
        dvc_remote,
    )
    logger.info("stages (from dvc dag): %s; running: %s", " -> ".join(run.graph.order), ", ".join(run.selected))
    logger.info("waiting for the workspace slot %r", run.workspace_limit)
    with hold_workspace(run.root, run.workspace_limit, workspace_wait_s, logger) as run.lock:
        with overrides_applied(run, logger):
            open_parent_run(run)
            failure = run_stages(run, logger)
    logger.info("stage results:\n%s", results_table(run.results))
    if failure is not None:
        raise PipelineFailed(f"{failure}\n\n{results_table(run.results)}", run.results)
    return run.results


# ------------------------------------------------------------------------------------------ 1. the request


def plan(
    stages,
    overrides,
    gpu_slots,
    timeouts,
    default_timeout_s,
    retries,
    retry_delay_s,
    kill_grace_s,
    project_dir,
    workspace_limit,
    gpu_limit,
    dvc_remote,
) -> PipelineRun:
    """Everything that can be wrong with the request fails here, before anything runs or is written."""
    root = Path(project_dir or os.getcwd()).resolve()
    overrides = list(overrides or [])
    gpu_slots = {k: int(v) for k, v in (gpu_slots or {}).items()}
    timeouts = dict(timeouts or {})
    graph = orch.stage_graph(root)
    selected = graph.select(stages)
    graph.check_keys(timeouts, "timeouts")
    graph.check_keys(gpu_slots, "gpu_slots")
    try:
        cfg = load_config(root / "params.yaml", overrides)
    except ConfigError as exc:
        raise ConfigError(f"invalid params or overrides (params.yaml left untouched):\n{exc}") from None
    tracking_uri = orch.resolve_tracking_uri(
        os.environ.get("MLFLOW_TRACKING_URI") or cfg.project.mlflow_tracking_uri, root
    )
    orch.check_mlflow(tracking_uri)
    for key, value in orch.fail_fast_mlflow_client_env().items():
        os.environ.setdefault(key, value)
    shared_remote = orch.shared_remote_from_env(root, dvc_remote)
    run = PipelineRun(
        root=root,
        graph=graph,
        selected=selected,
        overrides=overrides,
        gpu_slots=gpu_slots,
        timeouts=timeouts,
        default_timeout_s=default_timeout_s,
        retries=retries,
        retry_delay_s=retry_delay_s,
        kill_grace_s=kill_grace_s,
        tracking_uri=tracking_uri,
        experiment=os.environ.get("MLFLOW_EXPERIMENT_NAME") or cfg.project.mlflow_experiment,
        workspace_limit=workspace_limit or workspace_limit_name(root),  # after the remote: it may be the key
        gpu_limit=gpu_limit or gpu_limit_name(),
        sync=shared_remote is not None,
    )
    ensure_concurrency_limit(run.workspace_limit, 1)
    if any(gpu_slots.get(s, 0) > 0 for s in selected):
        need = max(gpu_slots.get(s, 0) for s in selected)
        ensure_concurrency_limit(run.gpu_limit, need, at_least=need)
    return run


# ---------------------------------------------------------------------------------- 2. params for this run


@contextlib.contextmanager
def overrides_applied(run: PipelineRun, logger):
    """The overrides go into params.yaml for this run only (validated again, now that this run owns the
    workspace): DVC hashes the values the stages run with, and the file's own bytes come back at the end."""
    overlay = None
    try:
        with orch.params_overlay(run.root, run.overrides, run.params_path.name) as overlay:
            if overlay.recovered:
                logger.warning(
                    "params.yaml: a previous run in this checkout died with its overrides applied; %s",
                    "put the file back"
                    if overlay.recovered == "restored"
                    else f"the file had been edited since, kept as is (its bytes from before that run: "
                    f"{orch.PARAMS_KEPT})",
                )
            if overlay.written:
                logger.info(
                    "params.yaml: overrides applied for this run (undone when it ends): %s", " ".join(run.overrides)
                )
            run.params_file_sha = overlay.file_sha256 or "none"
            yield
    finally:
        if overlay is not None and overlay.outcome == "restored":
            logger.info("params.yaml: back to its own bytes (the overrides stay in dvc.lock and MLflow)")
        elif overlay is not None and overlay.outcome == "kept":
            logger.warning(
                "params.yaml was edited during the run: kept as is; its bytes from before the run: %s", orch.PARAMS_KEPT
            )


# ------------------------------------------------------------------------------------ 3. the parent run


def open_parent_run(run: PipelineRun) -> None:
    """The MLflow parent run (one child run per stage attempt hangs under it) and the Prefect artifacts that
    say how to reproduce this run."""
    from mlflow import MlflowClient
    from prefect.runtime import flow_run

    logger = get_run_logger()
    lock_before = orch.sha256_file(run.root / "dvc.lock") or "none"
    params_sha = orch.sha256_file(run.params_path) or "none"  # the params the stages see (with the overrides)
    client = run.client = MlflowClient(run.tracking_uri)
    exp = client.get_experiment_by_name(run.experiment)
    if exp is not None:
        run.experiment_id = exp.experiment_id
    elif run.tracking_uri.startswith(("http://", "https://")):
        run.experiment_id = client.create_experiment(run.experiment)  # the server decides where artifacts go
    else:
        # A local store: artifacts next to it in the project (./mlruns), whatever this process's cwd is.
        run.experiment_id = client.create_experiment(
            run.experiment, artifact_location=(run.root / "mlruns" / run.experiment).as_uri()
        )
    set_experiment_kind(client, run.experiment_id)  # MLflow 3's UI: the training view, not the GenAI one
    run.ui_base = mlflow_ui_base(run.tracking_uri)
    profile = orch.params_profile(run.params_path) or "custom"
    commit = git_commit(run.root) or "unknown"
    tags = {
        "r1.pipeline": "parent",
        "git.commit": commit,
        "dvc.params_sha256": params_sha,
        "r1.params_file_sha256": run.params_file_sha,
        "dvc.lock_sha256": lock_before,
        "prefect.flow_run_id": str(flow_run.get_id() or ""),
        "prefect.flow_run_name": str(flow_run.get_name() or ""),
        "r1.profile": profile,
        "r1.overrides": json.dumps(run.overrides),
        "r1.stages": ",".join(run.selected),
    }
    if flow_run.get_flow_run_ui_url():
        tags["prefect.flow_run_url"] = str(flow_run.get_flow_run_ui_url())
    parent = client.create_run(run.experiment_id, run_name=f"pipeline {flow_run.get_name() or ''}".strip(), tags=tags)
    run.parent_id = parent.info.run_id
    run.lock.update(tracking_uri=run.tracking_uri, parent_run_id=run.parent_id)  # for the next run, should this one die
    run.parent_url = mlflow_run_url(run.ui_base, run.experiment_id, run.parent_id)
    client.log_param(run.parent_id, "pipeline.stages", ",".join(run.selected))
    client.log_param(run.parent_id, "pipeline.profile", profile)
    for item in run.overrides:
        key, value = item.split("=", 1)
        client.log_param(run.parent_id, f"override.{key.strip()}", value[:6000])
    create_link_artifact(
        run.parent_url,
        link_text=f"MLflow parent run {run.parent_id}",
        key="r1-mlflow-run",
        description="The MLflow parent run of this pipeline run (one child run per stage).",
    )
    create_markdown_artifact(
        "\n".join(
            [
                "# r1-pipeline run parameters",
                "",
                f"- profile: `{profile}`",
                f"- overrides: {', '.join(f'`{o}`' for o in run.overrides) or 'none'}",
                f"- params.yaml sha256: `{run.params_file_sha}` (the file); `{params_sha}` (with the overrides, as the "
                "stages and dvc.lock saw it during the run)",
                f"- git commit: `{commit}`",
                f"- dvc.lock sha256 before the run: `{lock_before}`",
                f"- stages: {', '.join(run.selected)}",
                f"- MLflow parent run: [{run.parent_id}]({run.parent_url})",
                "",
                "Reproduce: `git checkout "
                + commit
                + "` then `r1 run"
                + "".join(f" --set {o}" for o in run.overrides)
                + (f" --stages {','.join(run.selected)}" if len(run.selected) < len(run.graph.order) else "")
                + "` "
                "(or `dvc exp run" + "".join(f" -S {o}" for o in run.overrides) + "`).",
            ]
        )
        + "\n",
        key="r1-run-params",
        description="Profile, overrides and hashes that reproduce this run.",
    )
    logger.info("MLflow parent run: %s", run.parent_url)


# ---------------------------------------------------------------------------------------- 4. the stages


def run_stages(run: PipelineRun, logger) -> StageFailed | None:
    """Each selected stage in order, as a Prefect task; a stage up to date at the start whose direct upstream
    did not run is skipped without calling DVC. After a failure the rest are `not run`. The parent run ends
    FINISHED / FAILED / KILLED (cancelled) whatever happens, with the report attached."""
    if run.sync:  # a fresh clone: what other clones computed comes back as DVC's run cache and outputs
        logger.info("dvc pull --run-cache from %s", orch.dvc_default_remote(run.root))
        logger.info("%s", orch.dvc_sync(run.root, "pull").strip()[-2000:])
    status = orch.dvc_status(run.root)
    results = run.results
    ran: set[str] = set()
    failure: StageFailed | None = None
    final_status = "FAILED"
    try:
        for stage in run.selected:
            if failure is not None:
                results.append({"stage": stage, "status": "not run", "note": f"{failure.result['stage']} failed"})
                continue
            if stage not in status and not (run.graph.upstream.get(stage, set()) & ran):
                logger.info("%s: up to date (dvc status), skipped", stage)
                results.append({"stage": stage, "status": "skipped", "seconds": 0.0, "note": "up to date"})
                continue
            task_fn = run_dvc_stage.with_options(
                task_run_name=stage,
                retries=run.retries,
                retry_delay_seconds=exponential_backoff(run.retry_delay_s)(run.retries) if run.retries else 0,
            )
            try:
                res = task_fn(stage, run.stage_spec(stage))
            except StageFailed as exc:
                failure = exc
                results.append(exc.result)
                logger.error("%s", exc)
                continue
            results.append(res)
            if res["status"] == "ran":
                ran.add(stage)
                if run.sync:  # at once, so a pod killed later keeps what it finished
                    orch.dvc_sync(run.root, "push", [stage])
                    logger.info("%s: pushed outputs and run cache to the shared remote", stage)
        final_status = "FAILED" if failure else "FINISHED"
    except BaseException:
        final_status = "KILLED"
        done = {r["stage"] for r in results}
        results += [{"stage": s, "status": "cancelled"} for s in run.selected if s not in done]
        raise
    finally:
        close_parent_run(run, final_status, logger)
    return failure


def close_parent_run(run: PipelineRun, final_status: str, logger) -> None:
    client, parent_id = run.client, run.parent_id
    try:
        client.set_tag(parent_id, "dvc.lock_sha256.end", orch.sha256_file(run.root / "dvc.lock") or "none")
        client.log_metric(parent_id, "pipeline_seconds", time.time() - run.started)
        client.log_metric(parent_id, "stages_ran", sum(r["status"] == "ran" for r in run.results))
        client.log_metric(parent_id, "stages_skipped", sum(r["status"] == "skipped" for r in run.results))
        for path in (run.params_path, run.root / "dvc.lock"):
            if path.exists():
                client.log_artifact(parent_id, str(path))
        attach_report(client, parent_id, run.root, run.results)
        client.set_terminated(parent_id, final_status)
        create_markdown_artifact(
            results_markdown(run.results, run.parent_url),
            key="r1-stage-results",
            description="Per-stage status, time and MLflow child run.",
        )
    except Exception as exc:  # never hide the run's own outcome behind a reporting error
        logger.warning("could not finish the MLflow parent run / artifacts: %s", exc)
