"""Smoke test for a launch config on a new machine: a tiny random Qwen2 trained a few steps by the HF Trainer.

    accelerate launch --config_file infra/accelerate/multi_gpu_zero3.yaml [--num_processes N] \
        infra/accelerate/smoke_train.py --output-dir /tmp/smoke

It exercises what the pipeline's stages rely on (accelerate's launcher, DeepSpeed with the "auto" values of
infra/deepspeed/*.json, bf16 on GPUs, saving a model, which gathers ZeRO-3 shards) in seconds, without data or
downloads. Rank 0 prints one `SMOKE ...` line; the exit code is non-zero on any failure.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM, Trainer, TrainingArguments


class RandomTokens(torch.utils.data.Dataset):
    def __init__(self, n: int, length: int, vocab: int):
        gen = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, vocab, (n, length), generator=gen)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output-dir", default="smoke-output")
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()

    torch.manual_seed(0)
    cuda = torch.cuda.is_available()
    config = Qwen2Config(
        vocab_size=128,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        max_position_embeddings=64,
    )
    model = Qwen2ForCausalLM(config)
    training = TrainingArguments(
        output_dir=args.output_dir,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        max_steps=args.steps,
        learning_rate=1e-3,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        bf16=cuda,
        use_cpu=not cuda,
    )
    trainer = Trainer(model=model, args=training, train_dataset=RandomTokens(64, 32, config.vocab_size))
    result = trainer.train()
    trainer.save_model(args.output_dir)
    acc = trainer.accelerator
    if acc.is_main_process:
        plugin = acc.state.deepspeed_plugin
        saved = sorted(p.name for p in Path(args.output_dir).glob("*.safetensors"))
        assert saved, "no weights saved"
        print(
            f"SMOKE ok processes={acc.num_processes} distributed_type={acc.distributed_type.value} "
            f"zero_stage={plugin.zero_stage if plugin else None} backend={acc.state.backend} "
            f"mixed_precision={acc.mixed_precision} device={acc.device} loss={result.training_loss:.4f} "
            f"saved={','.join(saved)} cuda={torch.version.cuda if cuda else None} "
            f"local_rank={os.environ.get('LOCAL_RANK')}",
            flush=True,
        )
    # Every rank waits for rank 0's save, then the process group goes down before the interpreter does: a rank
    # that exits with gloo's threads still running aborts ("terminate called without an active exception").
    acc.wait_for_everyone()
    acc.end_training()


if __name__ == "__main__":
    main()
