"""Every case of issue 12 (answer verification on real long outputs), one test each, plus fuzzing.

The two extraction policies (strict for rewards, eval for scoring any model's output), gold normalization
(numeric golds of any type, leading zeros, thousands separators, choice letters in \\text/\\textbf wrappers,
\\pm, intervals, tuples, lists), the narrowed unsafe-expression guard, and verification failures that are
counted as `error` verdicts rather than scored as wrong answers.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from r1_pipeline import verify as V
from r1_pipeline.metrics import summarize
from r1_pipeline.verify import answer_key, check, choice_letter, extract_answer, normalize_gold, verify
from r1_pipeline.verify_report import format_report, score_jsonl

# ------------------------------------------------------------------------------------- the eval policy


@pytest.mark.parametrize(
    "text, expected",
    [
        # the final answer in prose, no box, no tag: the last number of the final statement
        ("Hillary has 3 dimes and 4 more nickels than dimes.\nTherefore, Hillary has 7 nickels.", "7"),
        ("So the total is 1,250 dollars.", "1,250"),
        ("Thus the area is $12\\pi$.", "12\\pi"),  # a math group beats the bare 12 inside it
        ("We get \\(x = \\frac{3}{4}\\).", "\\frac{3}{4}"),  # the right-hand side of the last =
        ("The sum is\n\\[\n\\frac{7}{2}\n\\]", "\\frac{7}{2}"),  # a display on the last lines
        # final-answer phrases
        ("**Final Answer:** 5", "5"),
        ("Answer: $\\frac{1}{2}$", "\\frac{1}{2}"),
        ("So the answer is:\n\\[\n420\n\\]", "420"),  # the phrase ends its line: the display below it
        ("The final answer is $18$. I hope it is correct.", "18"),
        ("The answer is therefore $5$.", "5"),
        ("x\n#### 1,000", "1,000"),
        ("#### Step 2: add them\nThe sum is 9.", "9"),  # a Markdown heading is not GSM8K's ####
        # "A:" is a final answer on the last line only; earlier it is an option of a list
        ("Options:\nA: 12\nB: 15\nC: 18\nWe compute 3 * 5 = 15.", "15"),
        ("A: 12\nB: 15\n\nThe answer is (B).", "(B)"),
        ("Janet sells 16 - 3 - 4 = 9 eggs.\nA: 18", "18"),
    ],
)
def test_eval_policy_final_answers(text, expected):
    assert extract_answer(text, "eval") == expected


@pytest.mark.parametrize(
    "text, strict, eval_",
    [
        # the R1 format: <answer> wins under both policies
        ("<think>\\boxed{4}</think>\n<answer>5</answer>", "5", "5"),
        # several boxes: the last one
        ("A first guess: $\\boxed{3}$. Checking again, \\boxed{4}.", "4", "4"),
        # an empty box is an (empty, wrong) answer under both policies, as in both harnesses
        ("so the answer is \\boxed{}", "", ""),
        # an answer before </think> and another after it: the final one
        ("<think>maybe \\boxed{3}</think>\nSo \\boxed{4}.", "4", "4"),
        # an answer only before </think>: not a final answer for the reward; eval scores it as the harness does
        ("<think>so \\boxed{3}</think>\n", None, "3"),
        # the reasoning never closed (truncated output): nothing for the reward
        ("<think>first 2 + 2 = 4, then", None, "4"),
        # no format at all: strict gives nothing, eval the last statement
        ("2 + 3 = 5, so she has 5 apples.", None, "5"),
        ("", None, None),
    ],
)
def test_policies_side_by_side(text, strict, eval_):
    assert extract_answer(text, "strict") == strict
    assert extract_answer(text, "eval") == eval_


def test_unknown_policy_is_rejected():
    with pytest.raises(ValueError, match="policy must be one of"):
        extract_answer("\\boxed{1}", "lenient")


def test_thirty_thousand_character_outputs_are_bounded():
    reasoning = "Let me compute step by step: 12 * 7 = 84, then 84 + 9 = 93.\n" * 500  # 30k characters
    texts = [f"<think>\n{reasoning}</think>\n\nThe answer is $\\boxed{{93}}$.", reasoning + "So we get 93.",
             f"<think>\n{reasoning}", "x" * 30_000, "$" * 30_000, "\\[" * 15_000, "A: " * 10_000]
    start = time.perf_counter()
    for text in texts:
        for policy in ("strict", "eval"):
            extract_answer(text, policy)
    assert time.perf_counter() - start < 2.0  # about 10 ms in all; the bound catches quadratic behaviour
    assert extract_answer(texts[0], "strict") == "93"
    assert extract_answer(texts[1], "eval") == "93"


# --------------------------------------------------------------------------------------- gold normalization


@pytest.mark.parametrize(
    "gold, expected",
    [
        (27.0, "27"),  # AMC stores floats
        (27, "27"),
        (np.int64(27), "27"),
        (np.float64(27.0), "27"),
        (np.float32(0.5), "0.5"),
        (Decimal("2.50"), "2.5"),
        (Fraction(1, 3), "1/3"),
        (1e-7, "0.0000001"),  # never exponent notation
        (float("inf"), None),
        (np.float64("nan"), None),
        (True, None),
        (None, None),
        (" 025 ", "025"),
    ],
)
def test_numeric_golds_of_any_type(gold, expected):
    assert normalize_gold(gold) == expected


@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("27", 27.0, True),
        ("27", np.int64(27), True),
        ("0.5", np.float32(0.5), True),
        ("\\frac{1}{3}", Fraction(1, 3), True),
        # leading zeros (AIME writes 025)
        ("25", "025", True),
        ("025", "25", True),
        ("\\boxed{025}", 25, True),
        ("m + n = 25", "025", True),
        ("26", "025", False),
        # thousands separators in the gold or the answer
        ("10080", "10,\\!080", True),
        ("10,080", "10080", True),
        ("10000", "10{,}000", True),
        ("900000000", "900,\\!000,\\!000", True),
        ("10,081", "10{,}080", False),
    ],
)
def test_gold_normalization(pred, gold, expected):
    assert verify(pred, gold) is expected


@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("\\text{(C) Plane}", "\\text{(C)}", True),  # the option written out
        ("\\textbf{(B)}", "\\text{(B)}", True),
        ("\\mathrm{(B)}", "(B)", True),
        ("(B)", "\\text{(B)}", True),
        ("B", "\\text{(B)}", True),
        ("\\text{B}", "B", True),
        ("\\textbf{(E) }50,\\!625", "(E)", True),
        ("(C)", "\\text{(B)}", False),
        ("\\text{(B), (C)}", "(B)", False),  # two letters where one is asked
        ("\\text{(C) Plane}", "\\text{(B)}", False),
    ],
)
def test_choice_letters(pred, gold, expected):
    assert verify(pred, gold) is expected


def test_choice_letter_forms():
    assert choice_letter("\\text{(C)}") == choice_letter("C") == choice_letter("(C).") == "C"
    assert choice_letter("\\text{(C) Plane}") is None  # only as a prediction (leading)
    assert choice_letter("\\text{(C) Plane}", leading=True) == "C"
    assert choice_letter("Cat") is None and choice_letter("(F)") is None
    assert answer_key("\\textbf{(D)}") == answer_key("D") == "(D)"  # one vote for every form


@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("3 \\pm 2\\sqrt{2}", "3 + 2\\sqrt{2}, 3 - 2\\sqrt{2}", True),
        ("3 + 2\\sqrt{2}, 3 - 2\\sqrt{2}", "3 \\pm 2\\sqrt{2}", True),
        ("3 - 2\\sqrt{2}, 3 + 2\\sqrt{2}", "3 \\pm 2\\sqrt{2}", True),  # solutions in any order
        ("3 + 2\\sqrt{2}", "3 \\pm 2\\sqrt{2}", False),  # one of two
        # intervals
        ("[2, 5)", "[2,5)", True),
        ("(2, 5]", "[2,5)", False),
        ("(-\\infty, 3) \\cup (3, \\infty)", "(-\\infty,3)\\cup(3,\\infty)", True),
        ("[-2, 7]", "[-2,7]", True),
        # tuples: the order matters
        ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
        ("(2, 1)", "(1, 2)", False),
        # several values where one is asked
        ("1, 2", "2", False),
        ("1 \\text{ and } 2", "2", False),
        ("x=1 \\text{ or } x=2", "2", False),
        # a set of answers in another order
        ("2, 1", "1, 2", True),
    ],
)
def test_pm_intervals_tuples_and_lists(pred, gold, expected):
    assert verify(pred, gold) is expected


# ------------------------------------------------------------------------------------------- unsafe guard


@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("e^{-x^2}", "e^{-x^{2}}", True),  # nested exponents are symbolic: sympy keeps them unevaluated
        ("3^{2^{2}}", "81", True),  # a small tower is evaluated
        ("2^{2^{3}}", "256", True),
        ("2^{10}", "1024", True),
        ("x^{9^{9}}", "x^{387420489}", True),  # a symbolic base with a big (but computable) exponent
    ],
)
def test_nested_exponents_reach_math_verify(pred, gold, expected):
    assert V._is_unsafe(pred) is False
    assert verify(pred, gold) is expected
    assert V._is_unsafe("2**3**2") is False  # 2^9, right-associative like Python


@pytest.mark.parametrize(
    "span",
    ["9^{9^{9}}", "9^{9^{9^{9}}}", "9**9**9", "10^{1000000}", "2^{2^{2^{2^{2}}}}", "(10^{10})^{10^{10}}",
     "x^{9^{9^{9}}}", "1000000!", "\\binom{100000000}{50000000}", "\\frac{" * 30 + "1" + "}" * 30],
)
def test_really_dangerous_spans_never_reach_sympy(span, monkeypatch):
    monkeypatch.setattr(V, "_bounded_math_verify", lambda *a: pytest.fail(f"{span} reached math-verify"))
    assert V._is_unsafe(span) is True
    assert verify(span, "1") is False
    assert verify(span, span) is True  # still equal to itself, as text


# --------------------------------------------------------------------------------- failures are counted


def test_timeouts_are_error_verdicts(monkeypatch):
    def slow(pred, gold):
        while True:
            time.sleep(0.01)

    monkeypatch.setattr(V, "_math_verify_equal", slow)
    c = check("<answer>\\sqrt{8}</answer>", "2\\sqrt{2}", "strict", timeout_s=0.1)
    assert (c.extracted, c.verdict, c.reason, c.correct) == ("\\sqrt{8}", "error", "timeout", False)


def test_exceptions_are_error_verdicts(monkeypatch):
    def broken(pred, gold):
        raise RecursionError("deep")

    monkeypatch.setattr(V, "_math_verify_equal", broken)
    assert V.verify_verdict("\\sqrt{8}", "2\\sqrt{2}") == ("error", "exception: RecursionError")
    assert verify("\\sqrt{8}", "2\\sqrt{2}") is False


def test_a_wrong_answer_is_false_not_error():
    assert check("<answer>7</answer>", "8").verdict == "false"
    assert check("no answer", "8").verdict == "false"
    assert check("<answer>\\sqrt{3}</answer>", "\\sqrt{2}").verdict == "false"
    assert check(None, "8") == V.Check(None, "false", None)


def test_r1_verify_counts_timeouts_and_errors_per_group(tmp_path, monkeypatch):
    def flaky(pred, gold):
        if "sqrt" in pred:
            raise ValueError("sympy")
        while True:
            time.sleep(0.01)

    monkeypatch.setattr(V, "_math_verify_equal", flaky)
    monkeypatch.setattr(V.verify_verdict, "__defaults__", (0.1,))
    monkeypatch.setattr(V.check, "__defaults__", ("strict", 0.1))
    rows = [
        {"benchmark": "a", "response": "\\boxed{\\sqrt{8}}", "gold_answer": "2\\sqrt{2}", "label": True},
        {"benchmark": "a", "response": "\\boxed{x^2}", "gold_answer": "x \\cdot x", "label": True},
        {"benchmark": "b", "response": "\\boxed{3}", "gold_answer": "3", "label": True},
    ]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = score_jsonl(path, label_field="label")
    a, b = result.groups["a"], result.groups["b"]
    assert (a.errors, a.timeouts, b.errors, b.timeouts) == (1, 1, 0, 0)
    assert [it.verdict for it in result.items] == ["error", "error", "true"]
    report = format_report(result)
    assert "timeouts" in report and "Verification errors: 2" in report and "exception: ValueError" in report


def test_evaluation_metrics_for_both_policies():
    rows = [
        {"problem_id": 1, "sample_idx": 0, "extracted": "5", "correct": True, "extracted_strict": None,
         "correct_strict": False},
        {"problem_id": 1, "sample_idx": 1, "extracted": "5", "correct": True, "extracted_strict": "5",
         "correct_strict": True},
    ]
    assert summarize(rows)["pass@1"] == 1.0
    assert summarize(rows, "correct_strict", "extracted_strict")["pass@1"] == 0.5


# ------------------------------------------------------------------------------------------------- fuzzing

PIECES = ["<think>", "</think>", "<answer>", "</answer>", "\\boxed{", "\\fbox{", "{", "}", "\\frac{1}{2}", "^",
          "^{", "**", "$", "$$", "\\(", "\\)", "\\[", "\\]", "A: ", "#### ", "The answer is ", "Final Answer:",
          "\n", " ", "1,000", "-3.5", "9", "025", "x", "=", "\\text{(C) ", "\\textbf{", "(B)", "\\pm", "\\cup",
          "[", ")", ",", "\\!", "{,}", "你好", "²", "٣", "\\", "!", "/0", "e^{-x^2}", "\\infty", "."]
texts = st.one_of(st.text(max_size=200), st.lists(st.sampled_from(PIECES), max_size=40).map("".join))
golds = st.one_of(texts, st.integers(), st.floats(), st.none(), st.sampled_from(["5", "\\text{(C)}", "025", "1,000"]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, gold=golds)
def test_fuzz_extraction_and_verdicts_never_raise(text, gold):
    for policy in ("strict", "eval"):
        span = extract_answer(text, policy)
        assert span is None or isinstance(span, str)
        c = check(text, gold, policy, timeout_s=0.5)
        assert c.verdict in ("true", "false", "error")
        assert c.verdict != "error" or c.reason
    assert answer_key(text) is None or isinstance(answer_key(text), str)
