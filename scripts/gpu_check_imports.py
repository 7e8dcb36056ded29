"""Check, in a few seconds, that a GPU machine has everything a GPU run of the benchmark/pipeline imports.

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl && export PYTHONPATH=/tmp/site
    python3 scripts/gpu_check_imports.py

Prints one line per package (version and where it was imported from: the carried wheels in /tmp/site or the
machine's own site-packages), then a few smoke checks that exercise the compiled/lazy parts (a datasets map,
a math-verify comparison, an MLflow run in a SQLite file, DeepSpeed's accelerator, TRL's trainers, our config).
Exits 1 if anything required fails; optional packages (liger-kernel, vLLM, flash-attn) only report.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (import name, distribution name, required)
PACKAGES = [
    ("torch", "torch", True),
    ("transformers", "transformers", True),
    ("accelerate", "accelerate", True),
    ("peft", "peft", True),
    ("trl", "trl", True),
    ("datasets", "datasets", True),
    ("deepspeed", "deepspeed", True),
    ("math_verify", "math-verify", True),
    ("latex2sympy2_extended", "latex2sympy2_extended", True),
    ("antlr4", "antlr4-python3-runtime", True),
    ("sympy", "sympy", True),
    ("pydantic", "pydantic", True),
    ("mlflow", "mlflow-skinny", True),
    ("sqlalchemy", "sqlalchemy", True),
    ("alembic", "alembic", True),
    ("pyarrow", "pyarrow", True),
    ("pandas", "pandas", True),
    ("fsspec", "fsspec", True),
    ("dill", "dill", True),
    ("multiprocess", "multiprocess", True),
    ("xxhash", "xxhash", True),
    ("tokenizers", "tokenizers", True),
    ("safetensors", "safetensors", True),
    ("huggingface_hub", "huggingface-hub", True),
    ("yaml", "pyyaml", True),
    ("triton", "triton", False),
    ("liger_kernel", "liger-kernel", False),
    ("vllm", "vllm", False),
    ("flash_attn", "flash-attn", False),
]


def where(module) -> str:
    path = str(getattr(module, "__file__", "") or "")
    site = os.environ.get("PYTHONPATH", "").split(os.pathsep)[0]
    return "carried" if site and path.startswith(site) else "machine"


def check(name: str, fn) -> bool:
    t0 = time.perf_counter()
    try:
        detail = fn()
        print(f"ok    {name:<28} {time.perf_counter() - t0:5.1f}s  {detail or ''}")
        return True
    except Exception as exc:  # noqa: BLE001 - report every failure, then exit non-zero
        print(f"FAIL  {name:<28} {type(exc).__name__}: {exc}")
        traceback.print_exc(limit=3)
        return False


def smoke_datasets():
    from datasets import Dataset

    ds = Dataset.from_list([{"input_ids": [1, 2, 3]}, {"input_ids": [4]}]).map(lambda ex: {"n": len(ex["input_ids"])})
    return f"map ok ({ds['n']})"


def smoke_math_verify():
    from r1_pipeline.rewards import accuracy_reward

    got = accuracy_reward(
        ["<think>1/2</think><answer>\\frac{1}{2}</answer>", "<answer>3</answer>"], answer=["0.5", "4"]
    )
    assert got == [1.0, 0.0], got
    return f"accuracy_reward {got}"


def smoke_mlflow():
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/m.db")
        mlflow.set_experiment("check")
        with mlflow.start_run():
            mlflow.log_params({"a": 1})
            mlflow.log_metrics({"x": 1.0}, step=1)
            mlflow.log_table({"c": [1, 2]}, artifact_file="t.json")
        return "sqlite run + table ok"


def smoke_deepspeed():
    from deepspeed.accelerator import get_accelerator

    return f"accelerator {get_accelerator().device_name()}"


def smoke_trl():
    from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer  # noqa: F401

    assert all((GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer))

    return "SFTTrainer, GRPOTrainer"


def smoke_config():
    from r1_pipeline.config import load_config

    cfg = load_config(profile="gpu")
    return f"gpu profile: device {cfg.project.device}, precision {cfg.project.precision}"


def smoke_cuda():
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("torch sees no CUDA device")
    a = torch.randn(1024, 1024, device="cuda", dtype=torch.bfloat16)
    (a @ a).sum().item()
    return f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}, CUDA {torch.version.cuda}"


def main() -> int:
    ok = True
    print(f"python {sys.version.split()[0]} at {sys.executable}; PYTHONPATH={os.environ.get('PYTHONPATH', '')}")
    for mod, dist, required in PACKAGES:
        try:
            module = importlib.import_module(mod)
            try:
                ver = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                ver = getattr(module, "__version__", "?")
            print(f"ok    {dist:<28} {ver:<14} {where(module)}")
        except Exception as exc:  # noqa: BLE001
            print(f"{'FAIL' if required else 'n/a '}  {dist:<28} {type(exc).__name__}: {str(exc)[:120]}")
            ok = ok and not required
    for name, fn in [
        ("cuda", smoke_cuda),
        ("datasets", smoke_datasets),
        ("math-verify reward", smoke_math_verify),
        ("mlflow sqlite", smoke_mlflow),
        ("deepspeed", smoke_deepspeed),
        ("trl trainers", smoke_trl),
        ("r1_pipeline config", smoke_config),
    ]:
        ok = check(name, fn) and ok
    print("all required imports ok" if ok else "SOME REQUIRED IMPORTS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
