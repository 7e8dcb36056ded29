"""MLflow helpers: every stage logs to a run of its own, or to the child run the Prefect flow made for it.

When the flow starts a stage it creates the child run and passes `MLFLOW_RUN_ID`; `mlflow.start_run()` then
resumes that run. Started alone (`python -m tasks.sft`, `dvc repro`), a stage opens a new run, so tracking
never depends on the orchestrator. Only rank 0 of a multi-process launch logs.

A stage's run ends FINISHED, FAILED on an exception in the stage (tag `r1.status=failed`), KILLED on SIGTERM
or Ctrl-C (`r1.status=killed`), and KILLED with `r1.status=orphaned` when the stage's watchdog finds the flow
that started it gone (r1_pipeline.stage).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

from r1_pipeline.config import Config, flat_params
from r1_pipeline.io import sha256_file


def is_main_process() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


def tracking_uri(cfg: Config) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or cfg.project.mlflow_tracking_uri


def configure(cfg: Config) -> None:
    import logging

    import mlflow

    # MLflow's INFO chatter (db creation, system-metrics start/stop) would bury a stage's own errors.
    logging.getLogger("mlflow").setLevel(logging.WARNING)

    # Trainer metrics are logged once per profiled call (8-9 a GRPO step); synchronous logging cost 0.20 s a
    # step on CPU with SQLite (docs/benchmarks.md). Async logging queues them; end_run() flushes the queue.
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "true")
    mlflow.set_tracking_uri(tracking_uri(cfg))
    # The flow may have set the experiment by name already; a mismatch would break resuming its run.
    os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", cfg.project.mlflow_experiment)
    name = os.environ["MLFLOW_EXPERIMENT_NAME"]
    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///") and mlflow.get_experiment_by_name(name) is None:
        # Without a server, MLflow would put artifacts in ./mlruns of whichever directory first created the
        # experiment; keep them next to the database instead.
        artifacts = (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").resolve()
        try:
            mlflow.create_experiment(name, artifact_location=artifacts.as_uri())
        except mlflow.exceptions.MlflowException:
            pass  # another stage process created it first
    set_experiment_kind(mlflow.MlflowClient(), mlflow.set_experiment(name).experiment_id)


EXPERIMENT_KIND_TAG, TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"


def set_experiment_kind(client, experiment_id: str) -> None:
    """Mark the experiment as model training, so MLflow 3's UI opens its runs table and charts rather than the
    GenAI view (traces, sessions). A kind someone chose in the UI is left alone."""
    try:
        if EXPERIMENT_KIND_TAG not in client.get_experiment(experiment_id).tags:
            client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
    except Exception as exc:  # noqa: BLE001 (a UI hint must never stop a stage)
        print(f"warning: MLflow: could not set the experiment kind: {exc}", flush=True)


def git_commit(cwd: str | Path | None = None) -> str | None:
    """HEAD of the checkout at `cwd` (default: the working directory); None outside git."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def git_dirty() -> str:
    """`true` when tracked files differ from the commit (the run's code is not exactly `git.commit`)."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return "unknown" if out.returncode != 0 else str(bool(out.stdout.strip())).lower()


def provenance_tags(stage: str) -> dict[str, str]:
    tags = {
        "r1.stage": stage,
        "git.commit": git_commit() or "unknown",
        "git.dirty": git_dirty(),
        "dvc.params_sha256": sha256_file("params.yaml") or "none",
        "dvc.lock_sha256": sha256_file("dvc.lock") or "none",
    }
    for env, tag in (
        ("PREFECT__FLOW_RUN_ID", "prefect.flow_run_id"),
        ("R1_PIPELINE_RUN", "r1.pipeline_run"),
        ("R1_PREFECT_FLOW_RUN_URL", "prefect.flow_run_url"),
    ):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


@contextlib.contextmanager
def stage_run(stage: str, cfg: Config, section: Any | None = None) -> Iterator[Any]:
    """Open (or resume) the stage's MLflow run, log its effective config and provenance; yields the run or None."""
    if not is_main_process():
        # Other ranks must not let transformers' MLflow callback open runs of their own.
        os.environ["DISABLE_MLFLOW_INTEGRATION"] = "TRUE"
        yield None
        return
    import mlflow

    configure(cfg)
    resumed = bool(os.environ.get("MLFLOW_RUN_ID"))
    with mlflow.start_run(run_name=None if resumed else stage, log_system_metrics=True) as run:
        mlflow.set_tags(provenance_tags(stage))
        params = flat_params(section if section is not None else getattr(cfg, stage), prefix=f"{stage}.")
        params.update(flat_params(cfg.project, prefix="project."))
        log_params(params)
        try:
            yield run
            # A training stage's final model: an MLflow model of this run, registered from it (r1_pipeline.registry)
            from r1_pipeline import registry

            if stage in registry.MODEL_STAGES:
                registry.log_stage_model(cfg, stage)
        except Exception:
            # mlflow.start_run's context ends the run FAILED; the tag says so in the runs table too.
            _quietly(mlflow.set_tag, "r1.status", "failed")
            raise
        except BaseException:
            # SIGTERM (StageTerminated) or Ctrl-C: the run was stopped, it did not fail. The context would say
            # FAILED for any exception; ending the run first leaves it KILLED.
            _quietly(mlflow.set_tag, "r1.status", "killed")
            _quietly(mlflow.end_run, "KILLED")
            raise


def _quietly(fn, *args) -> None:
    """A tracking call on the way out of a failing stage: never hide the stage's own error behind it."""
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001
        print(f"warning: MLflow: {exc}", flush=True)


def log_params(params: dict[str, Any]) -> None:
    import mlflow

    # MLflow caps a param value at 6000 chars and a batch at 100 params.
    items = [(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        mlflow.log_params(dict(items[i : i + 100]))


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    if not is_main_process():
        return
    import mlflow

    if mlflow.active_run() is None:
        return
    clean = {k.replace("@", "_at_"): float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
    if clean:
        mlflow.log_metrics(clean, step=step)


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    if not is_main_process():
        return
    import mlflow

    if mlflow.active_run() is not None and Path(path).exists():
        if Path(path).is_dir():
            mlflow.log_artifacts(str(path), artifact_path=artifact_path)
        else:
            mlflow.log_artifact(str(path), artifact_path=artifact_path)


def log_dataset(path: str | Path, name: str, context: str) -> None:
    """Record an input dataset (mlflow.data) with its digest, so a run says exactly what it trained on."""
    if not is_main_process():
        return
    import mlflow
    import pandas as pd

    if mlflow.active_run() is None or not Path(path).exists():
        return
    df = pd.read_json(path, lines=True) if Path(path).stat().st_size else pd.DataFrame()
    ds = mlflow.data.from_pandas(df, source=str(Path(path).resolve()), name=name)
    # the file's own sha256 next to MLflow's digest of the table: `r1 lineage` and DVC speak of files
    mlflow.log_input(ds, context=context, tags={"r1.sha256": sha256_file(path) or "none", "r1.path": str(path)})


def log_table(rows: list[dict], artifact_file: str) -> None:
    if not is_main_process() or not rows:
        return
    import mlflow

    if mlflow.active_run() is not None:
        columns = {k: [r.get(k) for r in rows] for k in rows[0]}
        mlflow.log_table(columns, artifact_file=artifact_file)
