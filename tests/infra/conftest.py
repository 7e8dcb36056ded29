"""Fixtures for tests/infra: the templates under infra/ validated offline (see infra_checks.py)."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

# Make the helper module importable whatever pytest's import mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from infra_checks import K8S_TEMPLATE, PREFECT_YAML, load_json, load_yaml  # noqa: E402


@pytest.fixture
def k8s_template() -> dict:
    return load_json(K8S_TEMPLATE)


@pytest.fixture
def prefect_config() -> dict:
    return load_yaml(PREFECT_YAML)


@pytest.fixture
def k8s_job_variables(prefect_config) -> dict:
    """The k8s-gpu deployment's job_variables, with the image placeholder given a sample value."""
    dep = next(d for d in prefect_config["deployments"] if d["name"] == "k8s-gpu")
    jv = copy.deepcopy(dep["work_pool"]["job_variables"])
    jv["image"] = "ghcr.io/example/r1-pipeline:0123abc"
    return jv
