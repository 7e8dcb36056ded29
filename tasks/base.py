"""Stage `base`: the starting model.

tiny profile: train a byte-level BPE tokenizer (digits single tokens, ChatML template, <think>/<answer>
tags) and pretrain a small Qwen2/Llama model from scratch on the synthetic corpus, a stand-in for a
pretrained base. Real profiles: resolve a hub id (at a pinned revision), a local HF folder or a local GGUF file
(sha256 checked; dequantized), align its EOS with the chat template's end-of-turn token, and write a plain HF
folder, recording exactly which weights were used (r1_model_info.json).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from r1_pipeline import checkpoints, paths
from r1_pipeline.checkpoints import resume_key
from r1_pipeline.config import Config
from r1_pipeline.data import synthetic
from r1_pipeline.errors import StageError, require
from r1_pipeline.io import atomic_path, read_jsonl, sha256_file
from r1_pipeline.modeling import (
    build_model,
    load_model_and_tokenizer,
    num_parameters,
    save_tokenizer,
    torch_dtype,
    train_tokenizer,
)
from r1_pipeline.pretrain import pretrain, render_documents
from r1_pipeline.stage import main_for
from r1_pipeline.tracking import is_main_process
from r1_pipeline.training import write_log_history


def run(cfg: Config) -> dict:
    return from_scratch(cfg) if cfg.base.source == "scratch" else from_pretrained(cfg)


# --- from scratch (tiny profile) ---


def from_scratch(cfg: Config) -> dict:
    b = cfg.base
    # --- data ---
    corpus = read_jsonl(require(paths.CORPUS, "data"))
    if not corpus:
        raise StageError(f"{paths.CORPUS} is empty: base.source `scratch` needs a synthetic source in data")
    # --- tokenizer: learns merges from the documents as they will be rendered (roles and tags included) ---
    plain = [f"user\n{r['prompt']}\nassistant\n{r['completion']}" for r in corpus]
    tokenizer = train_tokenizer(plain, b.tokenizer_vocab_size, atomic=synthetic.atomic_tokens(cfg.data.synthetic))
    texts = render_documents(corpus, tokenizer, cfg.chat.system_prompt)
    # --- model ---
    shape = dict(
        architecture=b.architecture,
        hidden_size=b.hidden_size,
        num_hidden_layers=b.num_hidden_layers,
        num_attention_heads=b.num_attention_heads,
        num_key_value_heads=b.num_key_value_heads,
        intermediate_size=b.intermediate_size,
        max_position_embeddings=b.max_position_embeddings,
        tie_word_embeddings=b.tie_word_embeddings,
    )
    model = build_model(tokenizer, seed=cfg.project.seed, **shape)
    n_params = num_parameters(model)
    print(
        f"base: {b.architecture} with {n_params / 1e6:.2f}M parameters, vocab {len(tokenizer)}, {len(texts)} documents"
    )
    # --- pretrain ---
    trainer = pretrain(
        model,
        tokenizer,
        texts,
        stage="base",
        cfg=cfg,
        steps=b.pretrain_steps,
        batch_size=b.pretrain_batch_size,
        learning_rate=b.pretrain_learning_rate,
        warmup_steps=b.pretrain_warmup_steps,
        save_steps=b.pretrain_save_steps,
        max_length=b.max_position_embeddings,
        resume_key=resume_key(cfg, "base", b, paths.CORPUS),
    )
    # --- save and metrics ---
    write_log_history(trainer, "base")
    save_final(trainer.model, tokenizer, {"source": "scratch", "parameters": n_params, **shape})
    return {"base_parameters": n_params, "base_final_loss": trainer.state.log_history[-1].get("train_loss", 0.0)}


# --- a pretrained model (real profiles) ---


def from_pretrained(cfg: Config) -> dict:
    """Resolve a hub id (at `revision`), a local HF folder or a GGUF file once, and save exactly those weights
    as a plain HF folder (safetensors, tokenizer, chat template, EOS = end of turn)."""
    b = cfg.base
    # --- model: a GGUF file (sha256 checked) or a hub id / local folder ---
    if b.source == "gguf":
        gguf = Path(b.gguf_file)
        digest = sha256_file(gguf)
        if digest != b.gguf_sha256:
            raise StageError(f"base.gguf_file {gguf}: sha256 {digest} is not base.gguf_sha256 {b.gguf_sha256}")
        model, tokenizer = load_gguf(gguf, cfg.project.precision)
        info = {"source": "gguf", "gguf_file": str(gguf), "gguf_sha256": digest}
    else:
        try:
            model, tokenizer = load_model_and_tokenizer(
                b.model_name_or_path, precision=cfg.project.precision, revision=b.revision
            )
        except OSError as exc:
            raise StageError(f"base.model_name_or_path {b.model_name_or_path!r} could not be loaded: {exc}") from None
        info = {
            "source": "pretrained",
            "model_name_or_path": b.model_name_or_path,
            "revision": b.revision,
            "commit_hash": getattr(model.config, "_commit_hash", None),
        }
    # --- context and chat tokens ---
    if context_length(model) != b.context_length:
        raise StageError(
            f"base.context_length is {b.context_length} but the model's max_position_embeddings is "
            f"{context_length(model)}: set base.context_length to it"
        )
    tokens = align_chat_tokens(model, tokenizer)
    info.update(
        parameters=num_parameters(model),
        architecture=model.config.model_type,
        context_length=context_length(model),
        **tokens,
    )
    print(
        f"base: {info['source']} {model.config.model_type} with {info['parameters'] / 1e6:.1f}M parameters, "
        f"end of turn {tokens['eos_token']!r}, stop ids {tokens['stop_token_ids']}"
    )
    # --- save ---
    save_final(model, tokenizer, info)
    return {"base_parameters": info["parameters"]}


# --- real chat models: GGUF weights, the end-of-turn token ---

# End-of-turn markers of the chat templates we know, in the order we look for them.
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")
# Tokens that open a new turn: a model that emits one without closing its own turn must stop there too.
START_OF_TURN = ("<|im_start|>", "<|start_header_id|>", "<start_of_turn>")


def load_gguf(path: str | Path, precision: str = "fp32"):
    """A GGUF file as a plain transformers model and tokenizer (dequantized, trainable, serializable).

    transformers dequantizes GGUF weights on load but keeps a GGUF quantization config, with which the model
    refuses `save_pretrained` and TRL refuses to fine-tune it; we rebuild the model from its config without
    that and copy the weights over.
    """
    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k or not config.tie_word_embeddings]:
        raise RuntimeError(
            f"{path}: weights do not match the architecture (missing {missing}, unexpected {unexpected})"
        )
    model.tie_weights()
    return model.to(torch_dtype(precision)), tokenizer


def align_chat_tokens(model, tokenizer) -> dict:
    """Make EOS mean "end of the assistant's turn" for tokenizer, model config and generation config.

    A chat model ends its turn with its template's end-of-turn token (ChatML `<|im_end|>`), not always with the
    tokenizer's EOS (SmolLM2's GGUF tokenizer declares `<|im_start|>`): generation would run on into a
    hallucinated next turn, and TRL, which stops at the tokenizer's EOS, would let GRPO completions run to the
    length limit. We set EOS to the end-of-turn token, stop generation at it, at the old EOS and at a
    start-of-turn token, and pad with a token that is neither (left padding for generation).
    """
    vocab = tokenizer.get_vocab()
    template = tokenizer.chat_template or ""
    eot = next((t for t in END_OF_TURN if t in template and t in vocab), tokenizer.eos_token)
    if eot is None:
        raise ValueError("the tokenizer has neither an EOS token nor a known end-of-turn token in its chat template")
    old_eos = tokenizer.eos_token
    tokenizer.eos_token = eot
    stops = [vocab[eot]]
    for tok in (old_eos, "<|endoftext|>", *START_OF_TURN):
        if tok and tok in vocab and vocab[tok] not in stops:
            stops.append(vocab[tok])
    if tokenizer.pad_token is None or tokenizer.pad_token_id in stops[:1]:
        tokenizer.pad_token = "<|endoftext|>" if "<|endoftext|>" in vocab else eot
    tokenizer.padding_side = "left"
    model.config.eos_token_id = vocab[eot]
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = stops
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return {
        "eos_token": eot,
        "stop_token_ids": stops,
        "pad_token": tokenizer.pad_token,
        "replaced_eos_token": old_eos if old_eos != eot else None,
    }


def context_length(model) -> int | None:
    return getattr(model.config, "max_position_embeddings", None)


# --- saving ---


def save_final(model, tokenizer, info: dict) -> Path:
    """Save the final model, its tokenizer and r1_model_info.json to outputs/models/base in one atomic rename."""
    out = paths.model_dir("base")
    if not is_main_process():
        return out
    with atomic_path(out, is_dir=True) as tmp:
        model.save_pretrained(tmp)
        save_tokenizer(tokenizer, tmp)
        (tmp / "r1_model_info.json").write_text(json.dumps(info, indent=2, sort_keys=True))
    checkpoints.finish("base")
    return out


if __name__ == "__main__":
    main_for("base", run)
