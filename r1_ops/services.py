"""Local Prefect and MLflow servers, bound to 127.0.0.1, for `r1 services up|down|status` and the tests.

`r1 services up` starts both in the background (each in its own process group, so `down` stops the whole
tree), with logs and pid files under .services/, waits until both answer their health endpoints and prints the
variables to export:

    export PREFECT_API_URL=http://127.0.0.1:4200/api
    export MLFLOW_TRACKING_URI=http://127.0.0.1:5000

Prefect keeps its database in .services/prefect/ (PREFECT_HOME); MLflow keeps runs in the project's
sqlite:///mlflow.db (the file stages use without a server) and artifacts in mlartifacts/.
Facts this relies on: `PREFECT_SERVER_ANALYTICS_ENABLED=false` avoids a locked-database error, and
`MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false` cuts the MLflow server from 9 processes / 2.5 GB to 2 / 0.5 GB.
"""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from r1_ops.orchestration import bin_path, http_ok, kill_process_group, subprocess_env
from r1_pipeline.stage import process_alive

HOST = "127.0.0.1"
SERVICES_DIR = Path(".services")
DEFAULT_PORTS = {"prefect": 4200, "mlflow": 5000}


def free_port(host: str = HOST) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(port: int, host: str = HOST) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


@dataclass
class Service:
    name: str
    url: str  # what clients use (PREFECT_API_URL / MLFLOW_TRACKING_URI)
    health_url: str
    ui_url: str
    proc: subprocess.Popen | None = None
    log_file: Path | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self, grace_s: float = 10.0) -> None:
        if self.proc is not None:
            kill_process_group(self.proc.pid, grace_s, self.proc)

    def log_tail(self, n: int = 40) -> str:
        if self.log_file and self.log_file.exists():
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-n:])
        return ""


def prefect_service(port: int, host: str = HOST) -> Service:
    base = f"http://{host}:{port}"
    return Service("prefect", f"{base}/api", f"{base}/api/health", base)


def mlflow_service(port: int, host: str = HOST) -> Service:
    base = f"http://{host}:{port}"
    return Service("mlflow", base, f"{base}/health", base)


def _spawn(cmd: list[str], env: dict[str, str], log_file: Path, cwd: str | Path) -> subprocess.Popen:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        return subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def start_prefect(
    home: str | Path, port: int, log_file: str | Path, cwd: str | Path = ".", host: str = HOST
) -> Service:
    """`prefect server start` with its own PREFECT_HOME (database, settings) in `home`."""
    svc = prefect_service(port, host)
    env = subprocess_env(
        {
            "PREFECT_HOME": str(Path(home).resolve()),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_API_HOST": host,
            "PREFECT_SERVER_API_PORT": str(port),
            "PREFECT_UI_API_URL": svc.url,
            "PREFECT_API_URL": svc.url,
        }
    )
    env.pop("PREFECT_PROFILES_PATH", None)
    cmd = [bin_path("prefect"), "server", "start", "--host", host, "--port", str(port)]
    svc.log_file = Path(log_file)
    svc.proc = _spawn(cmd, env, svc.log_file, cwd)
    return svc


