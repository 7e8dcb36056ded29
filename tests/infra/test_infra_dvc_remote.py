"""SkyPilot and Slurm keep their results the way a k8s-gpu pod does: DVC's run cache and outputs are pulled from
the shared remote (R1_DVC_REMOTE_URL, else the checkout's default remote) before the stage and pushed after it,
with `r1 remote pull|push` (the same code as the flow: orchestration.shared_remote_from_env / dvc_sync).

Two checks: the order in every template (pull before the stage command, push after it; a reordered copy is
rejected), and the templates' own DVC lines run for real (real DVC, a local folder as the remote) in two fresh
clones of a one-stage project: the second clone restores the stage instead of running it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from infra_checks import INFRA, load_yaml

SKY = INFRA / "skypilot"
SLURM = INFRA / "slurm"
BIN = Path(sys.executable).parent
GIT = ["git", "-c", "user.email=t@example.org", "-c", "user.name=t", "-c", "commit.gpgsign=false"]

# the command that runs the stage in each template, and where the push must be
STAGE_COMMAND = {
    "skypilot/r1-1node-8gpu.yaml": r"^\s*dvc repro --pull\b",
    "skypilot/r1-multinode.yaml": r"^\s*accelerate launch\b",
    "slurm/train.sbatch": r"^\s*srun\b.*",
    "slurm/grpo.sbatch": r"^srun --wait\b",
}


def script(name: str) -> str:
    path = INFRA / name
    return load_yaml(path)["run"] if path.suffix == ".yaml" else path.read_text()


def order_problems(text: str, stage_pattern: str) -> list[str]:
    """Pull before the stage command, push after it (or a push trap on EXIT set before it)."""
    lines = text.splitlines()
    code = [re.sub(r"\s+#.*$", "", ln) for ln in lines]

    def first(pattern: str) -> int | None:
        return next(
            (i for i, ln in enumerate(code) if re.search(pattern, ln) and not ln.lstrip().startswith("#")), None
        )

    pull, stage = first(r"^\s*r1 remote pull\b"), first(stage_pattern)
    push, trap = first(r"^\s*r1 remote push\b"), first(r"trap 'r1 remote push' EXIT")
    problems = []
    if stage is None:
        return ["no stage command"]
    if pull is None or pull > stage:
        problems.append("`r1 remote pull` must come before the stage")
    if not ((push is not None and push > stage) or (trap is not None and trap < stage)):
        problems.append("`r1 remote push` must come after the stage (or as an EXIT trap set before it)")
    if re.search(r"^\s*dvc (push|pull)\b", text, re.M):
        problems.append("plain `dvc push/pull` (no run cache, ignores R1_DVC_REMOTE_URL): use `r1 remote`")
    return problems


@pytest.mark.parametrize("name", sorted(STAGE_COMMAND))
def test_templates_pull_before_and_push_after_the_stage(name):
    text = script(name)
    assert order_problems(text, STAGE_COMMAND[name]) == []
    # the checker rejects a copy without the pull, one without the push, and one that pushes with plain dvc
    lines = text.splitlines()
    no_pull = "\n".join(ln for ln in lines if "r1 remote pull" not in ln)
    no_push = "\n".join(ln for ln in lines if "r1 remote push" not in ln)
    for broken in (no_pull, no_push, text + "\ndvc push\n"):
        assert order_problems(broken, STAGE_COMMAND[name])


@pytest.mark.parametrize("name", ["r1-1node-8gpu.yaml", "r1-multinode.yaml"])
def test_skypilot_tasks_take_the_shared_remote_from_their_envs(name):
    envs = load_yaml(SKY / name)["envs"]
    assert envs["R1_DVC_REMOTE_URL"] == "" and envs["R1_DVC_REMOTE_ENDPOINT_URL"] == ""  # set with --env


# ------------------------------------------------------------------------------- the templates' lines, for real

STAGE = {
    "stages": {
        "train": {
            "cmd": "python train.py",
            "deps": ["train.py"],
            "params": ["lr"],
            "outs": ["model.txt"],
            "metrics": ["metrics.json"],
        }
    }
}
TRAIN = """
    import json, yaml
    lr = yaml.safe_load(open("params.yaml"))["lr"]
    print("TRAINING", flush=True)
    open("model.txt", "w").write(f"weights for lr={lr}")
    json.dump({"loss": lr * 2}, open("metrics.json", "w"))
