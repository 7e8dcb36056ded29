"""r1_pipeline.verify: answer extraction, verification (fast path, math-verify path, time bounds), and every case
of issue 12 (answer verification on real long outputs), one test each, plus fuzzing.

The two extraction policies (strict for rewards, eval for scoring any model's output), gold normalization
(numeric golds of any type, leading zeros, thousands separators, choice letters in \\text/\\textbf wrappers,
\\pm, intervals, tuples, lists), the narrowed unsafe-expression guard, and verification failures that are
counted as `error` verdicts rather than scored as wrong answers. Scoring JSONL files (`r1 verify`):
test_verify_report.py.
"""

from __future__ import annotations

import signal
import threading
import time
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from r1_pipeline import verify as V
from r1_pipeline.verify import (
    answer_key,
    check,
    choice_letter,
    extract_answer,
    gold_from_boxed,
    gold_from_gsm8k,
    is_correct,
    normalize_gold,
    verify,
    verify_verdict,
)

# ------------------------------------------------------------------------------------------------ extraction


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>\n2+2=4\n</think>\n<answer>4</answer>", "4"),
        ("<answer>1</answer> then <answer> 2 </answer>", "2"),  # the last pair
        ("<answer>\\boxed{7}</answer>", "\\boxed{7}"),
        ("<answer>3</answer> and later \\boxed{9}", "3"),  # <answer> wins over \boxed
        ("so \\boxed{\\frac{1}{2}} and finally \\boxed{\\frac{\\sqrt{3}}{2}}.", "\\frac{\\sqrt{3}}{2}"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces do not count
        ("\\fbox{12}", "12"),
        ("\\boxed 5 is it", "5"),
        ("first \\boxed{3} then a truncated \\boxed{4", "3"),  # an unclosed last box falls back
        ("<answer>5", None),  # unclosed answer tag, nothing else
        ("No answer here, only numbers 3 and 4.", None),
        ("", None),
    ],
)
def test_extract_tags_and_boxed(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("She has 13 eggs\nShe makes 13 * 2 = $26\nA: 26", "26"),  # GPT-3 GSM8K style
        ("Total is 1,000.\n#### 1,000", "1,000"),
        ("We add 3 and 4. The answer is 7.", "7"),
        ("The final answer is $\\frac{1}{2}$. I hope it is correct.", "\\frac{1}{2}"),  # the math group
        ("The answer is 3.5 apples", "3.5 apples"),
        ("Answer: 12", "12"),
        ("The answer is 5? No. Recount.\nThe answer is 6.", "6"),  # the last statement wins
        ("<think>the answer is 5</think>\nThe answer is 6.", "6"),
        # no answer after the reasoning: the eval policy scores what the reasoning ends with (Qwen harness)
        ("<think>hmm, the answer is 5</think>\nI am not sure.", "5"),
        ("The answer to part (a) is 10.", "10"),
    ],
)
def test_extract_final_answer_phrases(text, expected):
    assert extract_answer(text, "eval") == expected
    assert extract_answer(text, "strict") is None  # strict never falls back to phrases


def test_extract_is_bounded_on_megabyte_outputs():
    big = "x " * 500_000
    assert extract_answer(big + "<answer>3</answer>") == "3"
    assert extract_answer(big + "\\boxed{" * 100_000) is None  # all unclosed
    assert extract_answer("\\boxed{" + "1" * 1_000_000 + "}") is None  # a megabyte box is not an answer
    assert extract_answer("The answer is " * 100_000) is None
    assert extract_answer("{" * 1_000_000 + "\\boxed{2}") == "2"


def test_extract_never_raises_on_non_strings():
    assert extract_answer(None) is None  # type: ignore[arg-type]
    assert extract_answer(42) is None  # type: ignore[arg-type]


def test_gold_helpers():
    assert gold_from_gsm8k("She sells 9 eggs.\n#### 1,234") == "1234"
    assert gold_from_gsm8k("no marker") is None
    assert gold_from_boxed("So the area is $\\boxed{\\frac{3}{4}}$.") == "\\frac{3}{4}"
    assert gold_from_boxed("nothing boxed") is None
    assert normalize_gold(27.0) == "27"
    assert normalize_gold(1e-7) == "0.0000001"
    assert normalize_gold(float("nan")) is None
    assert normalize_gold(True) is None
    assert normalize_gold("  \\frac12 ") == "\\frac12"
    assert normalize_gold("x\n#### 5", "gsm8k") == "5"
    with pytest.raises(ValueError):
        normalize_gold("5", "nope")


# ------------------------------------------------------------------------------------------------- verify


@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("42", "42", True),
        ("42", "43", False),
        ("1,000", "1000", True),
        ("1000", "1{,}000", True),
        ("900000000", "900,\\!000,\\!000", True),
        ("$42$", "42", True),
        ("\\$6", "6", True),
        ("-\\$5", "-5", True),
        ("-0", "0", True),
        ("0.5", "\\frac{1}{2}", True),
        ("0.5", "\\dfrac12", True),
        ("1/3", "\\frac{2}{6}", True),
        ("-\\frac{40}{153}", "-40/153", True),
        ("0.333333", "\\frac{1}{3}", True),  # floats round to 6 places, as in math-verify
        ("0.33", "\\frac{1}{3}", False),
        ("2.50", "2.5", True),
        ("42.", "42", True),
        ("3", 3, True),  # numeric gold columns
        ("27", 27.0, True),
        ("2, 125", "2125", False),  # a list, not a number with a thousands separator
        ("1/0", "1/0", True),  # compared as text, never divided
        ("1/0", "2/0", False),
    ],
)
def test_verify_numbers(pred, gold, expected):
    assert verify(pred, gold) is expected


