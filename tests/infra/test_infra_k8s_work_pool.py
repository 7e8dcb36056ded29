"""The Kubernetes GPU work-pool template (infra/prefect/k8s-gpu-base-job-template.json).

Rendered with Prefect's own templating and validated with `kubernetes-validate --strict` (bundled OpenAPI
schemas, unknown fields rejected), for the Kubernetes versions a cluster is likely to run.
"""

from __future__ import annotations

import copy
import json

import pytest
from infra_checks import K8S_TEMPLATE, render_job_manifest, require_module, run

K8S_VERSIONS = ["1.31.0", "1.37.0"]


def strict_errors(manifest: dict, version: str) -> str | None:
    """None when strict validation passes, else the validator's message."""
    kv = require_module("kubernetes_validate", "kubernetes-validate")
    try:
        kv.validate(manifest, version, strict=True)
    except kv.ValidationError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_rendered_job_passes_strict_validation(k8s_template, k8s_job_variables, version):
    manifest = render_job_manifest(k8s_template, k8s_job_variables)
    assert strict_errors(manifest, version) is None


def test_rendered_job_with_defaults_only_passes(k8s_template):
    manifest = render_job_manifest(k8s_template, {"image": "r1-pipeline:dev"})
    assert strict_errors(manifest, K8S_VERSIONS[-1]) is None


def test_cli_strict_validates_rendered_manifest(k8s_template, k8s_job_variables, tmp_path):
    """The same check through the `kubernetes-validate --strict` command line."""
    require_module("kubernetes_validate", "kubernetes-validate")
    import sys

    good = tmp_path / "job.json"
    good.write_text(json.dumps(render_job_manifest(k8s_template, k8s_job_variables)))
    res = run([sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", str(good)])
    assert res.returncode == 0, res.stdout + res.stderr

    broken = render_job_manifest(k8s_template, k8s_job_variables)
    broken["spec"]["template"]["spec"]["completions"] = 1
    bad = tmp_path / "bad-job.json"
    bad.write_text(json.dumps(broken))
    res = run([sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", str(bad)])
    assert res.returncode != 0


def test_completions_in_pod_spec_is_rejected(k8s_template, k8s_job_variables):
    """The prefect-kubernetes 0.8 default puts completions/parallelism in the pod spec: strict rejects it."""
    broken = copy.deepcopy(k8s_template)
    job_spec = broken["job_configuration"]["job_manifest"]["spec"]
    pod_spec = job_spec["template"]["spec"]
    pod_spec["completions"] = job_spec.pop("completions")
    pod_spec["parallelism"] = job_spec.pop("parallelism")
    errors = strict_errors(render_job_manifest(broken, k8s_job_variables), K8S_VERSIONS[-1])
    assert errors is not None and "completions" in errors


def test_misplaced_gpu_request_is_rejected(k8s_template, k8s_job_variables):
    broken = copy.deepcopy(k8s_template)
    container = broken["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    container["nvidia.com/gpu"] = container["resources"]["limits"].pop("nvidia.com/gpu")
    assert strict_errors(render_job_manifest(broken, k8s_job_variables), K8S_VERSIONS[-1]) is not None


def test_job_shape_for_gpu_training(k8s_template, k8s_job_variables):
    m = render_job_manifest(k8s_template, k8s_job_variables)
    spec = m["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert spec["completions"] == 1 and spec["parallelism"] == 1
    assert "completions" not in pod and "parallelism" not in pod
    assert spec["activeDeadlineSeconds"] >= 24 * 3600
    assert spec["backoffLimit"] == 0  # retries belong to Prefect
    gpus = k8s_job_variables["gpu_count"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == gpus
    assert container["resources"]["requests"]["nvidia.com/gpu"] == gpus
    assert pod["nodeSelector"] and pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["image"] == k8s_job_variables["image"]
    assert container["args"] == ["prefect", "flow-run", "execute"]


def test_template_passes_prefect_server_validation(k8s_template):
    """Prefect's server refuses a template whose placeholders are not declared variables."""
    actions = require_module("prefect.server.schemas.actions", "prefect")
    actions.validate_base_job_template(k8s_template)

    broken = copy.deepcopy(k8s_template)
    broken["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["hostname"] = "{{ undeclared_var }}"
    with pytest.raises(ValueError, match="undeclared_var"):
        actions.validate_base_job_template(broken)


def test_deployment_job_variables_match_the_variables_schema(k8s_template, k8s_job_variables):
    """What the server checks when `prefect deploy` registers k8s-gpu (a JSON-schema check of job_variables)."""
    jsonschema = require_module("jsonschema")
    schema = copy.deepcopy(k8s_template["variables"])
    validator = jsonschema.Draft202012Validator(schema)
    assert not list(validator.iter_errors(k8s_job_variables))

    broken = dict(k8s_job_variables, gpu_count="eight")
    assert list(validator.iter_errors(broken))


def test_prefect_kubernetes_worker_accepts_rendered_job(k8s_template, k8s_job_variables):
    """prefect-kubernetes validates the job manifest itself; its 0.8 check still looks for
    completions/parallelism and accepts them in the Job spec (as equal values it can move)."""
    worker = require_module("prefect_kubernetes.worker", "prefect-kubernetes (needs prefect>=3.8.4)")
    manifest = render_job_manifest(k8s_template, k8s_job_variables)
    worker.KubernetesWorkerJobConfiguration(job_manifest=manifest)

    broken = copy.deepcopy(manifest)
    broken["spec"].pop("completions")
    broken["spec"].pop("parallelism")
    with pytest.raises(ValueError, match="completions"):
        worker.KubernetesWorkerJobConfiguration(job_manifest=broken)


def test_template_file_is_plain_json():
    text = K8S_TEMPLATE.read_text()
    data = json.loads(text)
    assert set(data) == {"job_configuration", "variables"}
