"""The conversation format shared by SFT, GRPO, rejection sampling, distillation and evaluation."""

from __future__ import annotations


def prompt_messages(problem: str, system_prompt: str | None) -> list[dict]:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": problem})
    return messages


def format_completion(reasoning: str | None, answer: str) -> str:
    """The R1 answer format: reasoning inside <think>, the final answer inside <answer>."""
    if reasoning is None:
        return f"<answer>{answer}</answer>"
    return f"<think>\n{reasoning.strip()}\n</think>\n<answer>{answer}</answer>"


def completion_text(completion) -> str:
    """A completion (or prompt) as text, whether TRL passes a string or a conversational list of messages: a
    string as is, a message list as its messages' contents joined by newlines (a multi-message completion, a
    system + user prompt); anything else ''."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, (list, tuple)):
        parts = [m.get("content") for m in completion if isinstance(m, dict)]
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""
