"""Test helpers for the orchestration tests: a throwaway copy of the project, DVC/prefect commands in it.

Every orchestration test works in a COPY of the repository (tracked files plus untracked, not-ignored ones,
so work in progress is tested too), with its own git repository, DVC cache and params, so the real
workspace is never touched. Import as `from tests.e2e.workspace import ...` (the project root is on sys.path
under pytest: tests/conftest.py is imported as `tests.conftest`), from tests/integration and tests/e2e alike.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from r1_ops.orchestration import bin_path, subprocess_env
from r1_pipeline.config import apply_overrides, profile_dict, to_yaml, validate

ROOT = Path(__file__).resolve().parents[2]
GIT = [
    "git",
    "-c",
    "user.email=tests@r1-pipeline.local",
    "-c",
    "user.name=r1-pipeline tests",
    "-c",
    "commit.gpgsign=false",
]


def project_files(root: Path = ROOT) -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    )
    return [f for f in out.stdout.decode().split("\0") if f and (root / f).is_file()]


def micro_params(overrides: list[str] | None = None, profile: str = "micro") -> str:
    cfg = validate(apply_overrides(profile_dict(profile), overrides or []), f"profile {profile}", ROOT)
    return f"# profile: {profile} (written by the orchestration tests)\n" + to_yaml(cfg)


def copy_project(dst: Path, overrides: list[str] | None = None, profile: str = "micro") -> Path:
    """A committed git + DVC copy of the project at `dst` with the micro profile (plus overrides) as params."""
    dst.mkdir(parents=True, exist_ok=True)
    for rel in project_files():
        if rel.startswith(("tests/", "bench/")):
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    (dst / "params.yaml").write_text(micro_params(overrides, profile))
    git(dst, "init", "-q", "-b", "main")
    if not (dst / ".dvc" / "config").exists():
        dvc(dst, "init", "-q", check=True)
    dvc(dst, "config", "core.analytics", "false", check=True)
    dvc(dst, "remote", "add", "-d", "-f", "local", ".dvc-remote", check=True)
    git(dst, "add", "-A")
    git(dst, "commit", "-q", "-m", "test copy")
    return dst


def git(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*GIT, *args], cwd=cwd, capture_output=True, text=True, check=True)


def dvc(
    cwd: Path, *args: str, check: bool = False, timeout: float = 900, env: dict | None = None
) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [bin_path("dvc"), *args], cwd=cwd, env=stage_env(env), capture_output=True, text=True, timeout=timeout
    )
    if check and out.returncode != 0:
        raise AssertionError(
            f"dvc {' '.join(args)} exited {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        )
    return out


def stage_env(extra: dict | None = None) -> dict[str, str]:
    """The environment stages get: this venv first on PATH, no MLflow run inherited from the test process."""
    env = subprocess_env(extra)
    env.pop("MLFLOW_RUN_ID", None)
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


_RAN = re.compile(r"^Running stage '([^']+)':", re.M)
_SKIPPED = re.compile(r"^Stage '([^']+)' didn't change, skipping", re.M)


def stages_ran(output: str) -> list[str]:
    return _RAN.findall(output)


def stages_skipped(output: str) -> list[str]:
    return _SKIPPED.findall(output)


def pids_in_tree(root_pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(root_pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def env_without(*names: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in names}
