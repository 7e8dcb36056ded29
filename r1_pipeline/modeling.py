"""Tiny-model factory and model/tokenizer loading.

No pretrained weights can be downloaded on our machines, so the tiny profile trains its own tokenizer and
a small Qwen2/Llama model from scratch. Real profiles load a hub id or a local path instead; both paths end
in the same `save_pretrained` folder that every later stage loads with `load_model_and_tokenizer`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

# ChatML, as Qwen uses: roles in plain text between two special markers.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Reasoning tags are atomic tokens but not "special": decoding with skip_special_tokens keeps them.
TAG_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]
TOKENIZER_MARKER = "r1_pipeline_tokenizer.json"


def train_tokenizer(texts: Iterable[str], vocab_size: int, atomic: Sequence[str] = ()) -> PreTrainedTokenizerFast:
    """Byte-level BPE with every digit its own token, plus `atomic` strings kept whole wherever they occur
    (longest match first; the synthetic task's numbers and signed operands, one token per term)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=max(vocab_size, 256 + len(SPECIAL_TOKENS) + len(TAG_TOKENS)),
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # any text stays encodable
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in [*TAG_TOKENS, *atomic]])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
    )
    fast.padding_side = "left"  # generation pads on the left; trainers set their own side
    return fast


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, path: Path) -> None:
    tokenizer.save_pretrained(path)
    # Marker: AutoTokenizer would reload this as a Qwen2 tokenizer with different pre-tokenization.
    (Path(path) / TOKENIZER_MARKER).write_text(json.dumps({"class": "PreTrainedTokenizerFast"}))


def load_tokenizer(path: str | Path, revision: str | None = None):
    if (Path(path) / TOKENIZER_MARKER).exists():
        tok = PreTrainedTokenizerFast.from_pretrained(path)
    else:
        tok = AutoTokenizer.from_pretrained(path, revision=revision)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if tok.chat_template is None:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def build_model(
    tokenizer,
    architecture: str,
    hidden_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    intermediate_size: int,
    max_position_embeddings: int,
    tie_word_embeddings: bool = True,
    seed: int = 0,
):
    """A randomly initialized causal LM of the given shape (Qwen2 or Llama)."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    config_cls, model_cls = (
        (Qwen2Config, Qwen2ForCausalLM) if architecture == "qwen2" else (LlamaConfig, LlamaForCausalLM)
    )
    config = config_cls(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = model_cls(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def num_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("project.device is `cuda` but no CUDA device is available")
    return device


def torch_dtype(precision: str):
    return torch.bfloat16 if precision == "bf16" else torch.float32


def load_model_and_tokenizer(
    path: str | Path, device: str = "cpu", precision: str = "fp32", revision: str | None = None
):
    """Load a `save_pretrained` folder (or hub id at `revision`) for training or generation."""
    tokenizer = load_tokenizer(path, revision)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(precision), revision=revision)
    return model.to(device), tokenizer


def stop_token_ids(model, tokenizer) -> list[int]:
    """Every token id that ends a completion: the generation config's EOS list and the tokenizer's EOS."""
    ids = model.generation_config.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.insert(0, tokenizer.eos_token_id)
    return ids
