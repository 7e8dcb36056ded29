"""r1_pipeline.grpo: the GRPO trainer whose rollouts come from the compiled decoder (r1_pipeline.generation)."""

from __future__ import annotations

from r1_pipeline import generation
from r1_pipeline.grpo import compiled_rollout_trainer_class
from r1_pipeline.modeling import load_model_and_tokenizer


def test_grpo_trainer_rolls_out_with_the_compiled_decoder(saved_model, tmp_path):
    """A real TRL GRPOTrainer (two optimizer steps on CPU) whose rollouts come from CompiledDecoder, EOS suppressed
    by min_new_tokens as the bench does: every completion has the full length and training ran."""
    from datasets import Dataset
    from trl import GRPOConfig

    model, tok = load_model_and_tokenizer(saved_model, "cpu", "fp32")
    seen = []

    def length_reward(completions, **_):
        seen.extend(completions)
        return [float(len(c)) for c in completions]

    args = GRPOConfig(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=12,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        logging_steps=1,
        disable_tqdm=True,
        generation_kwargs={"min_new_tokens": 12},
    )
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": f"{a} + {a % 7}"}]} for a in range(16)])
    cls = compiled_rollout_trainer_class()
    trainer = cls(model=model, reward_funcs=[length_reward], args=args, train_dataset=data, processing_class=tok)
    trainer.train()
    decoder = generation._decoders.get(id(trainer.accelerator.unwrap_model(trainer.model)))
    assert decoder is not None and decoder.calls == 2
    assert cls.rollout_seconds > 0
    assert len(seen) == 16
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    assert lengths and all(n == 12 for n in lengths)
