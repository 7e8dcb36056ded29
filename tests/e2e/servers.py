"""One real Prefect server and one real MLflow server (SQLite) for the whole test session, on free ports.

Started on first use by any orchestration test module (`session_servers(request, tmp_path_factory)`), stopped
at the end of the session (pytest's config cleanup): a server start costs 10-25 s on two cores, so the
in-process flow tests, the deployment test and the UI test share them. Each test uses its own MLflow
experiment and its own workspace, so they do not see each other's runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from r1_ops import services


@dataclass
class Servers:
    prefect: services.Service
    mlflow: services.Service
    base: Path

    @property
    def prefect_api_url(self) -> str:
        return self.prefect.url

    @property
    def mlflow_uri(self) -> str:
        return self.mlflow.url

    def stop(self) -> None:
        for svc in (self.prefect, self.mlflow):
            svc.stop(grace_s=5.0)


_SERVERS: Servers | None = None


def session_servers(request, tmp_path_factory) -> Servers:
    global _SERVERS
    if _SERVERS is None:
        base = tmp_path_factory.mktemp("servers")
        prefect = services.start_prefect(base / "prefect-home", services.free_port(), base / "prefect.log", cwd=base)
        mlflow = services.start_mlflow(
            f"sqlite:///{base / 'mlflow.db'}", base / "mlartifacts", services.free_port(), base / "mlflow.log", cwd=base
        )
        servers = Servers(prefect, mlflow, base)
        request.config.add_cleanup(servers.stop)
        try:
            services.wait_healthy(mlflow, 180)
            services.wait_healthy(prefect, 180)
        except RuntimeError:
            servers.stop()
            raise
        _SERVERS = servers
    return _SERVERS
