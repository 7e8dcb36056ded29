"""Greedy equivalence of hf_compiled on the device it runs on: r1_pipeline.generation.CompiledDecoder's greedy
tokens against eager `model.generate(do_sample=False)` (dynamic cache), on random-init Qwen2 models, in fp32
and bf16. tests/unit/test_generation.py checks the same on CPU (fp32, exact); on a GPU the compiled
step runs other kernels (a static cache padded to buckets, CUDA graphs, inductor's fused ops), so in bf16
greedy tokens can part where the two best logits are within rounding of each other. This measures how often.

    python3 bench/greedy_equivalence.py --out $OUT/greedy.json          # on a GPU machine; ~2 min on an H200

For each model: the share of identical tokens and of identical rows, where rows first part (mean position of
the first differing token, among rows that differ), and the gap between eager's two best logits at that
position (small gaps = a near tie decided by rounding, not a bug). EOS is suppressed (min_new_tokens =
max_new_tokens), so every row has the full length in both paths.

Free-running greedy decoding amplifies one near-tie into a different text, so the share of identical tokens
says little about whether the compiled step computes the same function. The teacher-forced columns answer
that: the compiled step is fed eager's own tokens (the same prefix at every step) and its logits are compared
with eager's at the same step: the share of steps whose argmax agrees, the largest logit difference (in ulps
of the dtype at the magnitude of that step's largest logit), and how far apart eager's two best logits were
where they disagree. The floor columns score two eager paths the same way (one forward over prompt + eager's
tokens, no cache, against eager's incremental steps): the difference that other kernel shapes alone make.

    python3 bench/greedy_equivalence.py --device cpu --cases 0,1    # the same on CPU (small cases only)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from r1_pipeline.generation import CompiledDecoder  # noqa: E402

MANTISSA = {torch.float32: 23, torch.bfloat16: 7}  # explicit mantissa bits: ulp = 2^(exponent - these)
SMALL = dict(vocab=4096, hidden=256, layers=4, heads=8, kv_heads=2, ffn=704)
QWEN25_05B = dict(vocab=151936, hidden=896, layers=24, heads=14, kv_heads=2, ffn=4864)

# name, shape, dtype, weight scale (4: peaked logits as in the CPU test; 1: as initialized), rows, new tokens
CASES = [
    ("small, fp32, weights x4", SMALL, torch.float32, 4.0, 16, 128),
    ("small, fp32, as initialized", SMALL, torch.float32, 1.0, 16, 128),
    ("small, bf16, weights x4", SMALL, torch.bfloat16, 4.0, 16, 128),
    ("small, bf16, as initialized", SMALL, torch.bfloat16, 1.0, 16, 128),
    ("0.5B shape, bf16, as initialized", QWEN25_05B, torch.bfloat16, 1.0, 64, 256),
]


def build(shape: dict, dtype, scale: float, device: str):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=shape["vocab"],
        hidden_size=shape["hidden"],
        intermediate_size=shape["ffn"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"],
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        rope_theta=1_000_000.0,
        pad_token_id=0,
        eos_token_id=1,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg)
    with torch.no_grad():
        if scale != 1.0:
            for p in model.parameters():
                p.mul_(scale)
    return model.to(dtype).eval()


def prompts(rows: int, vocab: int, seed: int, max_len: int = 60):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(4, max_len + 1, (rows,), generator=g).tolist()
    width = max(lengths)
    ids = torch.zeros((rows, width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, width - n :] = torch.randint(2, vocab, (n,), generator=g)
        mask[i, width - n :] = 1
    return ids, mask


@torch.no_grad()
def teacher_forced_logits(dec: CompiledDecoder, input_ids, attention_mask, forced):
    """The compiled step's logits at every step when fed `forced` (rows x new) instead of its own picks: the
    prefill and decode loop of CompiledDecoder.generate, with the token at step t taken from `forced`."""
    model, device = dec.model, dec.model.device
    rows, length = input_ids.shape
    new = forced.shape[1]
    batch = -(-rows // dec.batch_multiple) * dec.batch_multiple
    plen = -(-length // dec.bucket) * dec.bucket
    ids = torch.zeros((batch, plen), dtype=torch.long, device=device)
    mask = torch.zeros((batch, plen), dtype=torch.long, device=device)
    ids[:rows, plen - length :], mask[:rows, plen - length :] = input_ids, attention_mask
    mask[rows:, -1] = 1
    cache_len = dec._ensure_cache(batch, plen + new)
    full_mask = torch.ones((batch, cache_len), dtype=torch.long, device=device)
    full_mask[:, :plen] = mask
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        cache_position=torch.arange(plen, device=device),
        past_key_values=dec.cache,
        use_cache=True,
        logits_to_keep=1,
    )
    steps = [out.logits[:, -1, :].float()]
    tok = torch.zeros(batch, dtype=torch.long, device=device)
    for t in range(new - 1):
        tok[:rows] = forced[:, t]
        pos = torch.tensor([plen + t], device=device)
        steps.append(dec.step(tok[:, None], full_mask, positions[:, -1:] + 1 + t, pos).clone())
    return torch.stack(steps, 1)[:rows]


def ulp_of(x, dtype):
    """The dtype's rounding step at the magnitude of x (elementwise)."""
    return torch.exp2(torch.floor(torch.log2(x.abs().clamp(min=1e-30))) - MANTISSA[dtype])


