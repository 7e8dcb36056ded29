"""Helpers for the offline validation of the templates under infra/ (used by tests/infra).

Every test validates a real file and also proves that its validator rejects a deliberately broken copy, so a
validator that silently accepts anything cannot make a test pass. A test skips (with the reason) only when the
validator it needs is not installed; the packages are in the project's `test` extra.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
K8S_TEMPLATE = INFRA / "prefect" / "k8s-gpu-base-job-template.json"
COMPOSE_FILE = INFRA / "compose" / "docker-compose.yaml"
PREFECT_YAML = REPO / "prefect.yaml"


def require_module(name: str, package: str | None = None):
    """Import a validator module or skip the test, naming the pip package that provides it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        pytest.skip(f"validator not installed: `pip install {package or name}` ({exc})")


def find_tool(name: str, package: str) -> str:
    """Path of a validator executable (PATH, next to the interpreter, or the scripts dir) or skip."""
    candidates = [
        shutil.which(name),
        str(Path(sys.executable).parent / name),
        str(Path(sysconfig.get_path("scripts")) / name),
    ]
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    pytest.skip(f"validator not installed: `{name}` (pip install {package})")


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kwargs)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def dump_yaml(data: Any, path: Path) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def load_json(path: Path) -> Any:
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------------------ Prefect rendering


def variable_defaults(template: dict) -> dict:
    """The defaults Prefect's BaseJobConfiguration takes from the variables schema (None values excluded)."""
    props = template["variables"].get("properties", {})
    return {k: v["default"] for k, v in props.items() if v.get("default") is not None}


def render_job_manifest(template: dict, job_variables: dict, flow_run_name: str = "bright-fox") -> dict:
    """Render the base job template the way the Prefect Kubernetes worker does, offline.

    1. Variables = schema defaults overlaid with the deployment's job_variables (BaseJobConfiguration).
    2. `apply_values` (Prefect's own templating) fills the `{{ placeholders }}`; unset ones are dropped.
    3. What the worker adds in `prepare_for_flow_run`: env as a list of name/value pairs, the default
       `prefect flow-run execute` command, generateName and labels.
    """
    templating = require_module("prefect.utilities.templating", "prefect")
    values = variable_defaults(template)
    values.update(job_variables)
    config = templating.apply_values(copy.deepcopy(template["job_configuration"]), values)
    manifest = config["job_manifest"]

    run_id = "3f1c8a2e-0d4b-4c55-9a0e-6f2d2b7e1a90"
    env = {str(k): str(v) for k, v in (config.get("env") or {}).items() if v is not None}
    env.update(
        {
            "PREFECT_API_URL": "http://prefect-server.prefect.svc.cluster.local:4200/api",
            "PREFECT__FLOW_RUN_ID": run_id,
        }
    )
    labels = {"prefect.io/flow-run-id": run_id, "prefect.io/flow-run-name": flow_run_name}
    labels.update(config.get("labels") or {})

    meta = manifest.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), **labels}
    meta.setdefault("annotations", {})
    meta.setdefault("namespace", "default")
    gen = meta.get("generateName")
    if not gen or gen == "-":
        meta["generateName"] = f"{config.get('name') or flow_run_name}-"
    pod = manifest["spec"]["template"]
    pod.setdefault("metadata", {}).setdefault("labels", {}).update(labels)
    container = pod["spec"]["containers"][0]
    container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    if not container.get("args"):
        command = config.get("command") or "prefect flow-run execute"
        container["args"] = command.split() if isinstance(command, str) else command
    return manifest
