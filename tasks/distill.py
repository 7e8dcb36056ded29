"""Stage `distill`: a smaller student learns from the RL model's rejection-sampled traces (R1-Distill).

For an honest comparison, a second student of the same size and init is trained on the same problems with
answers only (no <think> traces): `distill_no_traces`. `method: logit` trains the student with TRL's
DistillationTrainer (on-policy, token-level distillation from the RL teacher) instead of SFT on traces.
"""

from __future__ import annotations

from r1_pipeline import checkpoints, paths, tracking
from r1_pipeline.checkpoints import resume_key
from r1_pipeline.config import Config
from r1_pipeline.errors import require
from r1_pipeline.io import atomic_path, read_jsonl
from r1_pipeline.modeling import build_model, load_model_and_tokenizer, load_tokenizer, num_parameters, resolve_device
from r1_pipeline.pretrain import pretrain, render_documents
from r1_pipeline.sft import conversations, train_sft
from r1_pipeline.stage import main_for
from r1_pipeline.training import mark_skipped, save_trainer_final, trl_args, write_log_history


def run(cfg: Config) -> dict:
    d = cfg.distill
    if not d.enabled:
        mark_skipped("distill", "distill.enabled is false")
        mark_skipped("distill_no_traces", "distill.enabled is false")
        return {}
    # --- data: the rejection-sampled traces ---
    rows = read_jsonl(require(paths.REJECTION_DATA, "rejection"))
    if not rows:
        reason = f"rejection sampling kept no traces ({paths.REJECTION_DATA} is empty)"
        mark_skipped("distill", reason)
        mark_skipped("distill_no_traces", reason)
        return {"distill_examples": 0}
    tracking.log_dataset(paths.REJECTION_DATA, "rejection_traces", "training")
    # --- model: a fresh student (pretrained on the base corpus first for student_init `pretrain`) ---
    skey = student_key(cfg)
    model, tokenizer = student_init(cfg, skey)
    n_params = num_parameters(model)
    info = {"source": "distill", "parameters": n_params, "examples": len(rows), "method": d.method}
    common = dict(completion_only_loss=True)  # the loss on the trace and answer, not on the prompt
    # --- train: SFT on the traces (R1-Distill), or TRL's logit-level distillation from the RL teacher ---
    if d.method == "logit":
        teacher = paths.model_dir(cfg.rejection.source_model)
        trainer = logit_distill(
            cfg, model, tokenizer, rows, resume_key(cfg, "distill", d, paths.REJECTION_DATA, skey, teacher)
        )
    else:
        trainer = train_sft(
            model,
            tokenizer,
            conversations(rows, cfg.chat.system_prompt),
            d,
            cfg,
            "distill",
            resume_key=resume_key(cfg, "distill", d, paths.REJECTION_DATA, skey),
            **common,
        )
    # --- save ---
    save_trainer_final(trainer, tokenizer, "distill", info)
    # --- the comparison: a same-size student, same init, trained on answers only (no <think> traces) ---
    if d.baseline_without_traces:
        model, tokenizer = student_init(cfg, skey)
        baseline = train_sft(
            model,
            tokenizer,
            conversations(rows, cfg.chat.system_prompt, with_reasoning=False),
            d,
            cfg,
            "distill_no_traces",
            resume_key=resume_key(cfg, "distill", d, paths.REJECTION_DATA, skey, "answers only"),
            report=False,
            **common,
        )
        save_trainer_final(baseline, tokenizer, "distill_no_traces", {**info, "source": "distill_no_traces"})
    else:
        mark_skipped("distill_no_traces", "distill.baseline_without_traces is false")
    checkpoints.finish("distill_student_init")  # both students are saved: the shared init is not needed
    # --- metrics ---
    return {"distill_student_parameters": n_params, "distill_examples": len(rows)}


# --- the student and the logit-level trainer ---


