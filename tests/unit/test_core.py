"""Atomic writes, the conversation format, readability filters, the accelerate relaunch decision."""

from __future__ import annotations

import json

import pytest

from r1_pipeline.chat import completion_text, format_completion, prompt_messages
from r1_pipeline.config import RejectionConfig, load_config
from r1_pipeline.filters import non_ascii_letter_fraction, rejection_reason, repeated_ngram_fraction, think_text
from r1_pipeline.io import atomic_path, read_jsonl, write_json, write_jsonl
from r1_pipeline.rewards import REWARD_REGISTRY
from r1_pipeline.stage import launch_command


def test_atomic_file_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.jsonl"
    write_jsonl(target, [{"a": 1}])
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert read_jsonl(target) == [{"a": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_atomic_dir_write_replaces_whole_folder(tmp_path):
    target = tmp_path / "model"
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "a").write_text("1")
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    with pytest.raises(ValueError):
        with atomic_path(target, is_dir=True) as tmp:
            (tmp / "c").write_text("3")
            raise ValueError
    assert sorted(p.name for p in target.iterdir()) == ["b"]


def test_folder_swap_is_one_atomic_exchange(tmp_path):
    from r1_pipeline import io

    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "w").write_text("new")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "w").write_text("old")
    assert io._exchange(tmp_path / "new", tmp_path / "model"), "renameat2(RENAME_EXCHANGE) unavailable"
    assert (tmp_path / "model" / "w").read_text() == "new" and (tmp_path / "new" / "w").read_text() == "old"


