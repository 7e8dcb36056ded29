"""Rule-based rewards for GRPO, looked up by name (`grpo.reward_funcs` in params.yaml).

Every reward has TRL's signature `fn(completions, **columns) -> list[float | None]`: `completions` is a list
of strings or of conversational message lists (`[{"role": "assistant", "content": ...}]`), dataset columns
arrive as keyword arguments (the gold answer is `answer`, with `solution` as a fallback), and TRL also passes
`prompts` and `completion_ids`. `None` means "does not apply to this sample" (TRL ignores it).

Every reward is pure, returns one value per completion, never raises on any model output, and stays fast on
pathological ones (megabyte outputs, deep LaTeX, huge numbers): accuracy goes through `verify`, which bounds
its own time; everything else is linear string work.

Parametrized rewards (cosine, repetition, overlong) are callable classes made by a factory, so they pickle
(TRL can ship reward functions to a spawned rollout worker); the registry holds them with default values.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

from r1_pipeline.verify import gold_from_boxed, is_correct, normalize_gold

RewardFn = Callable[..., list]
REWARD_REGISTRY: dict[str, RewardFn] = {}


def register(name: str) -> Callable[[RewardFn], RewardFn]:
    """Add a reward to REWARD_REGISTRY under `name` (the name params.yaml uses)."""

    def decorator(fn: RewardFn) -> RewardFn:
        if name in REWARD_REGISTRY:
            raise ValueError(f"reward {name!r} is already registered")
        REWARD_REGISTRY[name] = fn
        return fn

    return decorator


# ----------------------------------------------------------------------------------------------- helpers


def completion_text(completion: Any) -> str:
    """A completion as text: a string as is, a message list as its message contents joined; else ''."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, (list, tuple)):
        parts = [m.get("content") for m in completion if isinstance(m, dict)]
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""


def _texts(completions: Any) -> list[str]:
    if not isinstance(completions, (list, tuple)):
        return []
    return [completion_text(c) for c in completions]


def _column(kwargs: dict, name: str, n: int) -> list:
    """A dataset column aligned with the completions; a scalar is broadcast, a short or missing one padded
    with None."""
    values = kwargs.get(name)
    if values is None:
        return [None] * n
    if isinstance(values, (str, int, float)):
        return [values] * n
    try:
        values = list(values)
    except TypeError:
        return [None] * n
    return (values + [None] * n)[:n]


def _golds(kwargs: dict, n: int) -> list[Any]:
    """The gold answer per completion: the `answer` column, else the \\boxed answer of `solution`."""
    answers = _column(kwargs, "answer", n)
    solutions = _column(kwargs, "solution", n)
    golds = []
    for answer, solution in zip(answers, solutions):
        if answer is None and isinstance(solution, str):
            answer = gold_from_boxed(solution) or solution.strip() or None
        golds.append(normalize_gold(answer))  # None for anything that is not a usable gold
    return golds


def think_span(text: str) -> str | None:
    """The reasoning inside the first <think>…</think> (to the end when never closed), else None."""
    start = text.find("<think>")
    if start < 0:
        return None
    start += len("<think>")
    end = text.find("</think>", start)
    return text[start:] if end < 0 else text[start:end]


def _lengths(texts: list[str], kwargs: dict, unit: str, tokenizer: Any) -> list[int | None]:
    """Completion lengths in characters or tokens (tokenizer if given, else TRL's `completion_ids`)."""
    if unit == "chars":
        return [len(t) for t in texts]
    if tokenizer is not None:
        lengths: list[int | None] = []
        for t in texts:
            try:
                lengths.append(len(tokenizer.encode(t, add_special_tokens=False)))
            except Exception:
                lengths.append(None)
        return lengths
    ids = _column(kwargs, "completion_ids", len(texts))
    return [len(x) if isinstance(x, (list, tuple)) else None for x in ids]


# ------------------------------------------------------------------------------------------------ rewards


@register("accuracy")
def accuracy_reward(completions, **kwargs) -> list[float | None]:
    """1.0 when the extracted answer verifies against the gold, else 0.0; None when the sample has no gold."""
    texts = _texts(completions)
    return [
        None if gold is None else float(is_correct(text, gold)) for text, gold in zip(texts, _golds(kwargs, len(texts)))
    ]


_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def has_format(text: str) -> bool:
    # String methods, not one big regex: a lazy `.*?` pattern backtracks quadratically on adversarial text.
    body = text.strip()
    if not (body.startswith("<think>") and body.endswith("</answer>")):
        return False
    if any(body.count(tag) != 1 for tag in _TAGS):
        return False
    think_end, answer_start = body.index("</think>"), body.index("<answer>")
    if answer_start < think_end or body[think_end + len("</think>") : answer_start].strip():
        return False
    return bool(body[answer_start + len("<answer>") : -len("</answer>")].strip())


