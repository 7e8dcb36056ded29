"""Tests that fail when learning breaks, on a base that can partly solve the task.

The micro profile's base partly solves its easy task (answers 0..3) after a few seconds of pretraining, so GRPO's
rewards vary within a group and a step moves the policy. Every stage runs as DVC runs it. Accuracy is measured
on the RL training prompts: the question is whether GRPO optimizes its own objective.

- GRPO with the pipeline's rewards raises accuracy; the same run with the reward negated (what a flipped
  advantage sign does) lowers it. A GRPO whose rewards never reach the loss moves neither way and fails the first.
- SFT's completion-only loss: on the batch the trainer really trains on, exactly the completion tokens carry
  labels, and cold-start SFT raises the format rate of the base.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from r1_pipeline.config import apply_overrides, profile_dict
from tests.conftest import stage_env

pytestmark = pytest.mark.slow

LEARNABLE = [
    "sft.enabled=false",
    "grpo.max_steps=20",
    "grpo.learning_rate=5e-4",
    "grpo.warmup_ratio=0.0",
    "grpo.per_device_train_batch_size=32",
    "grpo.num_generations=8",
    "grpo.max_completion_length=24",
    "grpo.temperature=1.0",
    "grpo.save_steps=1000",
    "grpo.logging_steps=1",
]
EVAL_PROBLEMS, EVAL_K = 64, 16  # the micro task has about 35 distinct RL prompts: all of them


def run(workdir: Path, stage: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", f"tasks.{stage}"],
        cwd=workdir,
        env=stage_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"{stage} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def write_params(workdir: Path, overrides: list[str]) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "params.yaml").write_text(yaml.safe_dump(apply_overrides(profile_dict("micro"), LEARNABLE + overrides)))


def accuracy(model_dir: Path, problems: list[dict]) -> tuple[float, float]:
    """(pass@1, format rate) with the evaluate stage's generation, k samples at GRPO's sampling temperature (the
    objective GRPO optimizes), scored by the verifier's strict policy (the accuracy reward's: an <answer> span or
    a final box, no fallback)."""
    from r1_pipeline.chat import prompt_messages
    from r1_pipeline.generation import get_backend
    from r1_pipeline.rewards import has_format
    from r1_pipeline.verify import check

    backend = get_backend("hf", model_dir, "cpu", "fp32", 64)
    groups = backend.generate(
        [prompt_messages(p["problem"], None) for p in problems],
        n=EVAL_K,
        temperature=1.0,
        top_p=1.0,
        max_new_tokens=24,
        seed=0,
    )
    samples = [(p, s) for p, group in zip(problems, groups) for s in group]
    correct = sum(check(s.text, p["answer"], "strict").correct for p, s in samples)
    return correct / len(samples), sum(has_format(s.text) for _, s in samples) / len(samples)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    wd = tmp_path_factory.mktemp("learn")
    write_params(wd, [])
    for stage in ("data", "base", "sft"):
        run(wd, stage)
    return wd


@pytest.fixture(scope="module")
def problems(base_dir) -> list[dict]:
    from r1_pipeline.io import read_jsonl

    return read_jsonl(base_dir / "outputs/data/rl_train.jsonl")[:EVAL_PROBLEMS]


def grpo_copy(base_dir: Path, dst: Path, overrides: list[str]) -> Path:
    write_params(dst, overrides)
    shutil.copytree(base_dir / "outputs", dst / "outputs")
    run(dst, "grpo")
    return dst / "outputs/models/grpo"


def test_grpo_raises_accuracy_and_the_negated_reward_lowers_it(base_dir, problems, tmp_path):
    base_acc, _ = accuracy(base_dir / "outputs/models/base", problems)
    assert 0.1 < base_acc < 0.9, f"the base must partly solve the task for this test to mean anything: {base_acc}"
    up, _ = accuracy(grpo_copy(base_dir, tmp_path / "up", []), problems)
    down, _ = accuracy(grpo_copy(base_dir, tmp_path / "down", ["grpo.reward_weights=[-1.0,-0.5]"]), problems)
    print(f"pass@1 on RL prompts: base {base_acc:.3f}, GRPO {up:.3f}, GRPO with the reward negated {down:.3f}")
    assert up > base_acc + 0.05, (base_acc, up)
    assert down < base_acc - 0.05, (base_acc, down)


def ids_of(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("packing", [False, True])
def test_sft_trains_on_exactly_the_completion_tokens(base_dir, tmp_path, monkeypatch, packing):
    """The batch SFTTrainer really trains on (captured at compute_loss): with completion-only loss every prompt
    token, chat header included, has label -100 and every completion token (through <|im_end|>) its own id."""
    import trl

    from r1_pipeline.config import validate
    from r1_pipeline.io import read_jsonl
    from r1_pipeline.modeling import load_model_and_tokenizer
    from r1_pipeline.sft import conversations, train_sft

    cfg = validate(
        apply_overrides(
            profile_dict("micro"),
            LEARNABLE + ["sft.max_steps=1", "sft.logging_steps=1", "sft.per_device_train_batch_size=4"],
        ),
        "test",
        Path("."),
    )
    rows = read_jsonl(base_dir / "outputs/data/cold_start.jsonl")[:8]
    model, tok = load_model_and_tokenizer(base_dir / "outputs/models/base", "cpu", "fp32")
    batches = []
    original = trl.SFTTrainer.compute_loss

    def capture(self, model, inputs, *args, **kwargs):
        batches.append({k: v.clone() for k, v in inputs.items() if hasattr(v, "clone")})
        return original(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(trl.SFTTrainer, "compute_loss", capture)
    monkeypatch.chdir(tmp_path)
    train_sft(
        model,
        tok,
        conversations(rows, None),
        cfg.sft,
        cfg,
        "sft_mask_test",
        max_length=128,
        completion_only_loss=True,
        packing=packing,
        resume_key="test",
        report=False,
    )
    assert batches
    expected = {}  # token ids of one document -> its labels
    for row in rows:
        conv = conversations([row], None)[0]
        prompt = ids_of(tok, tok.apply_chat_template(conv["prompt"], tokenize=False, add_generation_prompt=True))
        full = ids_of(tok, tok.apply_chat_template(conv["prompt"] + conv["completion"], tokenize=False))
        assert full[: len(prompt)] == prompt
        completion = full[len(prompt) :]
        assert tok.decode(completion).startswith("<think>") and tok.eos_token_id in completion
        expected[tuple(full)] = [-100] * len(prompt) + completion
    seen = 0
    for batch in batches:
        ids, labels = batch["input_ids"].tolist(), batch["labels"].tolist()
        positions = batch["position_ids"].tolist() if packing else [list(range(len(r))) for r in ids]
        for row_ids, row_labels, row_pos in zip(ids, labels, positions):
            starts = [i for i, p in enumerate(row_pos) if p == 0] + [len(row_ids)]
            for s, e in zip(starts, starts[1:]):
                doc = next((d for d in expected if tuple(row_ids[s : s + len(d)]) == d), None)
                if doc is None:
                    assert all(t == tok.pad_token_id for t in row_ids[s:e]), "a batch row is no cold-start document"
                    continue
                got = row_labels[s : s + len(doc)]
                # packed rows never predict a document's first token; the prompt covers it anyway
                assert got == expected[doc], (tok.decode(list(doc)), got)
                assert all(t == -100 for t in row_labels[s + len(doc) : e])  # padding after the document
                seen += 1
    assert seen >= 4
