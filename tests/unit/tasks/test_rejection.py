"""Rejection sampling's readability filters (tasks.rejection)."""

from __future__ import annotations

import pytest

from r1_pipeline.chat import format_completion
from r1_pipeline.config import RejectionParams
from tasks.rejection import non_ascii_letter_fraction, rejection_reason, repeated_ngram_fraction, think_text


def test_readability_filters():
    rc = RejectionParams()
    good = format_completion("7+3=10", "10")
    assert rejection_reason(good, rc) is None
    assert rejection_reason("<answer>10</answer>", rc) == "format"
    assert rejection_reason(format_completion("x " * 3000, "1"), rc) == "length"
    assert rejection_reason(format_completion("a b c d " * 40, "1"), rc) == "repetition"
    assert rejection_reason(format_completion("这是 一个 混合 语言 的 推理", "1"), rc) == "mixed_language"
    assert think_text(good) == "7+3=10"
    assert repeated_ngram_fraction("a b c d a b c d") == pytest.approx(0.2)
    assert non_ascii_letter_fraction("abc") == 0.0