@register("format")
def format_reward(completions, **kwargs) -> list[float]:
    """1.0 for `<think>…</think>` then `<answer>…</answer>` and nothing else (each tag once, answer not empty).

    Surrounding whitespace and newlines around the tags are optional: the tiny model's completions start
    directly with `<think>` and write `<answer>7</answer>` on one line.
    """
    return [float(has_format(t)) for t in _texts(completions)]


@register("tag_count")
def tag_count_reward(completions, **kwargs) -> list[float]:
    """0.25 for each of <think>, </think>, <answer>, </answer> that occurs exactly once (open-r1's shaping
    reward, without its newline requirements, which our one-line answers do not follow)."""
    return [0.25 * sum(t.count(tag) == 1 for tag in _TAGS) for t in _texts(completions)]


# open-r1's step markers; (?m) so "1." counts at the start of every line, not only the first.
_STEP_MARKERS = re.compile(r"(?m)Step \d+:|^[ \t]*\d+\.\s|^[ \t]*[-*]\s|\b(?:First|Second|Third|Next|Then|Finally),")


@register("reasoning_steps")
def reasoning_steps_reward(completions, **kwargs) -> list[float]:
    """min(1, steps / 3). Steps are open-r1's markers ("Step 1:", "1.", bullets, "First,", …) or, inside a
    <think> block, its non-empty lines when there are more of them (the tiny model writes one equation a line)."""
    rewards = []
    for text in _texts(completions):
        think = think_span(text)
        steps = len(_STEP_MARKERS.findall(text if think is None else think))
        if think is not None:
            steps = max(steps, sum(1 for line in think.splitlines() if line.strip()))
        rewards.append(min(1.0, steps / 3))
    return rewards


class CosineReward:
    """Correctness scaled by length on a cosine schedule (Demystifying Long CoT, appendix C.1; open-r1):
    a correct answer earns max_value_correct when short, falling to min_value_correct at max_len; a wrong one
    is punished most (min_value_wrong) when short, least (max_value_wrong) at max_len. Lengths past max_len
    are clamped (cos is periodic). None when the sample has no gold or its length is unknown."""

    __name__ = "cosine_reward"

    def __init__(self, min_value_wrong, max_value_wrong, min_value_correct, max_value_correct, max_len, tokenizer):
        if max_len <= 0:
            raise ValueError(f"max_len must be > 0, got {max_len}")
        self.min_value_wrong, self.max_value_wrong = float(min_value_wrong), float(max_value_wrong)
        self.min_value_correct, self.max_value_correct = float(min_value_correct), float(max_value_correct)
        self.max_len, self.tokenizer = max_len, tokenizer

    def __call__(self, completions, **kwargs) -> list[float | None]:
        texts = _texts(completions)
        correct = accuracy_reward(texts, **kwargs)
        lengths = _lengths(texts, kwargs, "chars" if self.tokenizer is None else "tokens", self.tokenizer)
        rewards: list[float | None] = []
        for ok, length in zip(correct, lengths):
            if ok is None or length is None:
                rewards.append(None)
                continue
            cosine = math.cos(min(length / self.max_len, 1.0) * math.pi)
            if ok:
                lo, hi = self.min_value_correct, self.max_value_correct
            else:  # swapped, so that a short wrong answer is punished hardest
                lo, hi = self.max_value_wrong, self.min_value_wrong
            rewards.append(lo + 0.5 * (hi - lo) * (1.0 + cosine))
        return rewards


def get_cosine_reward(
    min_value_wrong: float = -1.0,
    max_value_wrong: float = -0.5,
    min_value_correct: float = 0.5,
    max_value_correct: float = 1.0,
    max_len: int = 1000,
    tokenizer: Any = None,
) -> CosineReward:
    """Cosine length-scaled accuracy; lengths in characters, or in tokens when a tokenizer is given."""
    return CosineReward(min_value_wrong, max_value_wrong, min_value_correct, max_value_correct, max_len, tokenizer)


