"""Causal-LM pretraining from scratch on rendered conversations (the tiny base model and distill students)."""

from __future__ import annotations

from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

from r1_pipeline import checkpoints, paths
from r1_pipeline.chat import prompt_messages
from r1_pipeline.config import Config
from r1_pipeline.cost import CostCallback
from r1_pipeline.modeling import resolve_device
from r1_pipeline.tracking import is_main_process


def render_documents(rows: list[dict], tokenizer, system_prompt: str | None) -> list[str]:
    """Corpus rows {prompt, completion} rendered with the chat template, as the model will see them later."""
    docs = []
    for row in rows:
        messages = prompt_messages(row["prompt"], system_prompt)
        messages.append({"role": "assistant", "content": row["completion"]})
        docs.append(tokenizer.apply_chat_template(messages, tokenize=False))
    return docs


def pretrain(
    model,
    tokenizer,
    texts: list[str],
    *,
    stage: str,
    cfg: Config,
    steps: int,
    batch_size: int,
    learning_rate: float,
    warmup_steps: int,
    save_steps: int,
    max_length: int,
    resume_key: str,
    report: bool = True,
):
    """Train `model` on `texts` with transformers' Trainer (resumable from checkpoints/<stage>)."""
    from datasets import Dataset

    tokenizer.padding_side = "right"  # training pads on the right; positions start at 0 for every row
    encoded = tokenizer(texts, truncation=True, max_length=max_length)
    ids = encoded["input_ids"]
    dataset = Dataset.from_dict({"input_ids": ids})
    args = TrainingArguments(
        output_dir=str(paths.checkpoint_dir(stage)),
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=warmup_steps,
        weight_decay=0.01,
        logging_steps=max(1, steps // 50),
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=2,
        seed=cfg.project.seed,
        use_cpu=resolve_device(cfg.project.device) == "cpu",
        bf16=cfg.project.precision == "bf16",
        report_to=["mlflow"] if report and is_main_process() else [],
        run_name=stage,
        disable_tqdm=True,
        dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",  # the cost row's token count (r1_pipeline/cost.py)
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        processing_class=tokenizer,
    )
    if report:  # cost/* metrics and a cost row in the train log, as the post-training stages log them
        trainer.add_callback(CostCallback(stage))
    checkpoints.train(trainer, stage, resume_key)
    tokenizer.padding_side = "left"  # generation pads on the left
    return trainer
