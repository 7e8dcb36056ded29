"""prefect.yaml (deployments) and the prefect-worker Helm values.

prefect.yaml is loaded with the model `prefect deploy` itself uses (PrefectYamlModel) and checked for the two
deployments, their entrypoint and pull steps; the k8s-gpu job variables must fit the work pool's variables
and its flow parameters must be arguments of the flow. The Helm values are checked against the chart's value
layout and their Kubernetes fragments against the Kubernetes schemas (kubernetes-validate, strict).
"""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest
from infra_checks import INFRA, REPO, load_yaml, require_module

ENTRYPOINT = "flows/pipeline.py:r1_pipeline"
HELM_VALUES = INFRA / "prefect" / "helm-values-worker.yaml"


def prefect_yaml_model():
    models = require_module("prefect.cli.deploy._models", "prefect")
    return models.PrefectYamlModel


def deployments(cfg: dict) -> dict[str, dict]:
    return {d["name"]: d for d in cfg["deployments"]}


def test_prefect_yaml_loads_with_prefects_model(prefect_config):
    model = prefect_yaml_model().model_validate(prefect_config)
    assert {d.name for d in model.deployments} == {"local", "k8s-gpu"}
    assert model.prefect_version and model.prefect_version.startswith("3.")
    assert model.build is None and model.push is None
    for dep in model.deployments:
        assert dep.entrypoint == ENTRYPOINT
        assert dep.work_pool and dep.work_pool.name


def test_broken_prefect_yaml_is_rejected(prefect_config, tmp_path):
    pydantic = require_module("pydantic")
    model = prefect_yaml_model()
    broken = copy.deepcopy(prefect_config)
    broken["deployments"] = {d["name"]: d for d in broken["deployments"]}  # a mapping, not a list
    with pytest.raises(pydantic.ValidationError):
        model.model_validate(broken)
    broken = copy.deepcopy(prefect_config)
    broken["deployments"][0]["parameters"] = ["gpu_slots"]
    with pytest.raises(pydantic.ValidationError):
        model.model_validate(broken)
    # and the file checks below catch a wrong entrypoint
    broken = copy.deepcopy(prefect_config)
    broken["deployments"][1]["entrypoint"] = "flows/pipeline.py:pipeline"
    with pytest.raises(AssertionError):
        check_deployments(broken)


def check_deployments(cfg: dict) -> None:
    deps = deployments(cfg)
    assert set(deps) == {"local", "k8s-gpu"}
    for dep in deps.values():
        assert dep["entrypoint"] == ENTRYPOINT
    local, k8s = deps["local"], deps["k8s-gpu"]
    assert local["work_pool"]["name"] == "local-process" and local["parameters"] == {}
    assert k8s["work_pool"]["name"] == "k8s-gpu"
    jv = k8s["work_pool"]["job_variables"]
    assert {"image", "gpu_count"} <= set(jv)
    slots = k8s["parameters"]["gpu_slots"]
    assert {"sft", "grpo"} <= set(slots)
    assert all(isinstance(v, int) and 0 <= v <= jv["gpu_count"] for v in slots.values())


def test_deployments(prefect_config):
    check_deployments(prefect_config)


def test_pull_steps_are_prefect_steps(prefect_config):
    steps = list(prefect_config["pull"])
    for dep in prefect_config["deployments"]:
        steps += dep.get("pull") or []
    assert steps
    for step in steps:
        ((fqn, _args),) = step.items()
        module, _, func = fqn.rpartition(".")
        mod = require_module(module, "prefect")
        assert callable(getattr(mod, func, None)), fqn
    assert prefect_config["pull"][0]["prefect.deployments.steps.set_working_directory"]["directory"]


def test_k8s_job_variables_fit_the_work_pool(k8s_template, k8s_job_variables):
    jsonschema = require_module("jsonschema")
    props = k8s_template["variables"]["properties"]
    assert set(k8s_job_variables) <= set(props)
    errors = list(jsonschema.Draft202012Validator(k8s_template["variables"]).iter_errors(k8s_job_variables))
    assert errors == []


