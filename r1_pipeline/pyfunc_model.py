"""The MLflow pyfunc model of a stage's final model: a chat-formatted prompt in, a completion out.

Logged by `r1_pipeline.registry.log_stage_model` as an MLflow "model from code": MLflow copies this file into
the model and runs it on load, so the model loads anywhere that has mlflow, torch and transformers, without
this project installed. The Hugging Face folder (`save_pretrained` output: weights, config, tokenizer) is the
model's artifact `hf_model`; nothing is converted.

    model = mlflow.pyfunc.load_model("models:/r1-pipeline-tiny-grpo@champion")
    model.predict(pd.DataFrame({"prompt": ["3 + 4 - 2"]}), params={"max_new_tokens": 64})

Input: a column `prompt` (the problem, as the user would type it); the system prompt the model was trained
with (model_config `system_prompt`) and the tokenizer's chat template are applied here, as in evaluation.
Output: one completion string per prompt (`<think>…</think><answer>…</answer>` for a trained model).
Params: `max_new_tokens`, `temperature` (0: greedy), `top_p`.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow.pyfunc import PythonModel

TOKENIZER_MARKER = "r1_pipeline_tokenizer.json"  # r1_pipeline.modeling: load as PreTrainedTokenizerFast


class ReasoningChatModel(PythonModel):
    def load_context(self, context) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

        folder = Path(context.artifacts["hf_model"])
        config = dict(context.model_config or {})
        if (folder / TOKENIZER_MARKER).exists():
            # AutoTokenizer would reload the tiny profile's tokenizer as a Qwen2 one with other pre-tokenization
            self.tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
        else:
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = AutoModelForCausalLM.from_pretrained(folder).to(self.device).eval()
        self.system_prompt = config.get("system_prompt")

    def _text(self, prompt: str) -> str:
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages.append({"role": "user", "content": str(prompt)})
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def predict(self, context, model_input, params: dict | None = None) -> list[str]:
        import torch

        params = params or {}
        if hasattr(model_input, "columns"):
            if "prompt" not in model_input.columns:
                raise ValueError(f"input needs a `prompt` column, got {list(model_input.columns)}")
            prompts = [str(p) for p in model_input["prompt"]]
        elif isinstance(model_input, str):
            prompts = [model_input]
        else:
            prompts = [str(p) for p in model_input]
        temperature = float(params.get("temperature", 0.0))
        sampling = (
            {"do_sample": True, "temperature": temperature, "top_p": float(params.get("top_p", 1.0))}
            if temperature > 0
            else {"do_sample": False}
        )
        batch = self.tokenizer(
            [self._text(p) for p in prompts], return_tensors="pt", padding=True, add_special_tokens=False
        ).to(self.device)
        with torch.no_grad():
            out = self.model.generate(
                **batch,
                max_new_tokens=int(params.get("max_new_tokens", 128)),
                pad_token_id=self.tokenizer.pad_token_id,
                **sampling,
            )
        new = out[:, batch["input_ids"].shape[1] :]
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]


mlflow.models.set_model(ReasoningChatModel())
