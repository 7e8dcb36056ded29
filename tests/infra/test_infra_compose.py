"""The team-server compose stack (infra/compose/docker-compose.yaml).

Validated against the Compose Specification JSON schema bundled with check-jsonschema
(`--builtin-schema vendor.compose-spec`), before and after variable interpolation with .env.example, plus the
stack's own rules: ports on 127.0.0.1 only, no literal secrets, health checks, named volumes.
"""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path

import pytest
import yaml
from infra_checks import COMPOSE_FILE, dump_yaml, load_yaml, require_module, run

ENV_EXAMPLE = COMPOSE_FILE.parent / ".env.example"
SECRETISH = re.compile(r"(PASSWORD|SECRET|TOKEN|API_KEY|ACCESS_KEY)", re.IGNORECASE)
INTERP = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}")


def check_jsonschema(path: Path) -> tuple[int, str]:
    require_module("check_jsonschema", "check-jsonschema")
    res = run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)])
    return res.returncode, res.stdout + res.stderr


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def yaml_without_comments(path: Path) -> str:
    """The compose file minus full-line comments (Compose interpolates values, never comments)."""
    return "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose-style interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}, $$."""

    def sub(m: re.Match) -> str:
        name, op, arg = m.group("name"), m.group("op"), m.group("arg") or ""
        value = env.get(name)
        if op in (":?", "?") and (value is None or (op == ":?" and value == "")):
            raise KeyError(f"required variable {name} is missing: {arg}")
        if op in (":-", "-") and (value is None or (op == ":-" and value == "")):
            return arg
        return value or ""

    return INTERP.sub(sub, text.replace("$$", "\0")).replace("\0", "$")


def unsafe_ports(compose: dict) -> list[str]:
    """Published ports not bound to 127.0.0.1."""
    bad = []
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            if isinstance(port, dict):
                ok = port.get("host_ip") == "127.0.0.1"
            else:
                ok = str(port).startswith("127.0.0.1:")
            if not ok:
                bad.append(f"{name}: {port}")
    return bad


def literal_secrets(compose: dict) -> list[str]:
    """Environment values of secret-looking variables that are not `${...}` references (or empty)."""
    found = []

    def walk_env(where: str, env) -> None:
        items = env.items() if isinstance(env, dict) else (e.partition("=")[::2] for e in env or [])
        for key, value in items:
            value = "" if value is None else str(value)
            if SECRETISH.search(key) and value and not value.startswith("${"):
                found.append(f"{where}: {key}")

    for name, svc in compose["services"].items():
        walk_env(name, svc.get("environment", {}))
        cmd = svc.get("command", [])
        text = " ".join(cmd) if isinstance(cmd, list) else str(cmd)
        # credentials inside URLs (scheme://user:password@host) must be references too
        for m in re.finditer(r"://[^:/\s]+:([^@\s]+)@", text):
            if not m.group(1).startswith("${"):
                found.append(f"{name}: password in URL")
    for key, block in compose.items():
        if key.startswith("x-") and isinstance(block, dict):
            walk_env(key, block.get("environment", block))
    return found


@pytest.fixture
def compose() -> dict:
    return load_yaml(COMPOSE_FILE)


def test_compose_matches_compose_spec():
    rc, out = check_jsonschema(COMPOSE_FILE)
    assert rc == 0, out


def test_broken_compose_is_rejected(compose, tmp_path):
    broken = copy.deepcopy(compose)
    broken["services"]["mlflow"]["depends_on"]["mlflow-db"]["condition"] = "service_happy"
    rc, out = check_jsonschema(dump_yaml(broken, tmp_path / "compose.yaml"))
    assert rc != 0 and "service_happy" in out

    broken = copy.deepcopy(compose)
    broken["services"]["prefect-server"]["portz"] = broken["services"]["prefect-server"].pop("ports")
    rc, out = check_jsonschema(dump_yaml(broken, tmp_path / "compose2.yaml"))
    assert rc != 0 and "portz" in out


def test_interpolated_compose_matches_spec(tmp_path):
    env = read_env_file(ENV_EXAMPLE)
    text = interpolate(yaml_without_comments(COMPOSE_FILE), env)
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(text)
    rc, out = check_jsonschema(rendered)
    assert rc == 0, out
    services = yaml.safe_load(text)["services"]
    assert services["prefect-server"]["ports"] == ["127.0.0.1:4200:4200"]


def test_required_variables_are_enforced_and_documented():
    text = yaml_without_comments(COMPOSE_FILE)
    required = {m.group("name") for m in INTERP.finditer(text) if m.group("op") in (":?", "?")}
    assert {"PREFECT_DB_PASSWORD", "MLFLOW_DB_PASSWORD", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"} <= required
    documented = read_env_file(ENV_EXAMPLE)
    assert required <= set(documented), f"missing from .env.example: {required - set(documented)}"
    for name in required:
        assert documented[name] in ("", "CHANGE_ME"), f".env.example must hold placeholders only ({name})"
    env = read_env_file(ENV_EXAMPLE)
    env.pop("MLFLOW_DB_PASSWORD")
    with pytest.raises(KeyError, match="MLFLOW_DB_PASSWORD"):
        interpolate(text, env)


def test_ports_bind_to_localhost_only(compose):
    assert unsafe_ports(compose) == []
    published = {n for n, s in compose["services"].items() if s.get("ports")}
    assert {"prefect-server", "mlflow", "s3"} <= published
    assert not compose["services"]["prefect-db"].get("ports") and not compose["services"]["mlflow-db"].get("ports")

    broken = copy.deepcopy(compose)
    broken["services"]["mlflow"]["ports"] = ["5000:5000"]
    broken["services"]["s3"]["ports"] = ["0.0.0.0:8333:8333"]
    assert len(unsafe_ports(broken)) == 2


def test_no_literal_secrets(compose):
    assert literal_secrets(compose) == []

    broken = copy.deepcopy(compose)
    broken["services"]["prefect-db"]["environment"]["POSTGRES_PASSWORD"] = "hunter2hunter2"
    broken["services"]["mlflow"]["command"][5] = "--backend-store-uri=postgresql://mlflow:s3cret@mlflow-db/mlflow"
    assert len(literal_secrets(broken)) == 2


def test_services_are_healthy_and_persistent(compose):
    services = compose["services"]
    long_running = [n for n, s in services.items() if s.get("restart") != "no"]
    for name in long_running:
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
    declared = set(compose["volumes"])
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0] if isinstance(vol, str) else vol.get("source")
            if not source.startswith((".", "/", "$")):
                assert source in declared, f"{name}: volume {source} is not a declared named volume"
    for db in ("prefect-db", "mlflow-db"):
        assert services[db]["image"].startswith("postgres:")
        assert services[db]["healthcheck"]["test"][0] == "CMD-SHELL"


def test_stack_wiring(compose):
    services = compose["services"]
    mlflow = services["mlflow"]
    assert str(mlflow["environment"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]).lower() == "false"
    assert any("postgresql" in str(a) for a in mlflow["command"])
    assert any(str(a).startswith("--artifacts-destination=s3://") for a in mlflow["command"])
    assert "postgresql+asyncpg://" in services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    # The S3 store: SeaweedFS (MinIO community images are no longer published).
    assert services["s3"]["image"].startswith("chrislusf/seaweedfs:")
    assert not any("minio" in str(s.get("image", "")).lower() for s in services.values())
    worker = services["prefect-worker"]
    assert "infra/docker/Dockerfile" == worker["build"]["dockerfile"]
    assert "--type" in worker["command"] and "process" in worker["command"]
    assert worker["environment"]["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert worker["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    gpu = services["prefect-worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
