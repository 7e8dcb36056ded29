"""Stage `base`: the starting model.

tiny profile: train a byte-level BPE tokenizer (digits single tokens, ChatML template, <think>/<answer>
tags) and pretrain a small Qwen2/Llama model from scratch on the synthetic corpus, a stand-in for a
pretrained base. Real profiles: resolve a hub id (at a pinned revision), a local HF folder or a local GGUF file
(sha256 checked; dequantized), align its EOS with the chat template's end-of-turn token, and write a plain HF
folder, recording exactly which weights were used (r1_model_info.json).
"""

from __future__ import annotations

from pathlib import Path

from r1_pipeline import paths
from r1_pipeline.config import Config
from r1_pipeline.data import synthetic
from r1_pipeline.io import read_jsonl, sha256_file
from r1_pipeline.modeling import (
    align_chat_tokens, build_model, context_length, load_gguf, load_model_and_tokenizer, num_parameters,
    train_tokenizer,
)
from r1_pipeline.pretrain import pretrain, render_documents
from r1_pipeline.stage import StageError, main_for, require
from r1_pipeline.checkpoints import resume_key
from r1_pipeline.training import save_final, write_log_history


def from_scratch(cfg: Config) -> dict:
    b = cfg.base
    corpus = read_jsonl(require(paths.CORPUS, "data"))
    if not corpus:
        raise StageError(f"{paths.CORPUS} is empty: base.source `scratch` needs a synthetic source in data")
    # The tokenizer learns merges from the documents as they will be rendered (roles and tags included).
    plain = [f"user\n{r['prompt']}\nassistant\n{r['completion']}" for r in corpus]
    tokenizer = train_tokenizer(plain, b.tokenizer_vocab_size, atomic=synthetic.atomic_tokens(cfg.data.synthetic))
    texts = render_documents(corpus, tokenizer, cfg.chat.system_prompt)
    shape = dict(
        architecture=b.architecture, hidden_size=b.hidden_size, num_hidden_layers=b.num_hidden_layers,
        num_attention_heads=b.num_attention_heads, num_key_value_heads=b.num_key_value_heads,
        intermediate_size=b.intermediate_size, max_position_embeddings=b.max_position_embeddings,
        tie_word_embeddings=b.tie_word_embeddings,
    )
    model = build_model(tokenizer, seed=cfg.project.seed, **shape)
    n_params = num_parameters(model)
    print(f"base: {b.architecture} with {n_params / 1e6:.2f}M parameters, vocab {len(tokenizer)}, {len(texts)} documents")
    trainer = pretrain(
        model, tokenizer, texts, stage="base", cfg=cfg, steps=b.pretrain_steps, batch_size=b.pretrain_batch_size,
        learning_rate=b.pretrain_learning_rate, warmup_steps=b.pretrain_warmup_steps,
        save_steps=b.pretrain_save_steps, max_length=b.max_position_embeddings,
        resume_key=resume_key(cfg, "base", b, paths.CORPUS),
    )
    write_log_history(trainer, "base")
    save_final(trainer.model, tokenizer, "base", {"source": "scratch", "parameters": n_params, **shape})
    return {"base_parameters": n_params, "base_final_loss": trainer.state.log_history[-1].get("train_loss", 0.0)}


def from_pretrained(cfg: Config) -> dict:
    """Resolve a hub id (at `revision`), a local HF folder or a GGUF file once, and save exactly those weights
    as a plain HF folder (safetensors, tokenizer, chat template, EOS = end of turn)."""
    b = cfg.base
    if b.source == "gguf":
        gguf = Path(b.gguf_file)
        digest = sha256_file(gguf)
        if digest != b.gguf_sha256:
            raise StageError(f"base.gguf_file {gguf}: sha256 {digest} is not base.gguf_sha256 {b.gguf_sha256}")
        model, tokenizer = load_gguf(gguf, cfg.project.precision)
        info = {"source": "gguf", "gguf_file": str(gguf), "gguf_sha256": digest}
    else:
        try:
            model, tokenizer = load_model_and_tokenizer(b.model_name_or_path, precision=cfg.project.precision,
                                                        revision=b.revision)
        except OSError as exc:
            raise StageError(f"base.model_name_or_path {b.model_name_or_path!r} could not be loaded: {exc}") from None
        info = {"source": "pretrained", "model_name_or_path": b.model_name_or_path, "revision": b.revision,
                "commit_hash": getattr(model.config, "_commit_hash", None)}
    if context_length(model) != b.context_length:
        raise StageError(f"base.context_length is {b.context_length} but the model's max_position_embeddings is "
                         f"{context_length(model)}: set base.context_length to it")
    tokens = align_chat_tokens(model, tokenizer)
    info.update(parameters=num_parameters(model), architecture=model.config.model_type,
                context_length=context_length(model), **tokens)
    print(f"base: {info['source']} {model.config.model_type} with {info['parameters'] / 1e6:.1f}M parameters, "
          f"end of turn {tokens['eos_token']!r}, stop ids {tokens['stop_token_ids']}")
    save_final(model, tokenizer, "base", info)
    return {"base_parameters": info["parameters"]}


def run(cfg: Config) -> dict:
    return from_scratch(cfg) if cfg.base.source == "scratch" else from_pretrained(cfg)


if __name__ == "__main__":
    main_for("base", run)
