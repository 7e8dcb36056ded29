"""Generation backends behind one call: prompts (message lists) in, N completions per prompt out.

`hf` runs transformers' `generate` (CPU or GPU); `hf_compiled` decodes with a static KV cache and a compiled
decode step (CUDA graphs on GPU; see CompiledDecoder), falling back to `hf` with a warning where it cannot run;
`vllm` runs vLLM's offline engine when installed.
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from typing import Protocol

import torch

from r1_pipeline.modeling import load_model_and_tokenizer, stop_token_ids


@dataclass
class Sample:
    text: str
    num_tokens: int
    finished: bool  # ended with an end-of-turn / EOS token (not cut at max_new_tokens)


class Backend(Protocol):
    def generate(
        self, prompts: list[list[dict]], n: int, temperature: float, top_p: float, max_new_tokens: int, seed: int
    ) -> list[list[Sample]]: ...


class HFBackend:
    def __init__(
        self, model_path, device: str = "cpu", precision: str = "fp32", batch_size: int = 256, compiled: bool = False
    ):
        self.model, self.tokenizer = load_model_and_tokenizer(model_path, device, precision)
        self.model.eval()
        self.tokenizer.padding_side = "left"
        self.device, self.batch_size = device, batch_size
        self.decoder = compiled_decoder(self.model, "generation") if compiled else None

    @torch.inference_mode()
    def generate(self, prompts, n, temperature, top_p, max_new_tokens, seed):
        texts = [self.tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
        per_batch = max(1, self.batch_size // n)
        stops = stop_token_ids(self.model, self.tokenizer)  # end of turn, EOS, start of a new turn
        out: list[list[Sample]] = []
        torch.manual_seed(seed)
        for start in range(0, len(texts), per_batch):
            chunk = texts[start : start + per_batch]
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            if self.decoder is not None:
                new = self.decoder.generate(
                    enc["input_ids"].repeat_interleave(n, 0),
                    enc["attention_mask"].repeat_interleave(n, 0),
                    max_new_tokens,
                    do_sample=True,
                    temperature=temperature,
                    top_p=top_p,
                    eos_token_ids=stops,
                    pad_id=self.tokenizer.pad_token_id,
                )
            else:
                gen = self.model.generate(
                    **enc,
                    do_sample=True,
                    temperature=temperature,
                    top_p=top_p,
                    max_new_tokens=max_new_tokens,
                    num_return_sequences=n,
                    pad_token_id=self.tokenizer.pad_token_id,
                    eos_token_id=stops,
                )
                new = gen[:, enc["input_ids"].shape[1] :]
            for i in range(len(chunk)):
                group = []
                for row in new[i * n : (i + 1) * n]:
                    ids = row.tolist()
                    end = next((j for j, t in enumerate(ids) if t in stops), None)
                    finished = end is not None
                    ids = ids[:end] if finished else ids  # nothing after the end of the turn is kept
                    ids = [t for t in ids if t != self.tokenizer.pad_token_id]
                    group.append(Sample(self.tokenizer.decode(ids, skip_special_tokens=True), len(ids), finished))
                out.append(group)
        return out


class VLLMBackend:
    def __init__(self, model_path, precision: str = "bf16", **_):
        from vllm import LLM

        self.llm = LLM(model=str(model_path), dtype="bfloat16" if precision == "bf16" else "float32")
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, prompts, n, temperature, top_p, max_new_tokens, seed):
        from vllm import SamplingParams

        texts = [self.tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
        params = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, seed=seed)
        results = self.llm.generate(texts, params)
        return [[Sample(o.text, len(o.token_ids), o.finish_reason == "stop") for o in r.outputs] for r in results]


def get_backend(name: str, model_path, device: str, precision: str, batch_size: int) -> Backend:
    if name == "vllm":
        if importlib.util.find_spec("vllm") is None:
            raise RuntimeError("backend `vllm` needs the vllm extra: pip install 'r1-pipeline[vllm]'")
        return VLLMBackend(model_path, precision=precision)
    return HFBackend(
        model_path, device=device, precision=precision, batch_size=batch_size, compiled=name == "hf_compiled"
    )


# ---------------------------------------------------------------------------------------------------------------
# hf_compiled: a static KV cache and a torch.compile'd decode step (CUDA graphs on GPU)
#
# Why not `model.generate(cache_implementation="static")`: TRL's GRPOTrainer builds its GenerationConfig with
# `disable_compile=True`, so inside the trainer the static cache ran *uncompiled*, attending over the whole fixed
# cache at every step: slower than the dynamic cache (docs/benchmarks.md). Outside the trainer, generate compiles
# a graph per (batch, cache length), and the cache length follows the longest prompt of each batch, so shapes
# change from call to call. Here the decode step always sees the same shapes: the batch is padded to a multiple
# of `batch_multiple`, prompts are left-padded to a multiple of `bucket` tokens, and the cache length only grows
# (to the longest prompt bucket seen + max_new_tokens), so one compiled graph serves every later call. Prefill
# (one forward over the prompt) runs eager; the decode step (one token for every row) is the compiled graph.
# ---------------------------------------------------------------------------------------------------------------


class CompiledDecoder:
    """Static-cache decoding with a compiled one-token step, for one model.

    `generate(input_ids, attention_mask, ...)` takes left-padded prompts and returns the new token ids
    (rows x max_new_tokens; `pad_id` after a row's end). Greedy decoding gives the tokens of eager
    `model.generate(do_sample=False)` (tests/unit/test_generation.py).
    """

    def __init__(self, model, bucket: int = 64, batch_multiple: int = 8, mode: str | None = None):
        self.model, self.bucket, self.batch_multiple = model, bucket, batch_multiple
        self.mode = mode if mode is not None else ("reduce-overhead" if model.device.type == "cuda" else "default")
        self.cache = None
        self.cache_shape: tuple[int, int] | None = None  # (batch, cache length) of self.cache
        self.step = torch.compile(self._decode_step, mode=self.mode, fullgraph=True, dynamic=False)
        self.calls = self.cache_allocations = 0

    def _decode_step(self, input_ids, attention_mask, position_ids, cache_position):
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache_position=cache_position,
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1, :].float()

    def _ensure_cache(self, batch: int, length: int):
        from transformers import StaticCache

        if self.cache_shape is not None and self.cache_shape[0] == batch and self.cache_shape[1] >= length:
            self.cache.reset()
            return self.cache_shape[1]
        length = max(length, self.cache_shape[1] if self.cache_shape else 0)
        self.cache = StaticCache(config=self.model.config, max_cache_len=length)
        self.cache_shape = (batch, length)
        self.cache_allocations += 1
        return length

    @torch.no_grad()
    def generate(
        self,
        input_ids,
        attention_mask,
        max_new_tokens: int,
        *,
        do_sample: bool = True,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int | None = None,
        min_new_tokens: int = 0,
        eos_token_ids=(),
        pad_id: int = 0,
        generator: torch.Generator | None = None,
    ):
        self.calls += 1
        device = self.model.device
        rows, length = input_ids.shape
        batch = -(-rows // self.batch_multiple) * self.batch_multiple
        plen = -(-length // self.bucket) * self.bucket
        ids = torch.full((batch, plen), pad_id, dtype=torch.long, device=device)
        mask = torch.zeros((batch, plen), dtype=torch.long, device=device)
        ids[:rows, plen - length :] = input_ids.to(device)
        mask[:rows, plen - length :] = attention_mask.to(device)
        mask[rows:, -1] = 1  # batch-padding rows: one attended token, so no row attends to nothing
        cache_len = self._ensure_cache(batch, plen + max_new_tokens)
        full_mask = torch.ones((batch, cache_len), dtype=torch.long, device=device)
        full_mask[:, :plen] = mask  # future positions are hidden by causality (cache_position)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        next_pos = positions[:, -1:] + 1

        was_training = self.model.training
        self.model.eval()  # a compiled graph is specialized on train/eval mode
        try:
            out = self.model(
                input_ids=ids,
                attention_mask=full_mask[:, :plen],
                position_ids=positions,
                cache_position=torch.arange(plen, device=device),
                past_key_values=self.cache,
                use_cache=True,
                logits_to_keep=1,
            )
            logits = out.logits[:, -1, :].float()
            eos = torch.tensor(list(eos_token_ids), dtype=torch.long, device=device)
            done = torch.zeros(batch, dtype=torch.bool, device=device)
            new = torch.full((batch, max_new_tokens), pad_id, dtype=torch.long, device=device)
            for t in range(max_new_tokens):
                if t < min_new_tokens and len(eos):
                    logits[:, eos] = float("-inf")
                tok = _pick(logits, do_sample, temperature, top_p, top_k, generator)
                tok = torch.where(done, torch.full_like(tok, pad_id), tok)
                new[:, t] = tok
                if len(eos):
                    done |= torch.isin(tok, eos)
                if t == max_new_tokens - 1 or (t % 16 == 15 and bool(done[:rows].all())):
                    break
                pos = torch.tensor([plen + t], device=device)
                # clone: a CUDA-graph output lives in memory the next replay overwrites
                logits = self.step(tok[:, None], full_mask, next_pos + t, pos).clone()
        finally:
            self.model.train(was_training)
        return new[:rows]


def _pick(logits, do_sample, temperature, top_p, top_k, generator):
    """Next tokens from fp32 logits, in the order of transformers' warpers: temperature, top-k, top-p."""
    if not do_sample:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=False)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum <= (1 - top_p)
        drop[:, -1] = False  # keep at least the most likely token
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


