"""flows.pipeline's concurrency limits keyed on what is shared: a checkout, or the DVC remote that pods push to;
the GPU budget on $R1_GPU_POOL. Real DVC configs written by `dvc remote add`."""

from __future__ import annotations

import socket
import subprocess

from flows.pipeline import gpu_limit_name, workspace_limit_name
from r1_ops.orchestration import dvc_default_remote
from tests.unit.conftest import dvc


def test_two_clones_sharing_an_s3_remote_share_one_slot(checkout, tmp_path_factory):
    clone = tmp_path_factory.mktemp("clone")
    subprocess.run(["git", "init", "-q"], cwd=clone, check=True)
    dvc(clone, "init", "-q")
    for ws in (checkout, clone):
        dvc(ws, "remote", "add", "-d", "store", "s3://bucket/r1-cache")
    assert dvc_default_remote(checkout) == "s3://bucket/r1-cache"
    assert workspace_limit_name(checkout) == workspace_limit_name(clone)
    assert socket.gethostname().lower() not in workspace_limit_name(checkout)
    # a pod-local override (config.local) to another bucket is another workspace
    dvc(clone, "remote", "add", "--local", "-d", "mine", "s3://other/cache")
    assert workspace_limit_name(checkout) != workspace_limit_name(clone)


def test_explicit_keys_win(checkout, monkeypatch):
    monkeypatch.setenv("R1_WORKSPACE_KEY", "team-a")
    assert workspace_limit_name(checkout) == "r1-workspace-team-a"
    monkeypatch.setenv("R1_GPU_POOL", "k8s-gpu")
    assert gpu_limit_name() == "r1-gpu-k8s-gpu"