"""


@pytest.fixture
def origin(tmp_path):
    repo = tmp_path / "origin"
    repo.mkdir()
    (repo / "dvc.yaml").write_text(yaml.safe_dump(STAGE, sort_keys=False))
    (repo / "train.py").write_text(textwrap.dedent(TRAIN))
    (repo / "params.yaml").write_text("lr: 0.5\n")
    subprocess.run([*GIT, "init", "-q", "-b", "main"], cwd=repo, check=True)
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=repo, check=True)
    subprocess.run([str(BIN / "dvc"), "config", "core.analytics", "false"], cwd=repo, check=True)
    subprocess.run([*GIT, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*GIT, "commit", "-q", "-m", "toy"], cwd=repo, check=True)
    return repo


def clone(origin: Path, dst: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(origin), str(dst)], check=True)
    return dst


def env_with_remote(remote: Path) -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("R1_DVC_", "MLFLOW_RUN_ID"))}
    env.update(
        {
            "PATH": f"{BIN}:{env.get('PATH', '')}",
            "R1_DVC_REMOTE_URL": str(remote),
            "DVC_NO_ANALYTICS": "1",
            "PUSH_OUTPUTS": "true",
            "STAGE": "train",
        }
    )
    return env


def bash(lines: str, cwd: Path, env: dict) -> str:
    out = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + lines], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def one_node_lines() -> str:
    """The 1-node SkyPilot run script without what needs the cluster (venv, GPUs, the profile)."""
    keep = [
        ln
        for ln in script("skypilot/r1-1node-8gpu.yaml").splitlines()
        if not re.match(r"\s*(set -euo|source |nvidia-smi|r1 config use)", ln)
    ]
    assert any("r1 remote pull" in ln for ln in keep) and any("dvc repro" in ln for ln in keep)
    return "\n".join(keep)


def test_the_one_node_script_restores_the_stage_in_a_second_clone(origin, tmp_path):
    env = env_with_remote(tmp_path / "remote")
    first = bash(one_node_lines(), clone(origin, tmp_path / "node1"), env)
    assert "TRAINING" in first and "Running stage 'train'" in first, first
    assert (tmp_path / "remote" / "runs").is_dir()  # the run cache went to the remote (the EXIT trap's push)
    second_clone = clone(origin, tmp_path / "node2")
    second = bash(one_node_lines(), second_clone, env)
    assert "TRAINING" not in second and "Stage 'train' is cached - skipping run" in second, second
    assert (second_clone / "model.txt").read_text() == "weights for lr=0.5"
    assert (second_clone / ".dvc" / "config.local").read_text().count(str(tmp_path / "remote")) == 1
    # a changed param is a different run-cache key: the stage runs
    (second_clone / "params.yaml").write_text("lr: 0.25\n")
    assert "TRAINING" in bash(one_node_lines(), second_clone, env)


@pytest.mark.parametrize("name", ["slurm/train.sbatch", "skypilot/r1-multinode.yaml"])
def test_a_stage_run_outside_dvc_repro_is_restored_in_a_second_clone(name, origin, tmp_path):
    """Slurm and multi-node SkyPilot run the stage under srun/accelerate, then `dvc commit` and `r1 remote push`:
    their pull line, the stage (run directly here), and their commit and push lines."""
    text = script(name)
    pull = next(ln.strip() for ln in text.splitlines() if ln.strip().startswith("r1 remote pull"))
    after = [
        re.sub(r"\s+#.*$", "", ln).strip()
        for ln in text.splitlines()
        if re.match(r"\s*(dvc commit|r1 remote push)\b", ln)
    ]
    assert [a.split()[0:2] for a in after] == [["dvc", "commit"], ["r1", "remote"]], after
    env = env_with_remote(tmp_path / "remote")
    node = clone(origin, tmp_path / "node1")
    bash("\n".join([pull, "python train.py", *after]), node, env)
    fresh = clone(origin, tmp_path / "node2")
    out = bash("\n".join([pull, "dvc repro --pull train"]), fresh, env)
    assert "TRAINING" not in out and "Stage 'train' is cached - skipping run" in out, out
    assert (fresh / "metrics.json").read_text() == (node / "metrics.json").read_text()


def test_r1_remote_without_any_remote_says_so(origin, tmp_path):
    import os

    node = clone(origin, tmp_path / "node")
    env = {k: v for k, v in os.environ.items() if not k.startswith("R1_DVC_")}
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    for action in ("pull", "push"):
        out = subprocess.run(
            [str(BIN / "r1"), "remote", action], cwd=node, env=env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0 and f"nothing to {action}" in out.stdout, out.stdout + out.stderr