@torch.no_grad()
def run_case(name, shape, dtype, scale, rows, new, device, calls=3) -> dict:
    model = build(shape, dtype, scale, device)
    dec = CompiledDecoder(model)
    graphs0 = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    same_tok = total_tok = same_rows = 0
    first_diff, gaps, chosen_ulps, ranks = [], [], [], []
    tf_same = tf_total = 0
    tf_max_ulps, tf_gaps = 0.0, []
    floor_same, floor_max_ulps = 0, 0.0
    t_eager = t_comp = 0.0
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for call in range(calls):
        ids, mask = prompts(rows, shape["vocab"], seed=call)
        ids, mask = ids.to(device), mask.to(device)
        sync()
        t0 = time.time()
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=False,
            max_new_tokens=new,
            min_new_tokens=new,
            pad_token_id=0,
            eos_token_id=1,
            output_scores=True,
            return_dict_in_generate=True,
        )
        sync()
        t1 = time.time()
        got = dec.generate(ids, mask, new, do_sample=False, min_new_tokens=new, eos_token_ids=[1], pad_id=0)
        sync()
        t2 = time.time()
        if call:  # the first call compiles
            t_eager += t1 - t0
            t_comp += t2 - t1
        want = out.sequences[:, ids.shape[1] :]
        scores = torch.stack(out.scores, 1).float()  # rows x new x vocab (EOS masked by min_new_tokens)
        # teacher forcing: the compiled step on eager's own tokens, compared with eager's logits step by step
        finite = torch.isfinite(scores)  # EOS is -inf in eager's scores (min_new_tokens): mask it alike
        forced = teacher_forced_logits(dec, ids, mask, want).masked_fill(~finite, float("-inf"))
        agree = forced.argmax(-1) == scores.argmax(-1)
        tf_same += int(agree.sum())
        tf_total += agree.numel()
        # in ulps at the magnitude of the step's largest logit (the scale the argmax is decided at)
        scale = scores.masked_fill(~finite, 0).abs().amax(-1, keepdim=True)
        diff_ulps = ((forced - scores).abs() / ulp_of(scale, dtype)).masked_fill(~finite, 0)
        tf_max_ulps = max(tf_max_ulps, float(diff_ulps.max()))
        top2 = torch.topk(scores, 2, dim=-1).values
        tf_gaps += (top2[..., 0] - top2[..., 1])[~agree].tolist()
        # the noise floor of two eager paths: one forward over prompt + eager's tokens (no cache, another
        # kernel shape) against eager's incremental steps, scored the same way
        full = (
            model(input_ids=torch.cat([ids, want], 1), attention_mask=torch.cat([mask, torch.ones_like(want)], 1))
            .logits[:, ids.shape[1] - 1 : -1]
            .float()
        )
        full = full.masked_fill(~finite, float("-inf"))
        floor_agree = full.argmax(-1) == scores.argmax(-1)
        floor_same += int(floor_agree.sum())
        floor_max_ulps = max(
            floor_max_ulps, float(((full - scores).abs() / ulp_of(scale, dtype)).masked_fill(~finite, 0).max())
        )
        eq = got == want
        same_tok += int(eq.sum())
        total_tok += eq.numel()
        same_rows += int(eq.all(1).sum())
        for r in range(rows):
            bad = (~eq[r]).nonzero()
            if len(bad):
                t = int(bad[0])
                first_diff.append(t)
                top2 = torch.topk(scores[r, t], 2).values
                gaps.append(float(top2[0] - top2[1]))
                # the compiled path's token, scored by eager: its gap to eager's pick, in units of the dtype's
                # rounding step (ulp) at that logit's magnitude, and its rank among eager's logits
                chosen = float(scores[r, t, got[r, t]])
                ulp = 2.0 ** (torch.floor(torch.log2(top2[0].abs())).item() - MANTISSA[dtype])
                chosen_ulps.append((float(top2[0]) - chosen) / ulp)
                ranks.append(int((scores[r, t] > chosen).sum()))
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs0
    n_rows = rows * calls
    res = {
        "case": name,
        "dtype": str(dtype).replace("torch.", ""),
        "rows": n_rows,
        "new_tokens": new,
        "identical_tokens": same_tok / total_tok,
        "identical_rows": same_rows / n_rows,
        "rows_differing": len(first_diff),
        "mean_first_diff": sum(first_diff) / len(first_diff) if first_diff else None,
        "min_first_diff": min(first_diff) if first_diff else None,
        "max_gap_at_first_diff": max(gaps) if gaps else None,
        "median_gap_at_first_diff": sorted(gaps)[len(gaps) // 2] if gaps else None,
        "median_chosen_gap_ulps": sorted(chosen_ulps)[len(chosen_ulps) // 2] if chosen_ulps else None,
        "max_chosen_gap_ulps": max(chosen_ulps) if chosen_ulps else None,
        "max_rank_of_chosen": max(ranks) if ranks else None,
        "teacher_forced_argmax_agreement": tf_same / tf_total,
        "teacher_forced_max_logit_diff_ulps": tf_max_ulps,
        "teacher_forced_max_gap_where_argmax_differs": max(tf_gaps) if tf_gaps else None,
        "eager_one_pass_argmax_agreement": floor_same / tf_total,
        "eager_one_pass_max_logit_diff_ulps": floor_max_ulps,
        "graphs": graphs,
        "eager_s_per_call": t_eager / (calls - 1),
        "compiled_s_per_call": t_comp / (calls - 1),
    }
    del model, dec
    if device == "cuda":
        torch.cuda.empty_cache()
    return res


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="greedy.json")
    p.add_argument("--cases", help="indices into CASES (comma-separated; default all)")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a check of this script itself")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: needs a CUDA device (the CPU check is tests/unit/test_generation.py)", file=sys.stderr)
        return 2
    import transformers

    cases = [CASES[int(i)] for i in args.cases.split(",")] if args.cases else CASES
    results = []
    for case in cases:
        t0 = time.time()
        try:
            r = run_case(*case, device=args.device)
        except Exception as e:  # noqa: BLE001  (report and go on to the next case)
            r = {"case": case[0], "error": f"{type(e).__name__}: {e}"}
        r["case_s"] = time.time() - t0
        results.append(r)
        print(json.dumps(r), flush=True)
        Path(args.out).write_text(
            json.dumps(
                {
                    "torch": torch.__version__,
                    "transformers": transformers.__version__,
                    "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
                    "results": results,
                },
                indent=1,
            )
        )
    where = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"\ntorch {torch.__version__}, transformers {transformers.__version__}, {where}")
    print(
        "| model | rows x new tokens | identical tokens | identical rows | first diff (mean, min) "
        "| eager top1-top2 gap at first diff (median, max) | compiled token's eager gap, ulps (median, max) | its eager rank (max) "
        "| teacher-forced argmax agreement | teacher-forced max logit diff, ulps | eager top1-top2 gap where "
        "teacher-forced argmax differs (max) | floor: eager one-pass argmax agreement, max diff ulps | graphs | eager s/call | compiled s/call |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['case']} | error: {r['error'][:120]} |")
            continue
        fd = "—" if r["mean_first_diff"] is None else f"{r['mean_first_diff']:.1f}, {r['min_first_diff']}"
        gap = (
            "—"
            if r["max_gap_at_first_diff"] is None
            else f"{r['median_gap_at_first_diff']:.4f}, {r['max_gap_at_first_diff']:.4f}"
        )
        ulps = (
            "—"
            if r["max_chosen_gap_ulps"] is None
            else f"{r['median_chosen_gap_ulps']:.1f}, {r['max_chosen_gap_ulps']:.1f}"
        )
        g = r["teacher_forced_max_gap_where_argmax_differs"]
        tfgap = "—" if g is None else f"{g:.4f}"
        print(
            f"| {r['case']} | {r['rows']} x {r['new_tokens']} | {100 * r['identical_tokens']:.2f}% "
            f"| {100 * r['identical_rows']:.1f}% ({r['rows'] - r['rows_differing']}/{r['rows']}) | {fd} | {gap} "
            f"| {ulps} | {r['max_rank_of_chosen'] if r['max_rank_of_chosen'] is not None else '—'} "
            f"| {100 * r['teacher_forced_argmax_agreement']:.3f}% | {r['teacher_forced_max_logit_diff_ulps']:.1f} "
            f"| {tfgap} | {100 * r['eager_one_pass_argmax_agreement']:.3f}%, "
            f"{r['eager_one_pass_max_logit_diff_ulps']:.1f} | {r['graphs']} | {r['eager_s_per_call']:.2f} | {r['compiled_s_per_call']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