class RepetitionPenalty:
    """max_penalty * (1 - unique n-grams / all n-grams) over lower-cased words (Demystifying Long CoT,
    appendix C.2; open-r1). 0.0 for text without repetition or with fewer than ngram_size words."""

    __name__ = "repetition_penalty_reward"

    def __init__(self, ngram_size: int, max_penalty: float):
        if ngram_size < 1:
            raise ValueError(f"ngram_size must be >= 1, got {ngram_size}")
        if max_penalty > 0:
            raise ValueError(f"max_penalty must be <= 0, got {max_penalty}")
        self.ngram_size, self.max_penalty = ngram_size, float(max_penalty)

    def __call__(self, completions, **kwargs) -> list[float]:
        rewards = []
        for text in _texts(completions):
            words = text.lower().split()
            total = len(words) - self.ngram_size + 1
            if total <= 0:
                rewards.append(0.0)
                continue
            unique = len(set(zip(*(words[i:] for i in range(self.ngram_size)))))
            rewards.append((1 - unique / total) * self.max_penalty + 0.0)  # + 0.0 turns -0.0 into 0.0
        return rewards


def get_repetition_penalty_reward(ngram_size: int = 3, max_penalty: float = -1.0) -> RepetitionPenalty:
    return RepetitionPenalty(ngram_size, max_penalty)


class SoftOverlongPunishment:
    """DAPO's soft overlong punishment (eq. 13): 0 up to max_len - cache, then linearly down to -1 at
    max_len, -1 beyond. Lengths in tokens (a tokenizer if given, else the `completion_ids` TRL passes; None
    when neither is there) or in characters."""

    __name__ = "soft_overlong_reward"

    def __init__(self, max_completion_len: int, soft_punish_cache: int, unit: str, tokenizer: Any):
        if not 0 <= soft_punish_cache <= max_completion_len:
            raise ValueError("need 0 <= soft_punish_cache <= max_completion_len")
        if unit not in ("tokens", "chars"):
            raise ValueError(f"unit must be 'tokens' or 'chars', got {unit!r}")
        self.max_len, self.cache, self.unit, self.tokenizer = max_completion_len, soft_punish_cache, unit, tokenizer

    def __call__(self, completions, **kwargs) -> list[float | None]:
        texts = _texts(completions)
        rewards: list[float | None] = []
        for length in _lengths(texts, kwargs, self.unit, self.tokenizer):
            if length is None:
                rewards.append(None)
            elif length <= self.max_len - self.cache:
                rewards.append(0.0)
            elif length <= self.max_len:
                rewards.append((self.max_len - self.cache - length) / self.cache)
            else:
                rewards.append(-1.0)
        return rewards


def get_soft_overlong_reward(
    max_completion_len: int = 1024, soft_punish_cache: int = 256, unit: str = "tokens", tokenizer: Any = None
) -> SoftOverlongPunishment:
    return SoftOverlongPunishment(max_completion_len, soft_punish_cache, unit, tokenizer)


# A word counts as English when every character is ASCII (letters, digits, punctuation, + - = ^ …) or a
# math/typography symbol an English CoT uses (× ÷ ± °, Greek letters, ≤ √ ∑, arrows, sub/superscripts, dashes).
_ENGLISH_WORD = re.compile(
    "[\x21-\x7e\u00b0-\u00b7\u00b9-\u00be\u00d7\u00f7\u0391-\u03c9\u2010-\u206f\u2070-\u209f"
    "\u2100-\u214f\u2190-\u21ff\u2200-\u22ff\u2300-\u23ff\u25a0-\u25ff\u27c0-\u27ef\u2980-\u2aff]+"
)


def is_english_word(word: str) -> bool:
    return _ENGLISH_WORD.fullmatch(word) is not None


class LanguageConsistency:
    """Share of target-language words in the chain of thought (the R1 paper's language-consistency reward):
    words of the <think> span (the whole completion when there is none); 0.0 when there are no words, so
    an empty reasoning earns nothing."""

    __name__ = "language_consistency_reward"

    def __init__(self, is_target_word: Callable[[str], bool] = is_english_word):
        self.is_target_word = is_target_word

    def __call__(self, completions, **kwargs) -> list[float]:
        rewards = []
        for text in _texts(completions):
            think = think_span(text)
            words = (text if think is None else think).split()
            rewards.append(sum(map(self.is_target_word, words)) / len(words) if words else 0.0)
        return rewards


def get_language_consistency_reward(is_target_word: Callable[[str], bool] = is_english_word) -> LanguageConsistency:
    return LanguageConsistency(is_target_word)


# The parametrized rewards with their defaults; build your own with the factories for other values.
register("cosine")(get_cosine_reward())
register("repetition_penalty")(get_repetition_penalty_reward())
register("soft_overlong")(get_soft_overlong_reward())
register("language_consistency")(get_language_consistency_reward())
