"""Shared test setup: one MLflow SQLite store for the session (its schema migration runs once, not per test)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def mlflow_store(tmp_path_factory):
    """Point every stage (and subprocess) at a session-wide SQLite store, created once."""
    if "R1_TEST_KEEP_MLFLOW_URI" in os.environ:
        yield os.environ["MLFLOW_TRACKING_URI"]
        return
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.MlflowClient().search_experiments()  # creates the schema once
    yield uri


def stage_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_RUN_ID", None)
    return env


def python() -> str:
    return sys.executable