def student_key(cfg: Config) -> str:
    d, b = cfg.distill, cfg.base
    return resume_key(
        cfg,
        "distill",
        {"distill": d.model_dump(mode="json"), "base": b.model_dump(mode="json")},
        paths.CORPUS,
        paths.model_dir("base") / "tokenizer.json",
    )


def student_init(cfg: Config, key: str):
    """A fresh student with the base tokenizer, pretrained on the base corpus when student_init is `pretrain`.

    The pretrained init is kept in checkpoints/distill_student_init (under its resume key) for the second
    student and for a rerun after a kill; the stage removes it when it finishes.
    """
    d, b = cfg.distill, cfg.base
    init_dir = paths.checkpoint_dir("distill_student_init")
    key_file = init_dir / checkpoints.KEY_FILE
    if key_file.is_file() and key_file.read_text() == key:
        return load_model_and_tokenizer(init_dir, resolve_device(cfg.project.device), cfg.project.precision)
    if d.student_init == "pretrained":
        return load_model_and_tokenizer(
            d.student_model_name_or_path, resolve_device(cfg.project.device), cfg.project.precision
        )
    tokenizer = load_tokenizer(require(paths.model_dir("base"), "base"))
    model = build_model(
        tokenizer,
        architecture=b.architecture,
        hidden_size=d.student_hidden_size,
        num_hidden_layers=d.student_num_hidden_layers,
        num_attention_heads=d.student_num_attention_heads,
        num_key_value_heads=d.student_num_key_value_heads,
        intermediate_size=d.student_intermediate_size,
        max_position_embeddings=b.max_position_embeddings,
        tie_word_embeddings=b.tie_word_embeddings,
        seed=cfg.project.seed + 1,
    )
    if d.student_init == "pretrain":
        texts = render_documents(read_jsonl(require(paths.CORPUS, "data")), tokenizer, cfg.chat.system_prompt)
        trainer = pretrain(
            model,
            tokenizer,
            texts,
            stage="distill_student",
            cfg=cfg,
            steps=d.student_pretrain_steps,
            batch_size=b.pretrain_batch_size,
            learning_rate=b.pretrain_learning_rate,
            warmup_steps=b.pretrain_warmup_steps,
            save_steps=b.pretrain_save_steps,
            max_length=b.max_position_embeddings,
            resume_key=key,
            report=False,
        )
        model = trainer.model
    with atomic_path(init_dir, is_dir=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "r1_pipeline_tokenizer.json").write_text("{}")
        (tmp / checkpoints.KEY_FILE).write_text(key)
    checkpoints.finish("distill_student")  # the init is saved; its pretraining checkpoints are not needed
    # a fresh copy: the pretrained object carries its trainer's DeepSpeed hooks, which break a second engine
    return load_model_and_tokenizer(init_dir, resolve_device(cfg.project.device), cfg.project.precision)


def logit_distill(cfg: Config, model, tokenizer, rows: list[dict], key: str):
    """On-policy token-level distillation from the RL teacher with TRL's DistillationTrainer."""
    from datasets import Dataset
    from trl import DistillationConfig, DistillationTrainer

    from r1_pipeline.chat import prompt_messages

    teacher, _ = load_model_and_tokenizer(
        require(paths.model_dir(cfg.rejection.source_model), cfg.rejection.source_model),
        resolve_device(cfg.project.device),
        cfg.project.precision,
    )
    # on-policy: the student generates up to rejection.max_new_tokens; distill.max_length is the SFT path's
    args = trl_args(
        DistillationConfig,
        cfg.distill,
        cfg,
        "distill",
        unused=("max_length",),
        max_completion_length=cfg.rejection.max_new_tokens,
    )
    data = Dataset.from_list([{"prompt": prompt_messages(r["problem"], cfg.chat.system_prompt)} for r in rows])
    trainer = DistillationTrainer(
        model=model, teacher_model=teacher, args=args, train_dataset=data, processing_class=tokenizer
    )
    checkpoints.train(trainer, "distill", key)
    write_log_history(trainer, "distill")
    return trainer


if __name__ == "__main__":
    main_for("distill", run)
