"""Fixtures shared by the unit test files of several modules."""

from __future__ import annotations

import subprocess

import pytest


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A tiny Qwen2 and its tokenizer saved to a folder (test_generation.py, test_grpo.py)."""
    from r1_pipeline.modeling import build_model, save_tokenizer, train_tokenizer

    texts = [
        f"{a} + {b} = {a + b} <think> step </think> <answer> {a + b} </answer>" for a in range(20) for b in range(9)
    ]
    tok = train_tokenizer(texts, vocab_size=300)
    model = build_model(tok, "qwen2", 64, 2, 4, 2, 128, 256)
    path = tmp_path_factory.mktemp("tiny_model")
    model.save_pretrained(path)
    save_tokenizer(tok, path)
    return path


def dvc(cwd, *args):
    """Run the venv's `dvc` in `cwd` (r1_ops/test_orchestration.py, flows/test_pipeline.py)."""
    from r1_ops.orchestration import bin_path

    subprocess.run([bin_path("dvc"), *args], cwd=cwd, check=True, capture_output=True, text=True)


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A fresh git + DVC checkout, with no workspace key or GPU pool from the environment."""
    monkeypatch.delenv("R1_WORKSPACE_KEY", raising=False)
    monkeypatch.delenv("R1_GPU_POOL", raising=False)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    dvc(tmp_path, "init", "-q")
    return tmp_path