def test_plain_numbers_never_reach_math_verify(monkeypatch):
    def boom(*args):
        raise AssertionError("math-verify called for plain numbers")

    monkeypatch.setattr(V, "_bounded_math_verify", boom)
    assert verify("1,234.50", "1234.5") is True
    assert verify("\\boxed{7}", "7") is True
    assert verify("7", "8") is False


@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", True),
        ("\\sqrt{3}", "\\sqrt{2}", False),
        ("x = 5", "5", True),
        ("48^\\circ", "48^\\circ", True),
        ("25\\%", "25\\%", True),
        ("(1, 2)", "(1,2)", True),
        ("\\text{4:30 p.m.}", "\\text{4:30 p.m.}", True),
        ("12\\frac{3}{5}", "12\\frac{3}{5}", True),
        ("42 apples", "42", True),
    ],
)
def test_verify_latex(pred, gold, expected):
    assert verify(pred, gold) is expected


@pytest.mark.parametrize("pred", [None, "", "   ", 17, ["4"]])
def test_verify_no_answer_is_false(pred):
    assert verify(pred, "4") is False


def test_verify_no_gold_is_false():
    assert verify("4", None) is False
    assert verify("4", "") is False


def test_is_correct():
    assert is_correct("<think>\n2+2\n</think>\n<answer>4</answer>", "4")
    assert not is_correct("<think>\n2+2\n</think>\n<answer>5</answer>", "4")
    assert is_correct("... so 13 * 2 = 26\nA: 26", "26", "eval")
    assert not is_correct("... so 13 * 2 = 26\nA: 26", "26")  # strict: not the trained format
    assert not is_correct("<think>the answer is 4</think>", "4")


# Inputs built to stall or crash a naive verifier; asserting the verdicts, the test run itself shows speed.
def test_verify_pathological_spans():
    huge = "1" * 1_000_000
    assert verify(huge, huge) is True  # compared as canonical digit strings
    assert verify(huge, huge[:-1] + "2") is False
    assert verify("0." + huge, "0." + huge + "000") is True
    assert verify("x" * 1_000_000, "x") is False
    assert verify("\\frac{" * 300 + "1" + "}{2}" * 300, "1") is False  # 300 levels deep
    assert verify("9^{9^{9^{9}}}", "1") is False  # a power tower
    assert verify("9**9**9**9", "1") is False
    assert verify("10^{1000000}", "1") is False
    assert verify("1000000!", "1") is False
    assert verify("\\binom{100000000}{50000000}", "1") is False
    assert verify("9^{9^{9}}", "9^{9^{9}}") is True  # unsafe spans still match themselves


def test_math_verify_is_cut_at_the_deadline(monkeypatch):
    def slow(pred, gold):
        while True:
            time.sleep(0.01)

    monkeypatch.setattr(V, "_math_verify_equal", slow)
    start = time.monotonic()
    assert verify("\\sqrt{8}", "2\\sqrt{2}", timeout_s=0.2) is False
    assert verify_verdict("\\sqrt{8}", "2\\sqrt{2}", timeout_s=0.2) == ("error", "timeout")  # counted, not silent
    assert time.monotonic() - start < 5


def test_deadline_restores_the_callers_timer():
    fired = []

    def handler(*args):
        fired.append(1)

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 100)
    try:
        assert verify("\\sqrt{8}", "2\\sqrt{2}") is True
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 90 < remaining <= 100
        assert signal.getsignal(signal.SIGALRM) is handler
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert not fired


def test_verify_from_a_thread_uses_a_worker_process():
    results = {}

    def work():
        results["same"] = verify("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}")
        results["different"] = verify("\\sqrt{3}", "\\sqrt{2}")
        results["number"] = verify("7", "7")  # fast path, no worker needed

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=120)
    assert results == {"same": True, "different": False, "number": True}


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
    texts = [
        f"<think>\n{reasoning}</think>\n\nThe answer is $\\boxed{{93}}$.",
        reasoning + "So we get 93.",
        f"<think>\n{reasoning}",
        "x" * 30_000,
        "$" * 30_000,
        "\\[" * 15_000,
        "A: " * 10_000,
    ]
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
    [
        "9^{9^{9}}",
        "9^{9^{9^{9}}}",
        "9**9**9",
        "10^{1000000}",
        "2^{2^{2^{2^{2}}}}",
        "(10^{10})^{10^{10}}",
        "x^{9^{9^{9}}}",
        "1000000!",
        "\\binom{100000000}{50000000}",
        "\\frac{" * 30 + "1" + "}" * 30,
    ],
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


# ------------------------------------------------------------------------------------------------- fuzzing

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
    "^{",
    "**",
    "$",
    "$$",
    "\\(",
    "\\)",
    "\\[",
    "\\]",
    "A: ",
    "#### ",
    "The answer is ",
    "Final Answer:",
    "\n",
    " ",
    "1,000",
    "-3.5",
    "9",
    "025",
    "x",
    "=",
    "\\text{(C) ",
    "\\textbf{",
    "(B)",
    "\\pm",
    "\\cup",
    "[",
    ")",
    ",",
    "\\!",
    "{,}",
    "你好",
    "²",
    "٣",
    "\\",
    "!",
    "/0",
    "e^{-x^2}",
    "\\infty",
    ".",
]
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
