"""The conversation format: what the SFT data is written in is what the format reward rewards."""

from __future__ import annotations

from r1_pipeline.chat import completion_text, format_completion, prompt_messages
from r1_pipeline.rewards import REWARD_REGISTRY


def test_conversation_format_matches_the_format_reward():
    text = format_completion("7+3=10\n10-5=5", "5")
    assert text == "<think>\n7+3=10\n10-5=5\n</think>\n<answer>5</answer>"
    assert REWARD_REGISTRY["format"]([text]) == [1.0]
    assert REWARD_REGISTRY["accuracy"]([text], answer=["5"]) == [1.0]
    assert format_completion(None, "5") == "<answer>5</answer>"
    assert prompt_messages("1+1", "sys") == [{"role": "system", "content": "sys"}, {"role": "user", "content": "1+1"}]
    assert completion_text([{"role": "assistant", "content": "hi"}]) == "hi"


def test_completion_text():
    assert completion_text("abc") == "abc"
    assert completion_text([{"role": "assistant", "content": "abc"}]) == "abc"
    assert completion_text([{"role": "assistant", "content": None}]) == ""
    assert completion_text(None) == ""