def test_a_killed_write_is_repaired_by_the_next_one(tmp_path):
    """Stale temporaries go; an old folder swapped out by a write killed between two renames comes back."""
    from r1_pipeline import io

    target = tmp_path / "model"
    old = io.old_path(target)
    old.mkdir()
    (old / "w").write_text("old, complete")
    (tmp_path / (io.tmp_prefix(target) + "abc")).mkdir()  # a half-written new one
    (tmp_path / (io.tmp_prefix(target) + "trainer")).mkdir()
    io.clean_stale_siblings(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert (target / "w").read_text() == "old, complete"
    other = tmp_path / "model_no_traces"  # a sibling whose name starts alike is not touched
    other.mkdir()
    io.clean_stale_siblings(target)
    assert other.exists()


def test_outputs_are_world_readable(tmp_path):
    write_json(tmp_path / "m.json", {"x": 1})
    assert (tmp_path / "m.json").stat().st_mode & 0o044 == 0o044
    assert json.loads((tmp_path / "m.json").read_text()) == {"x": 1}


def test_read_jsonl_names_the_bad_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n{oops\n')
    with pytest.raises(ValueError, match=r"x.jsonl:2: invalid JSON"):
        read_jsonl(p)


def test_conversation_format_matches_the_format_reward():
    text = format_completion("7+3=10\n10-5=5", "5")
    assert text == "<think>\n7+3=10\n10-5=5\n</think>\n<answer>5</answer>"
    assert REWARD_REGISTRY["format"]([text]) == [1.0]
    assert REWARD_REGISTRY["accuracy"]([text], answer=["5"]) == [1.0]
    assert format_completion(None, "5") == "<answer>5</answer>"
    assert prompt_messages("1+1", "sys") == [{"role": "system", "content": "sys"}, {"role": "user", "content": "1+1"}]
    assert completion_text([{"role": "assistant", "content": "hi"}]) == "hi"


def test_readability_filters():
    rc = RejectionConfig()
    good = format_completion("7+3=10", "10")
    assert rejection_reason(good, rc) is None
    assert rejection_reason("<answer>10</answer>", rc) == "format"
    assert rejection_reason(format_completion("x " * 3000, "1"), rc) == "length"
    assert rejection_reason(format_completion("a b c d " * 40, "1"), rc) == "repetition"
    assert rejection_reason(format_completion("这是 一个 混合 语言 的 推理", "1"), rc) == "mixed_language"
    assert think_text(good) == "7+3=10"
    assert repeated_ngram_fraction("a b c d a b c d") == pytest.approx(0.2)
    assert non_ascii_letter_fraction("abc") == 0.0


def test_stage_relaunches_through_accelerate_only_when_asked(monkeypatch):
    monkeypatch.delenv("R1_LAUNCHED", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    cfg = load_config(profile="micro")
    assert launch_command(cfg, "sft", []) is None
    assert launch_command(cfg, "data", []) is None
    cfg = load_config(profile="micro", overrides=["grpo.deepspeed=zero3", "grpo.num_processes=2"])
    cmd = launch_command(cfg, "grpo", ["--set", "x=1"])
    assert cmd[1:4] == ["-m", "accelerate.commands.launch", "--config_file"]
    assert cmd[cmd.index("--num_processes") + 1] == "2"
    assert cmd[cmd.index("--deepspeed_config_file") + 1].endswith("infra/deepspeed/zero3.json")
    assert cmd[-4:] == ["-m", "tasks.grpo", "--set", "x=1"]
    monkeypatch.setenv("R1_LAUNCHED", "1")
    assert launch_command(cfg, "grpo", []) is None  # already inside the launcher: no recursion


def test_sft_packing_in_rows_keeps_documents_apart():
    from datasets import Dataset

    from r1_pipeline.sft import packed_rows_collator, packed_rows_dataset

    docs = [{"input_ids": list(range(10, 10 + n)), "completion_mask": [0] * 2 + [1] * (n - 2), "extra": "x"}
            for n in (5, 7, 3, 6)]
    packed = packed_rows_dataset(Dataset.from_list(docs), max_length=10)
    rows = list(packed)
    assert all(len(r["input_ids"]) <= 10 for r in rows) and sum(len(r["input_ids"]) for r in rows) == 21
    assert sorted(n for r in rows for n in r["seq_lengths"]) == [3, 5, 6, 7]
    batch = packed_rows_collator(pad_id=0)(rows)
    assert "attention_mask" not in batch
    for row, positions, labels in zip(rows, batch["position_ids"], batch["labels"]):
        starts = [0]
        for n in row["seq_lengths"][:-1]:
            starts.append(starts[-1] + n)
        # positions restart at every document; a document's prompt (2 tokens) and first token predict nothing
        assert [i for i, p in enumerate(positions.tolist()[:len(row["input_ids"])]) if p == 0] == starts
        for s in starts:
            assert labels[s].item() == -100 and labels[s + 1].item() == -100 and labels[s + 2].item() != -100


def test_packed_rows_do_not_attend_across_documents():
    """A packed document's logits equal the document's own, as the SFT stage trains them (no KV cache)."""
    import torch
    import transformers

    from r1_pipeline.sft import packed_rows_collator

    config = transformers.Qwen2Config(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      num_key_value_heads=1, intermediate_size=64, max_position_embeddings=64,
                                      use_cache=False)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).train()
    a, b = list(range(3, 10)), list(range(20, 25))
    batch = packed_rows_collator(pad_id=0)([{"input_ids": a + b, "seq_lengths": [7, 5]}])
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0, 7:]
        alone = model(input_ids=torch.tensor([b])).logits[0]
    assert torch.allclose(packed, alone, atol=1e-5)


def test_liger_kernel_without_the_package_is_a_clear_error():
    """`use_liger_kernel: true` where liger-kernel is not installed (CI, CPU) names the key before training starts."""
    import importlib.util

    from r1_pipeline.stage import StageError
    from r1_pipeline.training import trainer_kwargs

    if importlib.util.find_spec("liger_kernel") is not None:
        pytest.skip("liger-kernel is installed here")
    cfg = load_config_with([])
    assert trainer_kwargs(cfg.sft, cfg, "sft", report=False)["use_liger_kernel"] is False
    cfg = load_config_with(["sft.use_liger_kernel=true"])
    with pytest.raises(StageError, match=r"sft\.use_liger_kernel is true but liger_kernel is not installed"):
        trainer_kwargs(cfg.sft, cfg, "sft", report=False)


def load_config_with(overrides: list[str]):
    from r1_pipeline.config import apply_overrides, profile_dict, validate

    return validate(apply_overrides(profile_dict("micro"), overrides), "micro")
