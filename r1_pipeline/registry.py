"""Final models in the MLflow Model Registry: registered by the run that trained them, promoted on evidence.

**Registration (training stages).** When a training stage (`base`, `sft`, `grpo`, `r1_zero`, `distill`)
finishes, `log_stage_model` logs its final model into the stage's own MLflow run as an MLflow pyfunc model
(`r1_pipeline/pyfunc_model.py`: prompt in, completion out, with a signature and an input example; the
Hugging Face folder is its artifact, unconverted) and registers it as a new version of
`<experiment>-<profile>-<stage>` (`r1-pipeline-tiny-grpo`). The version's `run_id` is the training run, so
the registry points at the run that produced the weights, and the weights are stored once, there. Each version
carries `r1.model_digest` (sha256 over the folder's files), by which the evaluate stage finds it again, and
`r1.parent_model` (`name/version` of the model it started from) for lineage.

**Promotion (evaluate stage).** `promote_models` finds each evaluated model's version by its digest, tags it
with its evaluation (`eval.<bench>.pass_at_1`, `..._stderr`, `.k`, the decoding, the problem-set digest, the
evaluate run), stores its per-problem outcomes as an artifact of the evaluate run (JSON, a few KB), and per
benchmark decides whether it becomes `champion-<bench>` (and `champion` for the primary benchmark, the first
evaluation set):

- never when the version has no evaluation on that benchmark;
- yes when there is no champion yet;
- otherwise only when the evaluation protocol is the same as the champion's (k, temperature, top-p,
  max_new_tokens, the same problems) and pass@1 beats it by more than twice the standard error of the paired
  difference over the shared problems (`r1_pipeline.metrics.paired_difference`).

Every decision is tagged on the version (`promotion.<bench>.decision` = promoted / kept / not comparable /
not evaluated, with `.difference`, `.stderr`, `.champion_version`, `.reason`). A profile is part of the name,
so a tiny run and a gpu run in one store never compete.

    mlflow.pyfunc.load_model("models:/r1-pipeline-tiny-grpo@champion").predict(pd.DataFrame({"prompt": ["3 + 4"]}))
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

from r1_pipeline import paths
from r1_pipeline.config import Config
from r1_pipeline.io import read_jsonl, sha256_file
from r1_pipeline.tracking import is_main_process, provenance_tags

MODEL_STAGES = ("base", "sft", "grpo", "r1_zero", "distill")
CHAMPION = "champion"
PRIMARY_METRIC = "pass@1"
PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")
# training data of stages that do not log it themselves (the others call tracking.log_dataset)
STAGE_DATA = {"base": (paths.CORPUS, "corpus")}
PROMOTION_Z = 2.0  # promote only when pass@1 beats the champion by more than 2 SE of the paired difference
PROTOCOL_KEYS = ("k", "temperature", "top_p", "max_new_tokens", "problems_sha256")


class RegistryError(RuntimeError):
    """A registry lookup that cannot be answered (an unknown model or run): the message says what to pass."""


# ------------------------------------------------------------------------------------------------------ names


def params_profile(params_path: str | Path) -> str | None:
    """The profile named in params.yaml's header (`# profile: micro ...`, written by `r1 config use`), if any.

    Here rather than in orchestration.py: every stage imports this module (its final model is registered from
    its own run), and orchestration.py in every stage's code closure would outdate the pipeline on each edit.
    """
    try:
        for line in Path(params_path).read_text().splitlines():
            if not line.startswith("#"):
                break
            if m := re.match(r"#\s*profile:\s*([\w.-]+)", line):
                return m.group(1)
    except OSError:
        pass
    return None


def profile_name(params_path: str | Path = "params.yaml") -> str:
    """The run's profile for registry names: the params header's, `custom` when there is none."""
    return params_profile(params_path) or "custom"


def registered_name(model: str, experiment: str | None = None, profile: str | None = None) -> str:
    """`r1-pipeline-tiny-grpo`: experiment and profile as prefix, so separate experiments and profiles keep
    separate registries and champions."""
    experiment = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "r1-pipeline"
    return f"{experiment}-{profile or profile_name()}-{model}"


def champion_alias(benchmark: str) -> str:
    """`champion-gsm8k`: MLflow aliases allow letters, digits, `_` and `-`."""
    return f"{CHAMPION}-" + re.sub(r"[^A-Za-z0-9_-]+", "_", benchmark)


def model_digest(folder: str | Path) -> str:
    """sha256 over (relative path, sha256) of every file of a model folder: the same bytes, the same digest,
    wherever DVC checked them out."""
    folder = Path(folder)
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(folder).as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def parent_stage(cfg: Config, stage: str) -> str | None:
    """The model a stage starts from (its lineage parent), None for the base model."""
    from r1_pipeline.training import is_skipped

    if stage == "sft":
        return "base"
    if stage == "grpo":
        return "base" if is_skipped(paths.model_dir("sft")) else "sft"
    if stage == "r1_zero":
        return "base"
    if stage == "distill":
        return cfg.rejection.source_model  # the teacher whose traces it learns from
    return None


def find_version(client, name: str, digest: str):
    """The newest version of `name` whose weights have `digest`, or None."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(f"name = '{name}' and tags.`r1.model_digest` = '{digest}'")
    except MlflowException:
        return None
    return max(found, key=lambda v: int(v.version)) if found else None


