"""hf_compiled generation (r1_pipeline.generation.CompiledDecoder): the same tokens as eager transformers generate
under greedy decoding, on a tiny random Qwen2 with torch.compile on CPU, one graph across calls of different
prompt lengths, EOS handling, sampling settings, the fallback message, and the `hf_compiled` backend. GRPO's
rollouts through the decoder: test_grpo.py."""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from r1_pipeline import generation
from r1_pipeline.generation import CompiledDecoder, compiled_decoder


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
    )
    m = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():  # larger weights: peaked logits, so greedy ties (fp rounding) cannot decide a token
        for p in m.parameters():
            p.mul_(4.0)
    return m


def left_padded(lengths, seed):
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros((len(lengths), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, width - n :] = torch.randint(2, 97, (n,), generator=g)
        mask[i, width - n :] = 1
    return ids, mask


def eager_greedy(model, ids, mask, new, eos=None):
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=False,
        max_new_tokens=new,
        min_new_tokens=0 if eos is not None else new,
        pad_token_id=0,
        eos_token_id=eos if eos is not None else 1,
    )
    return out[:, ids.shape[1] :]


def test_greedy_tokens_equal_eager_generate_across_prompt_lengths(model):
    dec = CompiledDecoder(model, bucket=16, batch_multiple=4)
    before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    for seed, lengths in enumerate([[5, 9, 12], [3, 20, 7, 11, 2], [17]]):  # three buckets, two batch sizes
        ids, mask = left_padded(lengths, seed)
        want = eager_greedy(model, ids, mask, 24)
        got = dec.generate(ids, mask, 24, do_sample=False, min_new_tokens=24, eos_token_ids=[1], pad_id=0)
        assert got.shape == want.shape
        assert torch.equal(got, want), (seed, got, want)
    # the cache only grows (17 -> bucket 32 + 24) and batches pad to multiples of 4: at most 2 batch shapes
    assert dec.cache_allocations <= 3
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"] - before
    assert 1 <= graphs <= 3, graphs


def test_eos_ends_a_row_and_pads_after_it(model):
    ids, mask = left_padded([6, 10], 7)
    eager = eager_greedy(model, ids, mask, 30)
    eos = int(eager[0, 3])  # a token row 0 emits early: used as EOS, row 0 must stop right there
    dec = compiled_decoder(model, "test")
    got = dec.generate(ids, mask, 30, do_sample=False, eos_token_ids=[eos], pad_id=0)
    want = eager_greedy(model, ids, mask, 30, eos=eos)
    n = want.shape[1]
    assert torch.equal(got[:, :n], want)
    first = (got[0] == eos).nonzero()[0].item()
    assert first <= 3 and (got[0, first + 1 :] == 0).all()


def test_sampling_respects_top_k_and_min_new_tokens(model):
    ids, mask = left_padded([4, 8, 8, 5], 3)
    dec = compiled_decoder(model, "test")
    g = torch.Generator().manual_seed(0)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, -1, :]
    allowed = torch.topk(logits, 2, dim=-1).indices
    first = dec.generate(ids, mask, 1, do_sample=True, temperature=0.7, top_k=2, pad_id=0, generator=g)[:, 0]
    assert all(first[i] in allowed[i] for i in range(4))
    eos = int(eager_greedy(model, ids, mask, 1)[0, 0])
    out = dec.generate(
        ids,
        mask,
        12,
        do_sample=True,
        temperature=1.0,
        top_p=0.9,
        min_new_tokens=12,
        eos_token_ids=[eos],
        pad_id=0,
        generator=g,
    )
    assert (out != eos).all()  # EOS suppressed until min_new_tokens


def test_fallback_warns_and_returns_none(model, monkeypatch):
    monkeypatch.setattr(generation, "_decoders", {})
    monkeypatch.setattr(type(model), "_can_compile_fullgraph", False, raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert compiled_decoder(model, "grpo") is None
    assert any("hf_compiled cannot run" in str(w.message) and "eager" in str(w.message) for w in caught)


def test_backend_hf_compiled_samples_like_hf(saved_model):
    """get_backend('hf_compiled') (rejection sampling, evaluation): N samples per prompt, lengths within
    max_new_tokens, and the decoder kept across calls."""
    from r1_pipeline.generation import get_backend

    backend = get_backend("hf_compiled", saved_model, "cpu", "fp32", batch_size=8)
    assert backend.decoder is not None
    prompts = [[{"role": "user", "content": f"{a} + 3"}] for a in range(5)]
    for _ in range(2):
        out = backend.generate(prompts, n=3, temperature=0.7, top_p=0.95, max_new_tokens=10, seed=0)
        assert len(out) == 5 and all(len(g) == 3 for g in out)
        assert all(0 <= s.num_tokens <= 10 and isinstance(s.text, str) for g in out for s in g)
    assert backend.decoder.calls == 6  # 5 prompts in chunks of 8 // 3 = 2 prompts: 3 calls each time
    assert backend.decoder.cache_allocations == 1  # 6 and 3 rows both pad to a batch of 8
