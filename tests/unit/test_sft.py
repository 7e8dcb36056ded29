"""r1_pipeline.sft's packing in rows: documents stay apart (positions restart, no cross-document attention), and
with flex attention (sft.packed_attention: flex_attention) the loss over packed rows equals the loss of the same
documents padded one per row, on CPU (forward only: flex attention has no CPU backward, so the stage trains with
sdpa there, with a warning)."""

from __future__ import annotations

import warnings

import pytest
import torch
import transformers

from r1_pipeline.sft import packed_attention_kernel, packed_rows_collator, packed_rows_dataset


@pytest.fixture(scope="module")
def docs():
    g = torch.Generator().manual_seed(0)
    out = []
    for n in (5, 9, 3, 12, 7, 6, 10):
        ids = torch.randint(3, 50, (n,), generator=g).tolist()
        out.append({"input_ids": ids, "completion_mask": [0, 0] + [1] * (n - 2)})
    return out


def model_with(kernel: str):
    config = transformers.Qwen2Config(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=64,
        max_position_embeddings=64,
        use_cache=False,
    )
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config, attn_implementation=kernel).eval()


def padded_loss(model, docs) -> torch.Tensor:
    width = max(len(d["input_ids"]) for d in docs)
    ids = torch.zeros((len(docs), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, d in enumerate(docs):
        n = len(d["input_ids"])
        ids[i, :n] = torch.tensor(d["input_ids"])
        mask[i, :n] = 1
        labels[i, :n] = torch.tensor([t if m else -100 for t, m in zip(d["input_ids"], d["completion_mask"])])
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, labels=labels).loss


def packed_batch(docs, max_length=16):
    from datasets import Dataset

    rows = list(packed_rows_dataset(Dataset.from_list(docs), max_length=max_length))
    assert len(rows) < len(docs)  # several documents share a row
    return packed_rows_collator(pad_id=0)(rows)


def test_flex_attention_packed_rows_give_the_padded_loss(docs):
    batch = packed_batch(docs)
    want = padded_loss(model_with("sdpa"), docs)
    flex = model_with("flex_attention")
    with torch.no_grad():
        got = flex(input_ids=batch["input_ids"], position_ids=batch["position_ids"], labels=batch["labels"]).loss
        # the same rows without per-document positions attend across documents: a different loss
        leaky = flex(input_ids=batch["input_ids"], labels=batch["labels"]).loss
    assert torch.allclose(got, want, atol=1e-5), (got, want)
    assert not torch.allclose(leaky, want, atol=1e-3)


def test_flex_attention_falls_back_to_sdpa_off_cuda():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert packed_attention_kernel("flex_attention", "cpu", "sft") == "sdpa"
    assert any("sft.packed_attention" in str(w.message) and "CUDA" in str(w.message) for w in caught)
    assert packed_attention_kernel("flex_attention", "cuda", "sft") == "flex_attention"
    assert packed_attention_kernel("sdpa", "cpu", "sft") == "sdpa"


def test_sft_packing_in_rows_keeps_documents_apart():
    from datasets import Dataset

    docs = [
        {"input_ids": list(range(10, 10 + n)), "completion_mask": [0] * 2 + [1] * (n - 2), "extra": "x"}
        for n in (5, 7, 3, 6)
    ]
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
        assert [i for i, p in enumerate(positions.tolist()[: len(row["input_ids"])]) if p == 0] == starts
        for s in starts:
            assert labels[s].item() == -100 and labels[s + 1].item() == -100 and labels[s + 2].item() != -100


def test_packed_rows_do_not_attend_across_documents():
    """A packed document's logits equal the document's own, as the SFT stage trains them (no KV cache)."""
    model = model_with("sdpa").train()
    a, b = list(range(3, 10)), list(range(20, 25))
    batch = packed_rows_collator(pad_id=0)([{"input_ids": a + b, "seq_lengths": [7, 5]}])
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0, 7:]
        alone = model(input_ids=torch.tensor([b])).logits[0]
    assert torch.allclose(packed, alone, atol=1e-5)