def _ensure_registered_model(client, name: str, stage: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(
                name,
                tags={"r1.stage": stage},
                description=f"r1-pipeline `{stage}` stage's final model (MLflow pyfunc over the Hugging Face folder). "
                f"Aliases: `{CHAMPION}` (primary benchmark), `{CHAMPION}-<benchmark>`.",
            )
        except MlflowException:
            pass  # created by a concurrent stage


# ---------------------------------------------------------------------------------------- training: register


def _input_example() -> str:
    for path in (paths.RL_TRAIN, paths.COLD_START):
        try:
            rows = read_jsonl(path)
        except (OSError, ValueError):
            continue
        if rows and rows[0].get("problem"):
            return str(rows[0]["problem"])
    return "1 + 1"


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "prompt")]),
        outputs=Schema([ColSpec("string")]),
        params=ParamSchema(
            [
                ParamSpec("max_new_tokens", "long", 128),
                ParamSpec("temperature", "double", 0.0),
                ParamSpec("top_p", "double", 1.0),
            ]
        ),
    )


def _pip_requirements() -> list[str]:
    """Pinned to this environment; given explicitly because MLflow's inference loads the model a second time."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for names in (("mlflow", "mlflow-skinny"), ("torch",), ("transformers",), ("tokenizers",), ("pandas",)):
        for name in names:  # GPU images often ship mlflow-skinny instead of mlflow
            try:
                pins.append(f"{name}=={version(name)}")
                break
            except PackageNotFoundError:
                continue
    return pins


def _log_pyfunc(cfg: Config, stage: str, folder: Path, digest: str):
    import mlflow
    import pandas as pd

    return mlflow.pyfunc.log_model(
        name="model",
        python_model=str(PYFUNC_FILE),
        artifacts={"hf_model": str(folder)},
        signature=signature(),
        input_example=pd.DataFrame({"prompt": [_input_example()]}),
        model_config={"system_prompt": cfg.chat.system_prompt},
        pip_requirements=_pip_requirements(),
        tags={"r1.stage": stage, "r1.model_digest": digest},
    )


def log_stage_model(cfg: Config, stage: str) -> dict[str, Any] | None:
    """Log the stage's final model into the active run and register a version from it; None when the stage
    produced no model (skipped) or there is no run. Returns {name, version, digest, model_uri, parent}."""
    from r1_pipeline.training import is_skipped

    if not is_main_process() or stage not in MODEL_STAGES:
        return None
    import mlflow
    from mlflow import MlflowClient

    run = mlflow.active_run()
    folder = paths.model_dir(stage)
    if run is None or not folder.is_dir() or is_skipped(folder):
        return None
    client = MlflowClient()
    if stage in STAGE_DATA:
        from r1_pipeline.tracking import log_dataset

        log_dataset(STAGE_DATA[stage][0], STAGE_DATA[stage][1], "training")
    experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or cfg.project.mlflow_experiment
    profile = profile_name()
    name = registered_name(stage, experiment, profile)
    digest = model_digest(folder)
    parent = parent_stage(cfg, stage)
    parent_ref = None
    if parent and paths.model_dir(parent).is_dir() and not is_skipped(paths.model_dir(parent)):
        pv = find_version(client, registered_name(parent, experiment, profile), model_digest(paths.model_dir(parent)))
        parent_ref = f"{pv.name}/{pv.version}" if pv is not None else None
    with warnings.catch_warnings():
        # the signature is given explicitly: MLflow's hint to add type hints to predict() does not apply
        warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")
        info = _log_pyfunc(cfg, stage, folder, digest)
    _ensure_registered_model(client, name, stage)
    tags = {"r1.stage": stage, "r1.profile": profile, "r1.model_digest": digest, "r1.training_run": run.info.run_id}
    if parent_ref:
        tags["r1.parent_model"] = parent_ref
    elif parent:
        tags["r1.parent_stage"] = parent
    tags.update({k: v for k, v in provenance_tags(stage).items() if k.startswith(("git.", "dvc.", "prefect."))})
    version = client.create_model_version(
        name,
        source=info.model_uri,
        run_id=run.info.run_id,
        tags=tags,
        model_id=info.model_id,
        description=f"`{stage}` trained in run {run.info.run_id}" + (f", from {parent_ref}" if parent_ref else ""),
    )
    mlflow.set_tags(
        {
            "registry.version": f"{name}/{version.version}",
            "r1.model_digest": digest,
            **({"r1.parent_model": parent_ref} if parent_ref else {}),
        }
    )
    print(
        f"registry: {stage}: registered {name} version {version.version} (from this run; "
        f"parent {parent_ref or parent or 'none'})",
        flush=True,
    )
    return {
        "name": name,
        "version": str(version.version),
        "digest": digest,
        "model_uri": info.model_uri,
        "parent": parent_ref,
    }


# ---------------------------------------------------------------------------------------- evaluate: promote


def outcomes_by_problem(records: list[dict], model: str, benchmark: str) -> dict[str, list[bool]]:
    """{problem_id: [verdict of each sample in sample order]} for one model on one benchmark."""
    out: dict[str, dict[int, bool]] = {}
    for r in records:
        if r.get("model") == model and r.get("benchmark") == benchmark:
            out.setdefault(str(r["problem_id"]), {})[int(r["sample_idx"])] = bool(r["correct"])
    return {p: [s[i] for i in sorted(s)] for p, s in out.items()}


def problems_digest(records: list[dict], model: str, benchmark: str) -> str:
    """sha256 of the (problem id, gold answer) pairs evaluated: the same problems, the same digest."""
    pairs = sorted(
        {
            (str(r["problem_id"]), str(r.get("gold")))
            for r in records
            if r.get("model") == model and r.get("benchmark") == benchmark
        }
    )
    return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()


def decide(new: dict[str, Any], champion: dict[str, Any] | None, z: float = PROMOTION_Z) -> dict[str, Any]:
    """Promotion decision of one version on one benchmark.

    `new`/`champion`: {"outcomes": {problem: [bool]}, and the PROTOCOL_KEYS}; `champion` None when there is no
    champion yet, `new["outcomes"]` empty when the version was not evaluated. Returns {decision, reason, and
    difference/stderr/n_problems when compared}; decision is promoted, kept, not comparable or not evaluated.
    """
    from r1_pipeline.metrics import paired_difference

    if not new.get("outcomes"):
        return {"decision": "not evaluated", "reason": "no evaluation on this benchmark: never promoted"}
    if champion is None:
        return {"decision": "promoted", "reason": "first evaluated version"}
    differs = [k for k in PROTOCOL_KEYS if str(new.get(k)) != str(champion.get(k))]
    if differs:
        detail = ", ".join(f"{k} {new.get(k)} vs {champion.get(k)}" for k in differs)
        return {"decision": "not comparable", "reason": f"evaluation protocol differs from the champion's: {detail}"}
    rows = [
        {"model": who, "benchmark": "b", "problem_id": p, "correct": c}
        for who, data in (("new", new), ("champion", champion))
        for p, samples in data["outcomes"].items()
        for c in samples
    ]
    diff = paired_difference(rows, "new", "champion", "b")
    if diff is None:
        return {"decision": "not comparable", "reason": "no problem in common with the champion's evaluation"}
    numbers = {"difference": diff["difference"], "stderr": diff["stderr"], "n_problems": diff["n_problems"]}
    threshold = z * diff["stderr"]
    if diff["difference"] > threshold:
        return {
            "decision": "promoted",
            "reason": f"pass@1 +{diff['difference']:.4f} > {z:g} x SE {diff['stderr']:.4f}",
            **numbers,
        }
    return {
        "decision": "kept",
        "reason": f"pass@1 {diff['difference']:+.4f} not above {z:g} x SE {diff['stderr']:.4f}",
        **numbers,
    }


def _protocol(cfg: Config, records: list[dict], model: str, bench: str, k: int | None) -> dict[str, Any]:
    e = cfg.evaluate
    return {
        "k": k,
        "temperature": e.temperature,
        "top_p": e.top_p,
        "max_new_tokens": e.max_new_tokens,
        "problems_sha256": problems_digest(records, model, bench),
    }


def _champion_evidence(client, version, bench: str) -> dict[str, Any] | None:
    """The champion's protocol and per-problem outcomes on `bench`, from its tags and the artifact they name."""
    import mlflow

    tags = version.tags
    prefix = f"eval.{bench}."
    if f"{prefix}outcomes_run" not in tags:
        return {"outcomes": {}}
    local = mlflow.artifacts.download_artifacts(
        run_id=tags[f"{prefix}outcomes_run"], artifact_path=tags[f"{prefix}outcomes_path"]
    )
    evidence = {k: tags.get(prefix + k) for k in PROTOCOL_KEYS}
    evidence["outcomes"] = json.loads(Path(local).read_text())
    return evidence


