"""Readability filters of rejection sampling (R1: drop mixed-language, overlong, repetitive, unformatted CoT).

The format check and the <think> span are the format reward's own (r1_pipeline.rewards), so "readable"
means the same thing in RL, rejection sampling and evaluation.
"""

from __future__ import annotations

from collections import Counter

from r1_pipeline.config import RejectionConfig
from r1_pipeline.rewards import has_format, think_span


def think_text(completion: str) -> str | None:
    span = think_span(completion)
    return span.strip() if span is not None else None


def repeated_ngram_fraction(text: str, n: int = 4) -> float:
    words = text.split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    counts = Counter(grams)
    return sum(c - 1 for c in counts.values()) / len(grams)


def non_ascii_letter_fraction(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    return sum(not c.isascii() for c in letters) / len(letters) if letters else 0.0


def rejection_reason(completion: str, rc: RejectionConfig) -> str | None:
    """Why a (correct) completion is unreadable, or None when it passes every filter."""
    if not has_format(completion):
        return "format"
    if len(completion) > rc.max_completion_chars or len(think_text(completion) or "") < rc.min_think_chars:
        return "length"
    if repeated_ngram_fraction(completion) > rc.max_repeated_ngram_fraction:
        return "repetition"
    if non_ascii_letter_fraction(completion) > rc.max_non_ascii_fraction:
        return "mixed_language"
    return None
