"""The README's deployment lines, exactly as written, on a fresh copy of the project (micro profile).

The lines are read from README.md (the bash block after `<!-- deployment-lines -->`) and run in one bash with
`set -e`, the venv's bin first on PATH, and a trap that stops the background worker when the script ends: what
a user pastes into a terminal. `r1 services up` uses its default ports (4200, 5000): the test fails at once,
naming them, when something else listens there.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from r1_ops.orchestration import kill_process_group
from tests.e2e.workspace import copy_project, stage_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def readme_deployment_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- deployment-lines -->\s*```bash\n(.*?)```", text, re.S)
    assert m, "README.md has no bash block after <!-- deployment-lines -->"
    return [ln for ln in m.group(1).splitlines() if ln.strip()]


def port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_readme_deployment_lines_run_as_written(tmp_path):
    lines = readme_deployment_lines()
    assert any(ln.startswith("prefect deployment run r1-pipeline/local --watch") for ln in lines)
    busy = [p for p in (4200, 5000) if port_busy(p)]
    assert not busy, f"ports {busy} are in use: the README's `r1 services up` needs them free"
    ws = copy_project(tmp_path / "ws")
    env = stage_env(
        {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "PREFECT_HOME": str(tmp_path / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
    )
    for key in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID", "R1_PROJECT_ROOT"):
        env.pop(key, None)
    script = "set -e\n" + "\n".join(lines)
    log = tmp_path / "readme.log"
    # its own process group, output to a file: the background worker keeps the group (and any pipe) alive
    # after the script ends; the whole group is stopped afterwards, as closing the terminal would
    with open(log, "w") as out:
        proc = subprocess.Popen(
            ["bash", "-c", script], cwd=ws, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = proc.wait(timeout=1500)
        finally:
            kill_process_group(proc.pid, 10, proc)
            subprocess.run(
                [str(Path(sys.executable).parent / "r1"), "services", "down"],
                cwd=ws,
                env=env,
                capture_output=True,
                timeout=120,
            )
    text = log.read_text()
    assert code == 0, text[-6000:]
    assert "Completed" in text, text[-3000:]
    # the run's results are on disk in the checkout and in the MLflow store the services used
    assert (ws / "outputs" / "eval" / "metrics.json").exists() and (ws / "dvc.lock").exists()
    assert not port_busy(4200) and not port_busy(5000)  # `r1 services down` stopped both servers
