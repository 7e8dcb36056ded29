"""The reward registry: hand-computed values, both completion formats, fuzzing and pathological outputs."""

from __future__ import annotations

import math
import pickle

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from r1_pipeline import verify as V
from r1_pipeline.config import GRPOParams
from r1_pipeline.rewards import (
    REWARD_REGISTRY,
    get_cosine_reward,
    get_language_consistency_reward,
    get_reasoning_steps_reward,
    get_repetition_penalty_reward,
    get_soft_overlong_reward,
    register,
    reward_funcs,
    reward_params,
)

GOOD = "<think>\n7+3=10\n10-5=5\n</think>\n<answer>5</answer>"
EXPECTED = {
    "accuracy",
    "format",
    "tag_count",
    "reasoning_steps",
    "cosine",
    "repetition_penalty",
    "soft_overlong",
    "language_consistency",
}


def chat(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def test_registry_names_and_duplicates():
    assert EXPECTED <= set(REWARD_REGISTRY)
    with pytest.raises(ValueError, match="already registered"):
        register("accuracy")(lambda completions, **kw: [])


def test_parametrized_rewards_pickle():
    # TRL may ship reward functions to a spawned rollout worker.
    for name in ("cosine", "repetition_penalty", "soft_overlong", "language_consistency"):
        assert pickle.loads(pickle.dumps(REWARD_REGISTRY[name]))([GOOD], answer=["5"]) is not None


# --------------------------------------------------------------------------------------------- accuracy


def test_accuracy_strings_and_chat():
    acc = REWARD_REGISTRY["accuracy"]
    completions = [GOOD, "<think>x</think><answer>6</answer>", "no answer at all", "\\boxed{5}"]
    assert acc(completions, answer=["5"] * 4) == [1.0, 0.0, 0.0, 1.0]
    assert acc([chat(c) for c in completions], answer=["5"] * 4) == [1.0, 0.0, 0.0, 1.0]


def test_accuracy_gold_columns():
    acc = REWARD_REGISTRY["accuracy"]
    assert acc([GOOD, GOOD], answer=["5", None]) == [1.0, None]  # no gold: not applicable
    assert acc([GOOD]) == [None]
    assert acc([GOOD], solution=["Adding up gives $\\boxed{5}$."]) == [1.0]  # solution column as fallback
    assert acc([GOOD, GOOD], answer=5) == [1.0, 1.0]  # a scalar applies to all
    assert acc([GOOD], answer=[5.0]) == [1.0]
    assert acc([GOOD, GOOD], answer=["5"]) == [1.0, None]  # a short column never shifts or raises


# ---------------------------------------------------------------------------------------- format and tags


@pytest.mark.parametrize(
    "text, expected",
    [
        (GOOD, 1.0),
        ("<think>a</think><answer>5</answer>", 1.0),  # no newlines needed
        ("\n <think>\na\n</think>\n\n<answer>\n5\n</answer>\n", 1.0),
        ("<think></think><answer>5</answer>", 1.0),
        ("<answer>5</answer>", 0.0),
        ("<think>a</think>", 0.0),
        ("<think>a</think> so <answer>5</answer>", 0.0),  # text between the blocks
        ("<think>a</think><answer>5</answer> more", 0.0),
        ("<think>a</think><answer> </answer>", 0.0),  # empty answer
        ("<think>a</think><answer>5</answer><answer>6</answer>", 0.0),
        ("<think>a<think>b</think><answer>5</answer>", 0.0),
        ("<answer>5</answer><think>a</think>", 0.0),
        ("", 0.0),
    ],
)
def test_format(text, expected):
    assert REWARD_REGISTRY["format"]([text, chat(text)]) == [expected, expected]


def test_tag_count():
    tags = REWARD_REGISTRY["tag_count"]
    assert tags([GOOD, "<think>a</think>", "<think><think></think><answer>", "plain"]) == [1.0, 0.5, 0.5, 0.0]


def test_reasoning_steps():
    steps = REWARD_REGISTRY["reasoning_steps"]
    texts = [
        GOOD,  # two lines in think
        "<think>\n1+1=2\n2+1=3\n3+1=4\n4+1=5\n</think><answer>5</answer>",  # capped at 1
        "Step 1: add. Step 2: subtract.",
        "First, add. Next, subtract. Finally, answer.",
        "1. add\n2. subtract\n3. answer\n- check",
        "<think>\n\n</think>",
        "just an answer",
    ]
    assert steps(texts) == pytest.approx([2 / 3, 1.0, 2 / 3, 1.0, 1.0, 0.0, 0.0])


# ------------------------------------------------------------------------------------------ length shaping


def test_cosine_values():
    cosine = get_cosine_reward(max_len=100, unit="chars")
    right = "<answer>5</answer>"  # 18 characters
    pad = lambda n: right + "x" * (n - len(right))  # noqa: E731
    got = cosine([pad(18), pad(50), pad(100), pad(500), pad(50)], answer=["5", "5", "5", "5", "6"])
    c18 = 0.5 + 0.25 * (1 + math.cos(0.18 * math.pi))
    assert got == pytest.approx([c18, 0.75, 0.5, 0.5, -0.75])  # clamped past max_len; wrong: swapped bounds
    assert cosine([right], answer=[None]) == [None]


def test_cosine_with_a_tokenizer():
    class Words:
        def encode(self, text, add_special_tokens=False):
            return text.split()

    cosine = get_cosine_reward(max_len=4, tokenizer=Words())
    assert cosine(["a <answer>5</answer>"], answer=["5"]) == pytest.approx([0.75])  # 2 of 4 tokens


def test_registered_cosine_defaults():
    # lengths in tokens (TRL's completion_ids), 1,000 by default: a section's value replaces it (below)
    assert REWARD_REGISTRY["cosine"](["<answer>5</answer>"], answer=["5"], completion_ids=[[0] * 18])[0] == (
        pytest.approx(0.5 + 0.25 * (1 + math.cos(0.018 * math.pi)))
    )
    assert REWARD_REGISTRY["cosine"](["<answer>5</answer>"], answer=["5"]) == [None]  # length unknown


def test_repetition_penalty():
    rep = get_repetition_penalty_reward(ngram_size=3, max_penalty=-1.0)
    # 4 trigrams, 3 unique: penalty (1 - 3/4) * -1
    assert rep(["a b c a b c", "a b c d e f", "a b", ""]) == [-0.25, 0.0, 0.0, 0.0]
    assert REWARD_REGISTRY["repetition_penalty"](["x x x x x"]) == [pytest.approx(-2 / 3)]
    with pytest.raises(ValueError):
        get_repetition_penalty_reward(max_penalty=0.5)


def test_soft_overlong_tokens_and_chars():
    tok = get_soft_overlong_reward(max_completion_len=100, soft_punish_cache=20)
    ids = [[0] * n for n in (10, 80, 90, 100, 101)]
    assert tok(["x"] * 5, completion_ids=ids) == [0.0, 0.0, -0.5, -1.0, -1.0]
    assert tok(["x"]) == [None]  # token lengths unknown
    chars = get_soft_overlong_reward(max_completion_len=10, soft_punish_cache=4, unit="chars")
    assert chars(["x" * 6, "x" * 8, "x" * 11]) == [0.0, -0.5, -1.0]
    with pytest.raises(ValueError):
        get_soft_overlong_reward(max_completion_len=10, soft_punish_cache=20)


def test_language_consistency():
    lang = REWARD_REGISTRY["language_consistency"]
    texts = [
        "<think>add three and four</think><answer>7</answer>",
        "<think>hello 你好 world</think><answer>x</answer>",
        "<think>x² ≤ 5 × π, so θ → 0 — done…</think>",
        "<think>   </think><answer>7</answer>",
        "no think block but English",
        "<think>还没有结束",
    ]
    assert lang(texts) == pytest.approx([1.0, 2 / 3, 1.0, 0.0, 1.0, 0.0])
    only_digits = get_language_consistency_reward(lambda w: w.isdigit())
    assert only_digits(["<think>1 2 a b</think>"]) == [0.5]


# --------------------------------------------------------------------------------- never raises, bounded

# Text that reaches the interesting code paths: tags, LaTeX, numbers, phrases, plus arbitrary unicode.
PIECES = [
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    "\\boxed{",
    "\\fbox{",
    "{",
    "}",
    "\\frac{1}{2}",
    "^",
    "**",
    "$",
    "\\(",
    "\\)",
    "A: ",
    "#### ",
    "The answer is ",
    "\n",
    " ",
    "1,000",
    "-3.5",
    "9",
    "x",
    "你好",
    "Step 1:",
    "\\sqrt{2}",
    "\\",
    "!",
    "/0",
]
texts = st.one_of(st.text(max_size=300), st.lists(st.sampled_from(PIECES), max_size=40).map("".join))
completions = st.lists(st.one_of(texts, texts.map(chat), st.none(), st.integers()), max_size=4)
golds = st.one_of(st.none(), texts, st.integers(), st.floats(), st.lists(st.one_of(st.none(), texts), max_size=5))


@pytest.mark.parametrize("name", sorted(EXPECTED))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(completions=completions, answer=golds, solution=golds)
def test_rewards_never_raise(name, completions, answer, solution):
    fn = REWARD_REGISTRY[name]
    ids = [[1] * 5 for _ in completions]
    out = fn(completions, answer=answer, solution=solution, completion_ids=ids, prompts=["p"] * len(completions))
    assert len(out) == len(completions)
    assert all(r is None or (isinstance(r, float) and math.isfinite(r)) for r in out)


def test_rewards_survive_garbage_arguments():
    for fn in REWARD_REGISTRY.values():
        assert fn(None) == []
        assert fn([], answer=None) == []
        assert len(fn([{"content": 5}, [None], b"bytes"], answer=object(), completion_ids=None)) == 3


MEGABYTE = "The the the 1 2 3 " * 60_000 + "<answer>7</answer>"
NESTED = "<think>x</think><answer>" + "\\frac{" * 500 + "1" + "}{2}" * 500 + "</answer>"
HUGE_NUMBER = "<think>x</think><answer>" + "9" * 1_000_000 + "</answer>"
TOWER = "<think>x</think><answer>9^{9^{9^{9}}}</answer>"
UNCLOSED = "\\boxed{" * 200_000
TAG_SOUP = "<think></think><answer></answer>" * 50_000


def test_pathological_outputs_get_sane_rewards():
    inputs = [MEGABYTE, NESTED, HUGE_NUMBER, TOWER, UNCLOSED, TAG_SOUP]
    golds = ["7", "1", "9" * 1_000_000, "1", "1", "1"]
    r = REWARD_REGISTRY
    assert r["accuracy"](inputs, answer=golds) == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    assert r["accuracy"]([chat(t) for t in inputs], answer=golds) == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    assert r["format"](inputs) == [0.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    assert r["tag_count"](inputs) == [0.5, 1.0, 1.0, 1.0, 0.0, 0.0]
    assert r["reasoning_steps"](inputs) == [0.0, 1 / 3, 1 / 3, 1 / 3, 0.0, 0.0]
    assert r["language_consistency"](inputs) == [1.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    rep = r["repetition_penalty"](inputs)
    assert rep[0] == pytest.approx(-1.0, abs=1e-3) and rep[1:4] == [0.0, 0.0, 0.0]
    assert r["soft_overlong"](inputs, completion_ids=[[0] * 5000] * 6) == [-1.0] * 6
    cos = get_cosine_reward(unit="chars")(inputs, answer=golds)
    assert cos[:3] == [0.5, -0.5, 0.5]  # past max_len: the long-length bounds
    assert cos[3] == pytest.approx(-0.5 - 0.25 * (1 + math.cos(len(TOWER) / 1000 * math.pi)))  # short and wrong


# ------------------------------------------------------------------------------- strict policy, failures


def test_accuracy_uses_the_strict_policy():
    acc = REWARD_REGISTRY["accuracy"]
    texts = [
        "<think>2+3</think><answer>5</answer>",
        "<think>2+3</think>\nThe answer is 5.",  # right, but not in the trained format
        "<think>\\boxed{5}</think><answer>6</answer>",  # the <answer> counts, not a box in the reasoning
        "<think>so \\boxed{5}</think>\nno idea",  # a box before </think> is not a final answer
        "<think>2+3 = 5",  # the reasoning never closed
        "2+3 = 5\nA: 5",
        "so \\boxed{5}",  # no think block: the last box
    ]
    assert acc(texts, answer=["5"] * len(texts)) == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]


def test_verification_failures_are_counted_not_scored_wrong(monkeypatch):
    def slow(pred, gold):
        while True:
            pass

    monkeypatch.setattr(V, "_math_verify_equal", slow)
    monkeypatch.setattr(V, "VERIFY_TIMEOUT_S", 0.05)
    monkeypatch.setattr(V.verify_verdict, "__defaults__", (0.05,))
    monkeypatch.setattr(V.check, "__defaults__", ("strict", 0.05))
    logged = []
    texts = ["<answer>\\sqrt{8}</answer>", "<answer>7</answer>", "<answer>2\\sqrt{2}</answer>"]
    golds = ["2\\sqrt{2}", "8", "2\\sqrt{2}"]
    out = REWARD_REGISTRY["accuracy"](texts, answer=golds, log_metric=lambda k, v: logged.append((k, v)))
    # \sqrt{8} needs math-verify (times out: None, counted); 7 vs 8 are plain numbers; equal text is right
    assert out == [None, 0.0, 1.0]
    assert logged == [("rewards/accuracy/failures", 1.0)]
    cos = get_cosine_reward(unit="chars")
    logged.clear()
    assert cos(texts[:1], answer=["2\\sqrt{2}"], log_metric=lambda k, v: logged.append((k, v))) == [None]
    assert logged == [("rewards/cosine/failures", 1.0)]


def test_failure_logging_never_breaks_a_reward():
    def broken(name, value):
        raise RuntimeError("tracking down")

    assert REWARD_REGISTRY["accuracy"]([GOOD], answer=["5"], log_metric=broken) == [1.0]
    assert REWARD_REGISTRY["accuracy"]([GOOD], answer=["5"], log_metric="not callable") == [1.0]


# ---------------------------------------------------------------------------------- parameters from params


def test_reward_params_come_from_the_section():
    section = GRPOParams(max_completion_length=4096)
    assert reward_params("soft_overlong", section) == {
        "max_completion_len": 4096,
        "soft_punish_cache": 1024,
        "unit": "tokens",
    }
    assert reward_params("cosine", section)["max_len"] == 4096  # not 1,000 characters
    section = GRPOParams(
        max_completion_length=4096,
        soft_overlong_max_length=3000,
        soft_overlong_cache=500,
        cosine_max_len=2048,
        repetition_ngram_size=4,
        repetition_max_penalty=-0.5,
        reasoning_steps_target=8,
        reasoning_steps_count_lines=False,
        language_consistency_span="completion",
    )
    assert reward_params("soft_overlong", section) == {
        "max_completion_len": 3000,
        "soft_punish_cache": 500,
        "unit": "tokens",
    }
    assert reward_params("cosine", section)["max_len"] == 2048
    assert reward_params("repetition_penalty", section) == {"ngram_size": 4, "max_penalty": -0.5}
    assert reward_params("reasoning_steps", section) == {"target_steps": 8, "count_lines": False}
    assert reward_params("language_consistency", section) == {"span": "completion"}
    assert reward_params("accuracy", section) == {}


def test_reward_funcs_are_built_with_the_section_values():
    section = GRPOParams(
        max_completion_length=4096, reward_funcs=["accuracy", "soft_overlong", "cosine"], reward_weights=[1.0, 1.0, 1.0]
    )
    acc, overlong, cosine = reward_funcs(section.reward_funcs, section)
    assert acc is REWARD_REGISTRY["accuracy"]
    ids = [[0] * n for n in (768, 3072, 3584, 4096)]
    # the default registry entry (1,024 / 256) would punish all of these; the section's 4,096 / 1,024 does not
    assert overlong(["x"] * 4, completion_ids=ids) == [0.0, 0.0, -0.5, -1.0]
    assert cosine(["<answer>5</answer>"], answer=["5"], completion_ids=[[0] * 2048]) == [pytest.approx(0.75)]
    assert pickle.loads(pickle.dumps(overlong))(["x"], completion_ids=[[0] * 10]) == [0.0]


def test_reasoning_steps_parameters():
    cot = "<think>\n" + "\n".join(f"line {i}" for i in range(3)) + "\n</think><answer>1</answer>"
    assert get_reasoning_steps_reward()([cot]) == [1.0]  # three lines saturate the default
    assert get_reasoning_steps_reward(count_lines=False)([cot]) == [0.0]  # lines are not steps
    assert get_reasoning_steps_reward(target_steps=6)([cot]) == [0.5]
    with pytest.raises(ValueError):
        get_reasoning_steps_reward(target_steps=0)


def test_language_consistency_span():
    text = "<think>add three</think><answer>答案 7</answer>"
    assert get_language_consistency_reward()([text]) == [1.0]
    assert get_language_consistency_reward(span="completion")([text]) == [pytest.approx(2 / 3)]
    with pytest.raises(ValueError):
        get_language_consistency_reward(span="answer")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"soft_overlong_max_length": 5000}, "soft_overlong_max_length (5000) is beyond max_completion_length"),
        ({"soft_overlong_cache": 5000}, "soft_overlong_cache (5000) is longer than its window (4096)"),
        ({"soft_overlong_max_length": 1000, "soft_overlong_cache": 2000}, "longer than its window (1000)"),
        ({"cosine_max_len": 8192}, "cosine_max_len (8192) is beyond max_completion_length"),
        ({"cosine_min_value_wrong": 0.0, "cosine_max_value_wrong": -0.5}, "cosine_min_value_wrong must be <="),
        ({"cosine_min_value_correct": 1.0, "cosine_max_value_correct": 0.5}, "cosine_min_value_correct must be"),
        ({"cosine_max_value_wrong": 0.6}, "cosine_max_value_wrong must be below cosine_min_value_correct"),
        ({"repetition_max_penalty": 0.5}, "less than or equal to 0"),
        ({"reasoning_steps_target": 0}, "greater than or equal to 1"),
    ],
)
def test_schema_rejects_reward_settings_that_contradict_the_trainer(changes, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        GRPOParams(max_completion_length=4096, **changes)
