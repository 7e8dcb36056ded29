"""Reasoning RL with TRL's GRPOTrainer: the `grpo` stage (from SFT) and `r1_zero` (from the base model)."""

from __future__ import annotations

import functools
import time

import torch
from transformers import TrainerCallback

from r1_pipeline import checkpoints, paths, tracking
from r1_pipeline.chat import completion_text, prompt_messages
from r1_pipeline.config import Config, GRPOParams
from r1_pipeline.cost import CostCallback, instrument_grpo
from r1_pipeline.errors import require, require_package
from r1_pipeline.io import read_jsonl
from r1_pipeline.metrics import first_last_fifth
from r1_pipeline.modeling import load_model_and_tokenizer, resolve_device
from r1_pipeline.rewards import reward_funcs
from r1_pipeline.training import save_trainer_final, trl_args, write_log_history


class CompletionRecorder:
    """Wraps the reward functions to keep the last batch of (prompt, completion, rewards) for MLflow tables.

    GRPO's own `log_completions` does not reach MLflow, so we log tables ourselves.
    """

    def __init__(self, names: list[str]):
        self.names = names
        self.last: dict = {}

    def wrap(self, name: str, fn):
        @functools.wraps(fn)
        def reward(completions, **kwargs):
            scores = fn(completions, **kwargs)
            if name == self.names[0]:
                self.last = {
                    "prompts": kwargs.get("prompts"),
                    "answers": kwargs.get("answer"),
                    "completions": completions,
                }
            self.last[name] = scores
            return scores

        reward.__name__ = name  # TRL names the logged reward columns after __name__
        return reward

    def rows(self, limit: int) -> list[dict]:
        comps = self.last.get("completions") or []
        rows = []
        for i, comp in enumerate(comps[:limit]):
            prompts, answers = self.last.get("prompts") or [], self.last.get("answers") or []
            row = {
                "prompt": completion_text(prompts[i]) if i < len(prompts) else "",
                "completion": completion_text(comp),
                "answer": answers[i] if i < len(answers) else None,
            }
            for name in self.names:
                scores = self.last.get(name) or []
                row[f"reward_{name}"] = scores[i] if i < len(scores) else None
            rows.append(row)
        return rows


# MLflow's run page groups a run's charts into sections by key prefix, in ASCII order, so TRL's clip_ratio/*
# (zero on most runs) would come first; the headline curves are logged again under RL/ (upper case sorts first).
HEADLINE_METRICS = {
    "reward": "RL/reward",
    "rewards/accuracy/mean": "RL/accuracy",
    "completions/mean_length": "RL/completion_length",
}


