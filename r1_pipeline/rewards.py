"""Rule-based rewards for GRPO, looked up by name (`grpo.reward_funcs` in params.yaml).

Every reward has TRL's signature `fn(completions, **columns) -> list[float | None]`: `completions` is a list
of strings or of conversational message lists (`[{"role": "assistant", "content": ...}]`), dataset columns
arrive as keyword arguments (the gold answer is `answer`, with `solution` as a fallback), and TRL also passes
`prompts` and `completion_ids`. `None` means "does not apply to this sample" (TRL ignores it).

Every reward is pure, returns one value per completion, never raises on any model output, and stays fast on
pathological ones (megabyte outputs, deep LaTeX, huge numbers): accuracy goes through `verify`, which bounds
its own time; everything else is linear string work.

Accuracy uses the `strict` extraction policy (`<answer>` or the final `\\boxed{}` only: RL must not learn to
skip the format). A verification that fails (a timeout or an exception inside math-verify) is neither right
nor wrong: the sample gets None from the correctness rewards, and the failures of each call are logged
through TRL's `log_metric` as `rewards/<name>/failures`, so a broken verifier is visible in the run.

Parametrized rewards (cosine, repetition, overlong, reasoning steps, language consistency) are callable
classes made by a factory, so they pickle (TRL can ship reward functions to a spawned rollout worker); the
registry holds them with default values, and `reward_funcs(names, section)` builds them with the values of
a trainer section of params (`grpo.soft_overlong_cache`, `grpo.cosine_max_len`, …).
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

from r1_pipeline.chat import completion_text
from r1_pipeline.verify import ERROR, check, gold_from_boxed, normalize_gold

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


def _correctness(texts: list[str], kwargs: dict) -> tuple[list[float | None], int]:
    """1.0 / 0.0 per completion (None: no gold, or the verification failed) and the number of failures."""
    rewards: list[float | None] = []
    failures = 0
    for text, gold in zip(texts, _golds(kwargs, len(texts))):
        if gold is None:
            rewards.append(None)
            continue
        c = check(text, gold, "strict")
        if c.verdict == ERROR:
            failures += 1
            rewards.append(None)
        else:
            rewards.append(float(c.correct))
    return rewards, failures


def _log_failures(kwargs: dict, name: str, failures: int) -> None:
    """Report verification failures to the trainer: TRL passes `log_metric` (averaged per logging step)."""
    log_metric = kwargs.get("log_metric")
    if callable(log_metric):
        try:
            log_metric(f"rewards/{name}/failures", float(failures))
        except Exception:  # noqa: BLE001 - logging must never break a reward call
            pass


@register("accuracy")
def accuracy_reward(completions, **kwargs) -> list[float | None]:
    """1.0 when the strictly extracted answer verifies against the gold, else 0.0; None when the sample has no
    gold or its verification failed (counted in `rewards/accuracy/failures`)."""
    rewards, failures = _correctness(_texts(completions), kwargs)
    _log_failures(kwargs, "accuracy", failures)
    return rewards


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


class ReasoningSteps:
    """min(1, steps / target_steps). Steps are open-r1's markers ("Step 1:", "1.", bullets, "First,", …)
    or, with count_lines, the non-empty lines of the <think> block when there are more of them (the tiny
    model writes one equation a line; a long chain of thought has hundreds of lines, so a real run sets
    count_lines false and a target that takes more than three lines to reach)."""

    __name__ = "reasoning_steps_reward"

    def __init__(self, target_steps: int, count_lines: bool):
        if target_steps < 1:
            raise ValueError(f"target_steps must be >= 1, got {target_steps}")
        self.target_steps, self.count_lines = target_steps, bool(count_lines)

    def __call__(self, completions, **kwargs) -> list[float]:
        rewards = []
        for text in _texts(completions):
            think = think_span(text)
            steps = len(_STEP_MARKERS.findall(text if think is None else think))
            if think is not None and self.count_lines:
                steps = max(steps, sum(1 for line in think.splitlines() if line.strip()))
            rewards.append(min(1.0, steps / self.target_steps))
        return rewards


def get_reasoning_steps_reward(target_steps: int = 3, count_lines: bool = True) -> ReasoningSteps:
    return ReasoningSteps(target_steps, count_lines)


class CosineReward:
    """Correctness scaled by length on a cosine schedule (Demystifying Long CoT, appendix C.1; open-r1):
    a correct answer earns max_value_correct when short, falling to min_value_correct at max_len; a wrong one
    is punished most (min_value_wrong) when short, least (max_value_wrong) at max_len. Lengths past max_len
    are clamped (cos is periodic). Lengths in tokens (a tokenizer if given, else the `completion_ids` TRL
    passes) or in characters. None when the sample has no gold, its length is unknown or its verification
    failed (counted in `rewards/cosine/failures`)."""

    __name__ = "cosine_reward"

    def __init__(
        self, min_value_wrong, max_value_wrong, min_value_correct, max_value_correct, max_len, unit, tokenizer
    ):
        if max_len <= 0:
            raise ValueError(f"max_len must be > 0, got {max_len}")
        if unit not in ("tokens", "chars"):
            raise ValueError(f"unit must be 'tokens' or 'chars', got {unit!r}")
        self.min_value_wrong, self.max_value_wrong = float(min_value_wrong), float(max_value_wrong)
        self.min_value_correct, self.max_value_correct = float(min_value_correct), float(max_value_correct)
        self.max_len, self.unit, self.tokenizer = max_len, unit, tokenizer

    def __call__(self, completions, **kwargs) -> list[float | None]:
        texts = _texts(completions)
        correct, failures = _correctness(texts, kwargs)
        _log_failures(kwargs, "cosine", failures)
        lengths = _lengths(texts, kwargs, self.unit, self.tokenizer)
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
    unit: str = "tokens",
    tokenizer: Any = None,
) -> CosineReward:
    """Cosine length-scaled accuracy; lengths in tokens (tokenizer, else `completion_ids`) or characters."""
    return CosineReward(
        min_value_wrong, max_value_wrong, min_value_correct, max_value_correct, max_len, unit, tokenizer
    )


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
    """Share of target-language words (the R1 paper's language-consistency reward) in the chain of thought
    (span `think`: the <think> block, the whole completion when there is none) or in the whole completion
    (span `completion`); 0.0 when there are no words, so an empty reasoning earns nothing."""

    __name__ = "language_consistency_reward"

    def __init__(self, is_target_word: Callable[[str], bool] = is_english_word, span: str = "think"):
        if span not in ("think", "completion"):
            raise ValueError(f"span must be 'think' or 'completion', got {span!r}")
        self.is_target_word, self.span = is_target_word, span

    def __call__(self, completions, **kwargs) -> list[float]:
        rewards = []
        for text in _texts(completions):
            think = think_span(text) if self.span == "think" else None
            words = (text if think is None else think).split()
            rewards.append(sum(map(self.is_target_word, words)) / len(words) if words else 0.0)
        return rewards


def get_language_consistency_reward(
    is_target_word: Callable[[str], bool] = is_english_word, span: str = "think"
) -> LanguageConsistency:
    return LanguageConsistency(is_target_word, span)


# The parametrized rewards with their defaults; `reward_funcs` builds them with a section's values.
register("reasoning_steps")(get_reasoning_steps_reward())
register("cosine")(get_cosine_reward())
register("repetition_penalty")(get_repetition_penalty_reward())
register("soft_overlong")(get_soft_overlong_reward())
register("language_consistency")(get_language_consistency_reward())


def reward_params(name: str, section: Any) -> dict[str, Any]:
    """The factory arguments of reward `name` from a trainer section of params (the GRPO section's
    reward fields); {} for rewards without parameters. Nulls resolve against the section:
    soft_overlong_max_length and cosine_max_len default to max_completion_length, soft_overlong_cache to
    a quarter of the window (open-r1's 1,024 / 256)."""
    if name == "soft_overlong":
        window = section.soft_overlong_max_length or section.max_completion_length
        cache = section.soft_overlong_cache if section.soft_overlong_cache is not None else window // 4
        return {"max_completion_len": window, "soft_punish_cache": cache, "unit": "tokens"}
    if name == "cosine":
        return {
            "min_value_wrong": section.cosine_min_value_wrong,
            "max_value_wrong": section.cosine_max_value_wrong,
            "min_value_correct": section.cosine_min_value_correct,
            "max_value_correct": section.cosine_max_value_correct,
            "max_len": section.cosine_max_len or section.max_completion_length,
            "unit": "tokens",
        }
    if name == "repetition_penalty":
        return {"ngram_size": section.repetition_ngram_size, "max_penalty": section.repetition_max_penalty}
    if name == "reasoning_steps":
        return {"target_steps": section.reasoning_steps_target, "count_lines": section.reasoning_steps_count_lines}
    if name == "language_consistency":
        return {"span": section.language_consistency_span}
    return {}


_FACTORIES: dict[str, Callable[..., RewardFn]] = {
    "soft_overlong": get_soft_overlong_reward,
    "cosine": get_cosine_reward,
    "repetition_penalty": get_repetition_penalty_reward,
    "reasoning_steps": get_reasoning_steps_reward,
    "language_consistency": get_language_consistency_reward,
}


def reward_funcs(names: list[str], section: Any) -> list[RewardFn]:
    """The reward functions `names` (registry names), the parametrized ones built with `section`'s values."""
    return [_FACTORIES[n](**reward_params(n, section)) if n in _FACTORIES else REWARD_REGISTRY[n] for n in names]