def compiled_decoding_problem(model) -> str | None:
    """Why hf_compiled cannot run for this model here (None: it can)."""
    if not getattr(model, "_can_compile_fullgraph", True):
        return f"{type(model).__name__} does not support a static cache under torch.compile"
    if model.device.type == "cpu":
        import shutil

        if shutil.which("g++") is None and shutil.which("c++") is None:
            return "torch.compile on CPU needs a C++ compiler (g++), none found"
    if model.device.type not in ("cpu", "cuda"):
        return f"device {model.device.type} is not supported (cpu, cuda)"
    return None


_decoders: dict[int, CompiledDecoder] = {}


def compiled_decoder(model, warn_stage: str = "generation") -> CompiledDecoder | None:
    """The model's CompiledDecoder (one per model object, so its graph and cache are reused across calls), or
    None with a warning that says why, and the caller uses eager `generate`."""
    key = id(model)
    if key not in _decoders:
        problem = compiled_decoding_problem(model)
        if problem:
            warnings.warn(
                f"{warn_stage}: backend hf_compiled cannot run ({problem}); falling back to eager "
                "transformers generate (backend hf)",
                stacklevel=2,
            )
        _decoders[key] = None if problem else CompiledDecoder(model)  # a failure is remembered: one warning
    return _decoders[key]