def start_mlflow(
    backend_uri: str,
    artifacts_dir: str | Path,
    port: int,
    log_file: str | Path,
    cwd: str | Path = ".",
    host: str = HOST,
) -> Service:
    """`mlflow server` (one worker, no job execution) with artifacts proxied from `artifacts_dir`: a local
    folder, or an object-store URI (`s3://bucket/path`; an S3-compatible endpoint from MLFLOW_S3_ENDPOINT_URL)."""
    svc = mlflow_service(port, host)
    env = subprocess_env({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(var, None)
    cmd = [
        bin_path("mlflow"),
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        backend_uri,
        "--artifacts-destination",
        str(artifacts_dir) if "://" in str(artifacts_dir) else str(Path(artifacts_dir).resolve()),
        "--serve-artifacts",
    ]
    svc.log_file = Path(log_file)
    svc.proc = _spawn(cmd, env, svc.log_file, cwd)
    return svc


def wait_healthy(svc: Service, timeout_s: float = 90.0) -> None:
    """Wait until `svc` answers its health endpoint; a clear error (with its log) when it dies or times out."""
    deadline = time.monotonic() + timeout_s
    why = "not started"
    while time.monotonic() < deadline:
        if svc.proc is not None and svc.proc.poll() is not None:
            raise RuntimeError(f"{svc.name} server exited with {svc.proc.returncode}:\n{svc.log_tail()}")
        ok, why = http_ok(svc.health_url, timeout=2.0)
        if ok:
            return
        time.sleep(0.5)
    raise RuntimeError(
        f"{svc.name} server not healthy at {svc.health_url} after {timeout_s:.0f}s ({why}):\n{svc.log_tail()}"
    )


# --------------------------------------------------------------------------------------- r1 services up|down


def _pid_file(root: Path, name: str) -> Path:
    return root / SERVICES_DIR / f"{name}.pid"


def _read_pid(path: Path) -> tuple[int, int] | None:
    """(pid, port) from a pid file, or None."""
    try:
        pid, port = path.read_text().split()[:2]
        return int(pid), int(port)
    except (OSError, ValueError):
        return None


def up(
    root: str | Path = ".", prefect_port: int = 4200, mlflow_port: int = 5000, timeout_s: float = 120.0
) -> list[Service]:
    """Start whichever of the two servers is not running yet; return both (already running ones included)."""
    root = Path(root).resolve()
    sdir = root / SERVICES_DIR
    sdir.mkdir(exist_ok=True)
    services: list[Service] = []
    for name, port in (("prefect", prefect_port), ("mlflow", mlflow_port)):
        known = _read_pid(_pid_file(root, name))
        if known and process_alive(known[0]):
            svc = prefect_service(known[1]) if name == "prefect" else mlflow_service(known[1])
            services.append(svc)
            continue
        if port_in_use(port):
            raise RuntimeError(f"port {port} on {HOST} is in use by another program: choose another (--{name}-port)")
        if name == "prefect":
            svc = start_prefect(sdir / "prefect", port, sdir / "prefect.log", cwd=root)
        else:
            svc = start_mlflow("sqlite:///mlflow.db", root / "mlartifacts", port, sdir / "mlflow.log", cwd=root)
        _pid_file(root, name).write_text(f"{svc.pid} {port}\n")
        services.append(svc)
    try:
        for svc in services:
            wait_healthy(svc, timeout_s)
    except RuntimeError:
        down(root)
        raise
    (sdir / "env").write_text(env_lines(services))
    return services


def down(root: str | Path = ".") -> list[str]:
    root = Path(root).resolve()
    stopped = []
    for name in ("prefect", "mlflow"):
        pf = _pid_file(root, name)
        known = _read_pid(pf)
        if known and process_alive(known[0]):
            kill_process_group(known[0], grace_s=10.0)
            stopped.append(name)
        pf.unlink(missing_ok=True)
    (root / SERVICES_DIR / "env").unlink(missing_ok=True)
    return stopped


def status(root: str | Path = ".") -> dict[str, dict]:
    root = Path(root).resolve()
    out = {}
    for name in ("prefect", "mlflow"):
        known = _read_pid(_pid_file(root, name))
        if not known:
            out[name] = {"running": False}
            continue
        svc = prefect_service(known[1]) if name == "prefect" else mlflow_service(known[1])
        healthy, why = http_ok(svc.health_url, timeout=2.0)
        out[name] = {
            "running": process_alive(known[0]),
            "healthy": healthy,
            "pid": known[0],
            "url": svc.url,
            "ui": svc.ui_url,
            "detail": why,
        }
    return out


def env_lines(services: list[Service]) -> str:
    lines = []
    for svc in services:
        var = "PREFECT_API_URL" if svc.name == "prefect" else "MLFLOW_TRACKING_URI"
        lines.append(f"export {var}={svc.url}")
    return "\n".join(lines) + "\n"


__all__ = ["Service", "free_port", "start_prefect", "start_mlflow", "wait_healthy", "up", "down", "status", "env_lines"]