def find_function(path: Path, name: str, depth: int = 0) -> ast.FunctionDef | None:
    """The function `name` defined in `path`, following `from package.module import name` re-exports."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            return node
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and depth < 3:
            if any(alias.name == name and alias.asname in (None, name) for alias in node.names):
                target = REPO / (node.module.replace(".", "/") + ".py")
                if target.is_file():
                    return find_function(target, name, depth + 1)
    return None


def test_flow_parameters_match_the_entrypoint(prefect_config):
    """Every deployment parameter must be an argument of the flow function (contract with flows/)."""
    path, _, func = ENTRYPOINT.partition(":")
    source = REPO / path
    assert source.is_file(), f"{path} (the deployments' entrypoint) does not exist"
    fn = find_function(source, func)
    assert fn is not None, f"{path} defines (or re-exports) no function {func}"
    params = {a.arg for a in fn.args.args + fn.args.kwonlyargs}
    assert "gpu_slots" in params
    for dep in prefect_config["deployments"]:
        missing = set(dep.get("parameters") or {}) - params
        assert not missing, f"deployment {dep['name']}: {func}() takes no {sorted(missing)}"


def test_gpu_slots_name_pipeline_stages(prefect_config):
    stages = set(load_yaml(REPO / "dvc.yaml")["stages"])
    slots = deployments(prefect_config)["k8s-gpu"]["parameters"]["gpu_slots"]
    assert set(slots) <= stages, f"not DVC stages: {sorted(set(slots) - stages)}"


# --------------------------------------------------------------------------------------------- Helm values

# Top-level and `worker` keys of the prefect-worker chart's values.yaml (PrefectHQ/prefect-helm).
CHART_TOP = {
    "nameOverride",
    "fullnameOverride",
    "namespaceOverride",
    "commonLabels",
    "commonAnnotations",
    "worker",
    "serviceAccount",
    "role",
    "rolebinding",
}
CHART_WORKER = {
    "autoscaling",
    "clusterUid",
    "initContainer",
    "image",
    "config",
    "apiConfig",
    "cloudApiConfig",
    "selfHostedCloudApiConfig",
    "serverApiConfig",
    "revisionHistoryLimit",
    "replicaCount",
    "resources",
    "livenessProbe",
    "podSecurityContext",
    "priorityClassName",
    "containerSecurityContext",
    "podLabels",
    "podAnnotations",
    "affinity",
    "nodeSelector",
    "tolerations",
    "extraEnvVars",
    "extraEnvVarsCM",
    "extraEnvVarsSecret",
    "extraContainers",
    "extraVolumes",
    "extraVolumeMounts",
    "extraArgs",
}
CHART_CONFIG = {
    "workPool",
    "workQueues",
    "queryInterval",
    "prefetchSeconds",
    "http2",
    "type",
    "installPolicy",
    "name",
    "limit",
    "baseJobTemplate",
}


def helm_problems(values: dict, prefect_cfg: dict) -> list[str]:
    problems = [f"unknown top-level key {k}" for k in set(values) - CHART_TOP]
    worker = values.get("worker", {})
    problems += [f"unknown worker key {k}" for k in set(worker) - CHART_WORKER]
    config = worker.get("config", {})
    problems += [f"unknown worker.config key {k}" for k in set(config) - CHART_CONFIG]
    k8s_pool = deployments(prefect_cfg)["k8s-gpu"]["work_pool"]["name"]
    if config.get("workPool") != k8s_pool:
        problems.append(f"workPool {config.get('workPool')} is not prefect.yaml's {k8s_pool}")
    if config.get("type") != "kubernetes":
        problems.append("worker type must be kubernetes")
    if worker.get("apiConfig") not in ("server", "cloud", "selfHostedCloud"):
        problems.append(f"apiConfig {worker.get('apiConfig')}")
    if worker.get("apiConfig") == "server" and not worker.get("serverApiConfig", {}).get("apiUrl"):
        problems.append("serverApiConfig.apiUrl is empty")
    tag = worker.get("image", {}).get("prefectTag", "")
    if not tag.startswith(str(prefect_cfg["prefect-version"])):
        problems.append(f"worker image {tag} is not prefect {prefect_cfg['prefect-version']}")
    if config.get("baseJobTemplate", {}).get("configuration") is not None:
        problems.append("the base job template must come from --set-file (one source of truth)")
    return problems


def test_helm_values_fit_the_chart(prefect_config):
    values = load_yaml(HELM_VALUES)
    assert helm_problems(values, prefect_config) == []
    broken = copy.deepcopy(values)
    broken["worker"]["config"]["workPol"] = broken["worker"]["config"].pop("workPool")
    broken["worker"]["image"]["prefectTag"] = "2-python3.11-kubernetes"
    assert len(helm_problems(broken, prefect_config)) >= 3


def test_helm_values_kubernetes_fragments_are_valid(tmp_path):
    kv = require_module("kubernetes_validate", "kubernetes-validate")
    worker = load_yaml(HELM_VALUES)["worker"]

    def pod(w: dict) -> dict:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "prefect-worker"},
            "spec": {
                "securityContext": w["podSecurityContext"],
                "affinity": w["affinity"],
                "nodeSelector": w["nodeSelector"],
                "tolerations": w["tolerations"],
                "containers": [
                    {
                        "name": "worker",
                        "image": "prefecthq/prefect:" + w["image"]["prefectTag"],
                        "resources": w["resources"],
                        "securityContext": w["containerSecurityContext"],
                    }
                ],
            },
        }

    kv.validate(pod(worker), "1.37.0", strict=True)
    broken = copy.deepcopy(worker)
    broken["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"] = "high"
    with pytest.raises(kv.ValidationError):
        kv.validate(pod(broken), "1.37.0", strict=True)
