"""The final models in the MLflow Model Registry, with a `champion` alias that only moves forward.

Called at the end of the evaluate stage, inside its MLflow run: each final model (`grpo`, `distill`) that the
run produced (present and not skipped) is logged as artifacts of the evaluate run (the Hugging Face folder as
saved: weights, config, tokenizer; no conversion, so it works offline and in a second on CPU) and registered
as a new version of `<experiment>-<model>` (e.g. `r1-pipeline-grpo`). Every version is tagged with its
evaluation metrics; the alias `champion` moves to the new version only when its pass@1 on the first
evaluation set beats the current champion's (stored as the `eval.score` tag of that version).

Load a champion back with `registry.champion_path(name)` (downloads the folder) and transformers'
`from_pretrained`, or `mlflow.artifacts.download_artifacts(f"models:/{name}@champion")`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from r1_pipeline import paths
from r1_pipeline.tracking import is_main_process, provenance_tags

FINAL_MODELS = ("grpo", "distill")
CHAMPION = "champion"
PRIMARY_METRIC = "pass@1"


def registered_name(model: str, experiment: str | None = None) -> str:
    """`r1-pipeline-grpo`: the experiment name as prefix, so separate experiments keep separate registries."""
    experiment = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "r1-pipeline"
    return f"{experiment}-{model}"


def _score(version) -> float | None:
    try:
        return float(version.tags.get("eval.score"))
    except (TypeError, ValueError):
        return None


def register_models(
    metrics: dict[str, dict[str, dict[str, Any]]],
    primary_benchmark: str | None = None,
    models: tuple[str, ...] = FINAL_MODELS,
    experiment: str | None = None,
) -> list[dict[str, Any]]:
    """Register every final model present under outputs/models; returns one summary per registered version.

    `metrics` is evaluate's {model: {benchmark: summary}}; `primary_benchmark` defaults to its first benchmark.
    Needs an active MLflow run (the evaluate stage's); does nothing without one or off rank 0.
    """
    if not is_main_process():
        return []
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from r1_pipeline.training import is_skipped

    run = mlflow.active_run()
    if run is None:
        return []
    client = MlflowClient()
    experiment = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or client.get_experiment(run.info.experiment_id).name
    done = []
    for model in models:
        folder = paths.model_dir(model)
        if not folder.is_dir() or is_skipped(folder):
            print(f"registry: {model}: no model to register ({'skipped' if folder.is_dir() else 'absent'})")
            continue
        benches = metrics.get(model, {})
        bench = primary_benchmark if primary_benchmark in benches else next(iter(benches), None)
        score = benches.get(bench, {}).get(PRIMARY_METRIC) if bench else None
        artifact_path = f"models/{model}"
        mlflow.log_artifacts(str(folder), artifact_path=artifact_path)
        name = registered_name(model, experiment)
        try:
            client.get_registered_model(name)
        except MlflowException:
            client.create_registered_model(
                name, description=f"r1-pipeline `{model}` stage's final model (Hugging Face folder).",
                tags={"r1.stage": model},
            )
        tags = {"r1.stage": model, "eval.primary_metric": PRIMARY_METRIC, "eval.primary_benchmark": str(bench)}
        if score is not None:
            tags["eval.score"] = repr(float(score))
        for b, summary in benches.items():
            for key, value in summary.items():
                if isinstance(value, (int, float)):
                    # tag names allow no "@": pass@1 -> pass_at_1, as the stages' MLflow metrics
                    tags[f"eval.{b}.{key.replace('@', '_at_')}"] = repr(value)
        prov = provenance_tags(model)
        tags.update({k: v for k, v in prov.items() if k.startswith(("git.", "dvc.", "prefect."))})
        version = client.create_model_version(
            name, source=f"{run.info.artifact_uri}/{artifact_path}", run_id=run.info.run_id, tags=tags,
            description=f"{model} from run {run.info.run_id}; {PRIMARY_METRIC} on {bench}: {score}",
        )
        try:
            current = client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException:
            current = None
        current_score = _score(current) if current is not None else None
        promote = score is not None and (current is None or current_score is None or float(score) > current_score)
        if current is None and score is None:
            promote = True  # the first version of a model with no evaluation yet is still the best we have
        if promote:
            client.set_registered_model_alias(name, CHAMPION, version.version)
        verdict = (
            f"now {CHAMPION}" if promote else f"{CHAMPION} stays version {current.version} ({PRIMARY_METRIC} {current_score})"
        )
        print(f"registry: {name} version {version.version} ({PRIMARY_METRIC} on {bench}: {score}): {verdict}")
        mlflow.set_tag(f"registry.{model}", f"{name}/{version.version}")
        done.append({"model": model, "name": name, "version": version.version, "score": score, "champion": promote})
    return done


def champion_path(name: str, dst: str | Path | None = None) -> Path:
    """Download the champion version's model folder (for `from_pretrained`)."""
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(f"models:/{name}@{CHAMPION}", dst_path=str(dst) if dst else None))