def promote_models(cfg: Config, metrics: dict[str, dict[str, dict[str, Any]]], records: list[dict]) -> list[dict]:
    """Tag each evaluated, registered model version with its evaluation and decide its promotion per benchmark
    (module docstring). Needs the evaluate stage's active MLflow run; returns one summary per decision."""
    from r1_pipeline.training import is_skipped

    if not is_main_process():
        return []
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    run = mlflow.active_run()
    if run is None:
        return []
    client = MlflowClient()
    experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or cfg.project.mlflow_experiment
    profile = profile_name()
    primary = cfg.data.eval_sets[0].name if cfg.data.eval_sets else None
    done = []
    for model in MODEL_STAGES:
        folder = paths.model_dir(model)
        if model not in metrics or not folder.is_dir() or is_skipped(folder):
            continue
        name = registered_name(model, experiment, profile)
        version = find_version(client, name, model_digest(folder))
        if version is None:
            print(
                f"registry: {model}: no version of {name} holds these weights (was `{model}` trained with another "
                f"MLflow store?): not promoted",
                flush=True,
            )
            continue
        tags = {"eval.run_id": run.info.run_id, "eval.primary_benchmark": str(primary)}
        for bench, summary in metrics[model].items():
            outcomes = outcomes_by_problem(records, model, bench)
            artifact = f"registry/{model}/{bench}.json"
            with _tmp_json(outcomes, Path(artifact).name) as f:
                mlflow.log_artifact(str(f), artifact_path=str(Path(artifact).parent))
            protocol = _protocol(cfg, records, model, bench, summary.get("k"))
            tags.update({f"eval.{bench}.{k}": str(v) for k, v in protocol.items()})
            tags[f"eval.{bench}.outcomes_run"], tags[f"eval.{bench}.outcomes_path"] = run.info.run_id, artifact
            for key, value in summary.items():
                if isinstance(value, (int, float)):
                    tags[f"eval.{bench}.{key.replace('@', '_at_')}"] = repr(value)
        for key, value in tags.items():
            client.set_model_version_tag(name, version.version, key, value)
        version = client.get_model_version(name, version.version)
        for bench in metrics[model]:
            aliases = [champion_alias(bench)] + ([CHAMPION] if bench == primary else [])
            try:
                current = client.get_model_version_by_alias(name, aliases[0])
            except MlflowException:
                current = None
            new = {
                **{k: version.tags.get(f"eval.{bench}.{k}") for k in PROTOCOL_KEYS},
                "outcomes": outcomes_by_problem(records, model, bench),
            }
            if current is not None and str(current.version) == str(version.version):
                verdict = {"decision": "kept", "reason": "this version is the champion already"}
            else:
                verdict = decide(new, _champion_evidence(client, current, bench) if current is not None else None)
            if verdict["decision"] == "promoted":
                for alias in aliases:
                    client.set_registered_model_alias(name, alias, version.version)
            verdict["champion_version"] = (
                str(version.version)
                if verdict["decision"] == "promoted"
                else (str(current.version) if current is not None else "none")
            )
            for key, value in verdict.items():
                client.set_model_version_tag(name, version.version, f"promotion.{bench}.{key}", str(value))
            print(
                f"registry: {name} version {version.version} on {bench}: {verdict['decision']} ({verdict['reason']})",
                flush=True,
            )
            mlflow.set_tag(f"registry.{model}.{bench}", f"{name}/{version.version}: {verdict['decision']}")
            done.append({"model": model, "name": name, "version": str(version.version), "benchmark": bench, **verdict})
    return done


class _tmp_json:
    """A JSON file in a temporary directory under the given file name (MLflow logs files by their name)."""

    def __init__(self, obj, filename: str):
        self.obj, self.filename = obj, filename

    def __enter__(self) -> Path:
        import tempfile

        self.dir = tempfile.TemporaryDirectory(prefix="r1-registry-")
        path = Path(self.dir.name) / self.filename
        path.write_text(json.dumps(self.obj))
        return path

    def __exit__(self, *exc) -> None:
        self.dir.cleanup()


def champion_path(name: str, dst: str | Path | None = None, alias: str = CHAMPION) -> Path:
    """Download the Hugging Face folder of a version by alias (for `from_pretrained`)."""
    import mlflow

    root = Path(mlflow.artifacts.download_artifacts(f"models:/{name}@{alias}", dst_path=str(dst) if dst else None))
    # a pyfunc model keeps its artifact folder under artifacts/<the folder's own name> (outputs/models/<stage>)
    folders = [d for d in (root / "artifacts").iterdir() if d.is_dir()] if (root / "artifacts").is_dir() else []
    if len(folders) != 1:
        raise RegistryError(f"models:/{name}@{alias} holds no Hugging Face folder under {root / 'artifacts'}")
    return folders[0]
