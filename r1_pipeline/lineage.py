"""`r1 lineage <model-or-run>`: the chain from data to a registered model, read back from MLflow.

Each registered version names the run that trained it (`run_id`) and the version it started from
(`r1.parent_model`, see r1_pipeline.registry); each training run lists its data files as MLflow dataset inputs
(`r1.sha256` = the file's sha256, `r1.path`) and carries git/DVC/Prefect tags; the version's evaluation names
the evaluate run (`eval.run_id`). Walking the parents back to the root gives, oldest first:

    data   cold_start  outputs/data/cold_start.jsonl  sha256 1f2e…
    base   r1-pipeline-tiny-base/1   run 5e4b…  git 63b5a86 (dirty)  inputs: corpus 9a1c…
    sft    r1-pipeline-tiny-sft/1    run 005e…  git 63b5a86          inputs: cold_start 1f2e…
    ...
    eval   run c810…  arith_heldout pass@1 0.568 ± 0.028 (k 4)  inputs: arith_heldout 77d0…
    model  r1-pipeline-tiny-grpo/2  aliases champion, champion-arith_heldout  arith_heldout: promoted (...)

A reference is `models:/<name>/<version>`, `models:/<name>@<alias>`, `<name>/<version>`, `<name>@<alias>`,
or an MLflow run id (a training run: its registered version; the evaluate run: every version it evaluated).
"""

from __future__ import annotations

import re
from typing import Any

from r1_pipeline.registry import RegistryError

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def resolve(client, ref: str) -> list:
    """The model versions a reference names (see the module docstring); RegistryError when it names none."""
    from mlflow.exceptions import MlflowException

    ref = ref.strip().removeprefix("models:/")
    try:
        if _RUN_ID.match(ref):
            run = client.get_run(ref)
            if "registry.version" in run.data.tags:
                name, version = run.data.tags["registry.version"].rsplit("/", 1)
                return [client.get_model_version(name, version)]
            refs = sorted({v.split(":")[0] for k, v in run.data.tags.items() if k.startswith("registry.")})
            if not refs:
                raise RegistryError(
                    f"run {ref} ({run.data.tags.get('r1.stage', 'no stage')}) registered or evaluated "
                    "no model; pass a training or evaluate run, or a model version"
                )
            return [client.get_model_version(*r.rsplit("/", 1)) for r in refs]
        if "@" in ref:
            name, alias = ref.rsplit("@", 1)
            return [client.get_model_version_by_alias(name, alias)]
        if "/" in ref:
            name, version = ref.rsplit("/", 1)
            if version.isdigit():
                return [client.get_model_version(name, version)]
    except MlflowException as exc:
        raise RegistryError(f"{ref}: {exc.message if hasattr(exc, 'message') else exc}") from None
    raise RegistryError(f"{ref!r} is neither a model version (name/3, name@champion, models:/...) nor a run id")


def chain(client, version, limit: int = 20) -> list:
    """The version and its ancestors through `r1.parent_model`, oldest first."""
    out = [version]
    while (parent := out[-1].tags.get("r1.parent_model")) and len(out) < limit:
        name, number = parent.rsplit("/", 1)
        out.append(client.get_model_version(name, number))
    return out[::-1]


def _inputs(run) -> list[dict[str, Any]]:
    rows = []
    for di in run.inputs.dataset_inputs if run.inputs else []:
        tags = {t.key: t.value for t in di.tags}
        rows.append(
            {
                "name": di.dataset.name,
                "context": tags.get("mlflow.data.context"),
                "sha256": tags.get("r1.sha256"),
                "path": tags.get("r1.path") or di.dataset.source,
                "digest": di.dataset.digest,
            }
        )
    return rows


def _git(tags: dict) -> str:
    commit = tags.get("git.commit", "unknown")
    return f"git {commit[:10]}" + (" (dirty)" if tags.get("git.dirty") == "true" else "")


def lineage(client, version) -> list[dict[str, Any]]:
    """One entry per link, oldest first: data files, each training run with its version, the evaluation, the
    version itself with its aliases and promotion decisions."""
    links: list[dict[str, Any]] = []
    seen: set[str] = set()
    versions = chain(client, version)
    for v in versions:
        run = client.get_run(v.run_id) if v.run_id else None
        inputs = _inputs(run) if run else []
        for ds in inputs:
            if ds["context"] == "training" and (ds["sha256"] or ds["digest"]) not in seen:
                seen.add(ds["sha256"] or ds["digest"])
                links.append({"kind": "data", **ds})
        tags = run.data.tags if run else {}
        links.append(
            {
                "kind": "train",
                "stage": v.tags.get("r1.stage", "?"),
                "version": f"{v.name}/{v.version}",
                "run_id": v.run_id,
                "git": _git(tags),
                "inputs": inputs,
                "prefect_flow_run": tags.get("prefect.flow_run_id"),
                "dvc_lock": tags.get("dvc.lock.outs"),
            }
        )
    if version.tags.get("eval.run_id"):
        eval_run = client.get_run(version.tags["eval.run_id"])
        benches = sorted({k.split(".")[1] for k in version.tags if k.startswith("eval.") and k.endswith(".pass_at_1")})
        scores = {
            b: {
                "pass@1": version.tags.get(f"eval.{b}.pass_at_1"),
                "stderr": version.tags.get(f"eval.{b}.pass_at_1_stderr"),
                "k": version.tags.get(f"eval.{b}.k"),
            }
            for b in benches
        }
        links.append(
            {
                "kind": "eval",
                "run_id": eval_run.info.run_id,
                "scores": scores,
                "inputs": [i for i in _inputs(eval_run) if i["context"] == "evaluation"],
            }
        )
    decisions = {
        k.split(".")[1]: v for k, v in version.tags.items() if k.startswith("promotion.") and k.endswith(".decision")
    }
    links.append(
        {
            "kind": "model",
            "version": f"{version.name}/{version.version}",
            "aliases": list(getattr(version, "aliases", []) or []),
            "decisions": decisions,
            "reasons": {b: version.tags.get(f"promotion.{b}.reason") for b in decisions},
        }
    )
    return links


def _short(h: str | None) -> str:
    return (h or "?")[:12]


def format_lineage(links: list[dict[str, Any]]) -> str:
    lines = []
    for link in links:
        kind = link["kind"]
        if kind == "data":
            lines.append(f"data   {link['name']:<14} {link['path']}  sha256 {_short(link['sha256'])}")
        elif kind == "train":
            data = ", ".join(f"{i['name']} {_short(i['sha256'])}" for i in link["inputs"] if i["context"] == "training")
            lines.append(
                f"{link['stage']:<6} {link['version']:<32} run {link['run_id']}  {link['git']}"
                + (f"  inputs: {data}" if data else "")
                + (f"  flow run {link['prefect_flow_run']}" if link["prefect_flow_run"] else "")
            )
        elif kind == "eval":
            scores = "; ".join(
                f"{b} pass@1 {float(s['pass@1']):.3f} ± {float(s['stderr'] or 0):.3f} (k {s['k']})"
                for b, s in link["scores"].items()
            )
            data = ", ".join(f"{i['name']} {_short(i['sha256'])}" for i in link["inputs"])
            lines.append(f"eval   run {link['run_id']}  {scores}" + (f"  inputs: {data}" if data else ""))
        else:
            decisions = "; ".join(f"{b}: {d} ({link['reasons'].get(b)})" for b, d in link["decisions"].items())
            lines.append(
                f"model  {link['version']}  aliases {', '.join(link['aliases']) or 'none'}"
                + (f"  {decisions}" if decisions else "  not evaluated")
            )
    return "\n".join(lines)