class HeadlineMetricsCallback(TrainerCallback):
    """Logs the reward, accuracy-reward and completion-length curves as RL/*, the first charts of the run."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        headline = {new: logs[old] for old, new in HEADLINE_METRICS.items() if old in (logs or {})}
        tracking.log_metrics(headline, step=state.global_step)


class CompletionTableCallback(TrainerCallback):
    def __init__(self, recorder: CompletionRecorder, stage: str, every: int, limit: int):
        self.recorder, self.stage, self.every, self.limit = recorder, stage, every, limit

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            tracking.log_table(
                self.recorder.rows(self.limit), f"completions/{self.stage}_step_{state.global_step:05d}.json"
            )


def compiled_rollout_trainer_class():
    """TRL's GRPOTrainer with its transformers rollouts (`_generate_single_turn`, use_vllm off) decoded by
    r1_pipeline.generation.CompiledDecoder: the same sampling settings (temperature, top_p, top_k,
    min_new_tokens, EOS ids), a static cache and a compiled decode step instead of TRL's GenerationConfig
    with `disable_compile=True`. Settings the decoder does not implement (min_p, repetition_penalty, images,
    tools' multimodal fields) take TRL's own path, with a warning once."""
    from trl import GRPOTrainer
    from trl.models import unwrap_model_for_generation

    from r1_pipeline.generation import compiled_decoder

    class CompiledRolloutGRPOTrainer(GRPOTrainer):
        rollout_seconds = 0.0  # wall time of the compiled rollouts (the bench reads it)

        def _compiled_unsupported(self, images, multimodal_fields) -> str | None:
            if self.use_vllm:
                return "use_vllm is on"
            if images is not None or multimodal_fields:
                return "multimodal prompts"
            if self.min_p or (self.repetition_penalty not in (None, 1.0)):
                return "min_p / repetition_penalty are not implemented by CompiledDecoder"
            extra = set(self.args.generation_kwargs or {}) - {"min_new_tokens"}
            if extra:
                return f"generation_kwargs {sorted(extra)} are not implemented by CompiledDecoder"
            return None

        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
            why = self._compiled_unsupported(images, multimodal_fields)
            if why:
                if not getattr(self, "_warned_fallback", False):
                    import warnings

                    warnings.warn(
                        f"generation_backend hf_compiled: {why}; TRL's transformers generate is used", stacklevel=2
                    )
                    self._warned_fallback = True
                return super()._generate_single_turn(
                    prompt_ids, images, multimodal_fields, num_generations, has_tool_images
                )
            device = self.accelerator.device
            width = max(len(p) for p in prompt_ids)
            pad = self._tokenizer.pad_token_id
            ids = torch.full((len(prompt_ids), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, p in enumerate(prompt_ids):
                ids[i, width - len(p) :] = torch.tensor(p)
                mask[i, width - len(p) :] = 1
            if compiled_decoder(self.accelerator.unwrap_model(self.model), "grpo") is None:  # warned once
                return super()._generate_single_turn(
                    prompt_ids, images, multimodal_fields, num_generations, has_tool_images
                )
            start = time.perf_counter()
            with (
                unwrap_model_for_generation(
                    self.model_wrapped,
                    self.accelerator,
                    gather_deepspeed3_params=self.args.ds3_gather_for_generation,
                    generation_kwargs=self.generation_kwargs,
                    gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs,
                ) as unwrapped,
                torch.no_grad(),
            ):
                new = (
                    compiled_decoder(unwrapped, "grpo")
                    .generate(
                        ids.to(device),
                        mask.to(device),
                        self.max_completion_length,
                        do_sample=True,
                        temperature=self.temperature,
                        top_p=self.top_p,
                        top_k=self.top_k or None,
                        min_new_tokens=int((self.args.generation_kwargs or {}).get("min_new_tokens", 0)),
                        eos_token_ids=self.eos_token_ids,
                        pad_id=pad,
                    )
                    .cpu()
                )
            eos = set(self.eos_token_ids)
            completion_ids = []
            for row in new.tolist():  # keep up to and including the first EOS, as TRL's mask does
                end = next((j for j, t in enumerate(row) if t in eos), None)
                completion_ids.append(row[: end + 1] if end is not None else row)
            type(self).rollout_seconds += time.perf_counter() - start
            return completion_ids, None

    return CompiledRolloutGRPOTrainer


def rl_dataset(cfg: Config, section: GRPOParams):
    from datasets import Dataset

    rows = read_jsonl(require(paths.RL_TRAIN, "data"))
    if section.max_prompts:
        rows = rows[: section.max_prompts]
    return Dataset.from_list(
        [{"prompt": prompt_messages(r["problem"], cfg.chat.system_prompt), "answer": r["answer"]} for r in rows]
    )


def train_grpo(cfg: Config, section: GRPOParams, stage: str, init_model) -> dict:
    """The GRPO recipe of both RL stages: `grpo` (from the SFT model) and `r1_zero` (from the base model)."""
    from trl import GRPOConfig, GRPOTrainer

    if section.use_vllm:
        require_package("vllm", f"{stage}.use_vllm", "pip install 'r1-pipeline[vllm]'")
    # --- data: RL prompts with verifiable answers ---
    dataset = rl_dataset(cfg, section)
    tracking.log_dataset(paths.RL_TRAIN, "rl_train", "training")
    # --- config ---
    # every section field GRPOConfig has, by name (training.trl_args), before the model loads so that a bad
    # setting fails at once; TRL's completion logging does not reach MLflow: CompletionTableCallback logs them
    args = trl_args(GRPOConfig, section, cfg, stage, log_completions=False)
    # --- model ---
    model, tokenizer = load_model_and_tokenizer(init_model, resolve_device(cfg.project.device), cfg.project.precision)
    # --- rewards ---
    # built with this section's values (soft_overlong_*, cosine_*, ...); each gets TRL's kwargs, log_metric
    # included (the accuracy reward logs rewards/accuracy/failures through it)
    recorder = CompletionRecorder(section.reward_funcs)
    rewards = [recorder.wrap(n, fn) for n, fn in zip(section.reward_funcs, reward_funcs(section.reward_funcs, section))]
    # --- trainer ---
    trainer_class = (
        compiled_rollout_trainer_class()
        if section.generation_backend == "hf_compiled" and not section.use_vllm
        else GRPOTrainer
    )
    trainer = trainer_class(
        model=model,
        reward_funcs=rewards,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[
            CompletionTableCallback(recorder, stage, section.log_completions_steps, section.num_completions_to_log),
            HeadlineMetricsCallback(),
        ],
    )
    cost = CostCallback(stage)  # cost/* metrics and a cost row in the train log (r1_pipeline/cost.py)
    trainer.add_callback(cost)
    instrument_grpo(trainer, cost)
    # --- train (resumes from the stage's checkpoint when it belongs to the same run: checkpoints.py) ---
    checkpoints.train(trainer, stage, checkpoints.resume_key(cfg, stage, section, paths.RL_TRAIN, init_model))
    # --- save and metrics ---
    write_log_history(trainer, stage)
    save_trainer_final(trainer, tokenizer, stage, {"source": stage, "init": str(init_model)})
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    first, last = first_last_fifth(rewards) if rewards else (0.0, 0.0)
    return {f"{stage}_reward_first": first, f"{stage}_reward_last": last}
