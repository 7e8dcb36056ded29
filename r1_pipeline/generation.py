"""Generation backends behind one call: prompts (message lists) in, N completions per prompt out.

`hf` runs transformers' `generate` (CPU or GPU); `vllm` runs vLLM's offline engine when installed.
"""

from __future__ import annotations

import importlib.util
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
    def generate(self, prompts: list[list[dict]], n: int, temperature: float, top_p: float,
                 max_new_tokens: int, seed: int) -> list[list[Sample]]: ...


class HFBackend:
    def __init__(self, model_path, device: str = "cpu", precision: str = "fp32", batch_size: int = 256):
        self.model, self.tokenizer = load_model_and_tokenizer(model_path, device, precision)
        self.model.eval()
        self.tokenizer.padding_side = "left"
        self.device, self.batch_size = device, batch_size

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
            gen = self.model.generate(
                **enc, do_sample=True, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                num_return_sequences=n, pad_token_id=self.tokenizer.pad_token_id, eos_token_id=stops,
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
        return [
            [Sample(o.text, len(o.token_ids), o.finish_reason == "stop") for o in r.outputs] for r in results
        ]


def get_backend(name: str, model_path, device: str, precision: str, batch_size: int) -> Backend:
    if name == "vllm":
        if importlib.util.find_spec("vllm") is None:
            raise RuntimeError("backend `vllm` needs the vllm extra: pip install 'r1-pipeline[vllm]'")
        return VLLMBackend(model_path, precision=precision)
    return HFBackend(model_path, device=device, precision=precision, batch_size=batch_size)
