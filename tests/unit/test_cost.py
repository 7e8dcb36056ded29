"""r1_pipeline.cost on real TRL trainers (tiny model, CPU): the cost row a run appends to its log history, its
MLflow-ready numbers, the GRPO step split, and the report's cost table built from the train logs."""

from __future__ import annotations

import pytest

from r1_pipeline import cost, paths
from r1_pipeline.io import write_jsonl


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from r1_pipeline.modeling import build_model, train_tokenizer

    texts = [
        f"{a} + {b} = {a + b} <think> step </think> <answer> {a + b} </answer>" for a in range(20) for b in range(9)
    ]
    tok = train_tokenizer(texts, vocab_size=300)
    return tok, lambda: build_model(tok, "qwen2", 64, 2, 4, 2, 128, 256)


def test_sft_and_grpo_runs_log_their_cost_and_the_report_tabulates_it(tiny, tmp_path, monkeypatch):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

    tok, make_model = tiny
    common = dict(
        max_steps=2,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        logging_steps=1,
        disable_tqdm=True,
        gradient_checkpointing=False,
    )
    sft_data = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": f"{a} + 2"}],
                "completion": [{"role": "assistant", "content": f"<answer> {a + 2} </answer>"}],
            }
            for a in range(16)
        ]
    )
    sft = SFTTrainer(
        model=make_model(),
        args=SFTConfig(output_dir=str(tmp_path / "sft"), per_device_train_batch_size=4, max_length=32, **common),
        train_dataset=sft_data,
        processing_class=tok,
    )
    sft_cost = cost.CostCallback("sft")
    sft.add_callback(sft_cost)
    sft.train()
    c = sft_cost.result
    assert c["steps"] == 2 and c["tokens"] > 0 and c["tokens_per_s_per_device"] > 0
    n = sum(p.numel() for p in sft.model.parameters())
    assert c["params"] == n and 0 < c["mfu"] < 1
    assert c["mfu"] == pytest.approx(6 * n * c["tokens_per_s_per_device"] / c["peak_flops_measured"])
    assert c["gpu_hours"] == 0.0 and c["device_hours"] == pytest.approx(c["wall_s"] / 3600)
    assert sft.state.log_history[-1]["cost"] is c

    grpo = GRPOTrainer(
        model=make_model(),
        reward_funcs=[lambda completions, **_: [float(len(x)) for x in completions]],
        args=GRPOConfig(
            output_dir=str(tmp_path / "grpo"),
            per_device_train_batch_size=8,
            num_generations=4,
            max_completion_length=8,
            **common,
        ),
        train_dataset=Dataset.from_list([{"prompt": [{"role": "user", "content": f"{a} + 1"}]} for a in range(16)]),
        processing_class=tok,
    )
    grpo_cost = cost.CostCallback("grpo")
    grpo.add_callback(grpo_cost)
    cost.instrument_grpo(grpo, grpo_cost)
    grpo.train()
    g = grpo_cost.result
    assert all(g[f"step_{p}_s"] >= 0 for p in cost.GRPO_PHASES)
    assert g["step_generation_s"] > 0 and g["step_fwd_bwd_s"] > 0 and g["step_optimizer_s"] > 0
    assert sum(g[f"step_{p}_s"] for p in cost.GRPO_PHASES) <= g["s_per_step"] * 1.05  # parts of the step

    monkeypatch.setattr(paths, "train_log", lambda stage: tmp_path / "logs" / f"{stage}.jsonl")
    (tmp_path / "logs").mkdir()
    write_jsonl(paths.train_log("sft"), sft.state.log_history)
    write_jsonl(paths.train_log("grpo"), grpo.state.log_history)
    lines = cost.cost_table(["data", "sft", "grpo", "evaluate"])
    rows = [line for line in lines if line.startswith("| sft ") or line.startswith("| grpo ")]
    assert len(rows) == 2 and "## Cost by stage" in lines
    assert rows[0].endswith("| — |") and rows[1].count("/") == 4
    assert cost.cost_table(["data"]) == []


def test_measured_peak_is_measured_once_per_process():
    first = cost.measured_peak_flops("cpu")
    assert first > 1e8  # any CPU does 0.1 GFLOP/s on a 512^3 fp32 matmul
    assert cost.measured_peak_flops("cpu") == first


def test_pretraining_with_transformers_trainer_logs_its_cost_from_non_pad_tokens(tiny, tmp_path):
    """The base stage pretrains with a plain transformers Trainer (r1_pipeline/pretrain.py), which logs no
    `num_tokens`: its cost row counts `num_input_tokens_seen`, non-pad tokens only."""
    from datasets import Dataset
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    tok, make_model = tiny
    tok.padding_side = "right"
    ids = tok([f"{a} + {b} = {a + b}" * (1 + a % 3) for a in range(8) for b in range(2)])["input_ids"]
    trainer = Trainer(
        model=make_model(),
        args=TrainingArguments(
            output_dir=str(tmp_path / "base"),
            max_steps=2,
            per_device_train_batch_size=len(ids),  # one batch per step = every document, so the count is known
            report_to=[],
            save_strategy="no",
            use_cpu=True,
            logging_steps=1,
            disable_tqdm=True,
            include_num_input_tokens_seen="non_padding",
        ),
        train_dataset=Dataset.from_dict({"input_ids": ids}),
        data_collator=DataCollatorForLanguageModeling(tok, mlm=False),
        processing_class=tok,
    )
    base_cost = cost.CostCallback("base")
    trainer.add_callback(base_cost)
    trainer.train()
    c = base_cost.result
    assert c["steps"] == 2
    assert c["tokens"] == 2 * sum(len(x) for x in ids)  # padding (documents differ in length) not counted
    assert c["tokens_per_s_per_device"] > 0 and 0 < c["mfu"] < 1
    assert trainer.state.log_history[-1]["cost"] is c
