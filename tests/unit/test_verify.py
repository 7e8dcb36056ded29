"""Answer extraction, verification (fast path, math-verify path, time bounds) and JSONL scoring."""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest

from r1_pipeline import verify as V
from r1_pipeline.verify import (
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
from r1_pipeline.verify_report import VerifyInputError, format_report, run_verify, score_jsonl

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


# -------------------------------------------------------------------------------------------- JSONL scoring


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ROWS = [
    {"uid": "a", "benchmark": "gsm8k", "response": "2+2\nA: 4", "gold_answer": "4", "label": True},
    {"uid": "b", "benchmark": "gsm8k", "response": "2+3\nA: 6", "gold_answer": "5", "label": False},
    {"uid": "c", "benchmark": "math", "response": "so \\boxed{\\frac12}", "gold_answer": "0.5", "label": True},
    {"uid": "d", "benchmark": "math", "response": "so \\boxed{3}", "gold_answer": "3", "label": False},  # noisy
]


def test_score_jsonl_agreement_groups_and_confusion(tmp_path):
    result = score_jsonl(_write(tmp_path / "r.jsonl", ROWS), "response", "gold_answer", "label")
    assert [it.correct for it in result.items] == [True, False, True, True]
    assert result.agreement == 0.75
    assert result.groups["gsm8k"].agreement == 1.0
    assert result.groups["math"].agreement == 0.5
    c = result.confusion
    assert (c.label_true_ours_true, c.label_true_ours_false, c.label_false_ours_true, c.label_false_ours_false) == (
        2, 0, 1, 1,
    )
    assert [it.uid for it in result.disagreements()] == ["d"]
    assert result.throughput > 0
    report = format_report(result)
    assert "agreement" in report and "75.00%" in report and "label=false" in report


def test_score_jsonl_gold_formats_and_chat_responses(tmp_path):
    rows = [
        {"r": [{"role": "assistant", "content": "<answer>1000</answer>"}], "g": "steps\n#### 1,000"},
        {"r": "<answer>7</answer>", "g": "steps\n#### 8"},
    ]
    result = score_jsonl(_write(tmp_path / "g.jsonl", rows), "r", "g", gold_format="gsm8k")
    assert [it.correct for it in result.items] == [True, False]
    assert result.confusion is None and result.agreement is None
    boxed = [{"r": "\\boxed{2}", "g": "so it is $\\boxed{2}$"}]
    assert score_jsonl(_write(tmp_path / "b.jsonl", boxed), "r", "g", gold_format="boxed").items[0].correct


def test_score_jsonl_with_workers_matches_serial(tmp_path):
    path = _write(tmp_path / "r.jsonl", ROWS * 5)
    serial = score_jsonl(path, "response", "gold_answer", "label")
    parallel = score_jsonl(path, "response", "gold_answer", "label", workers=2)
    assert [it.correct for it in parallel.items] == [it.correct for it in serial.items]


def test_score_jsonl_errors(tmp_path):
    with pytest.raises(VerifyInputError, match="file not found"):
        score_jsonl(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ROWS[0]) + "\n{not json\n")
    with pytest.raises(VerifyInputError, match=r"bad.jsonl:2: invalid JSON"):
        score_jsonl(bad)
    path = _write(tmp_path / "r.jsonl", ROWS)
    with pytest.raises(VerifyInputError, match=r"r.jsonl:1: field 'answer' missing"):
        score_jsonl(path, gold_field="answer")
    with pytest.raises(VerifyInputError, match=r"field 'benchmark' must be true/false"):
        score_jsonl(path, label_field="benchmark")
    no_marker = _write(tmp_path / "n.jsonl", [{"response": "A: 1", "gold_answer": "1"}])
    with pytest.raises(VerifyInputError, match=r"n.jsonl:1: field 'gold_answer' has no gold answer"):
        score_jsonl(no_marker, gold_format="gsm8k")


def test_run_verify_prints_report_and_writes_verdicts(tmp_path, capsys):
    path = _write(tmp_path / "r.jsonl", ROWS)
    out = tmp_path / "out" / "verdicts.jsonl"
    code = run_verify(path, response_field="response", gold_field="gold_answer", label_field="label",
                      gold_format="plain", group_field="benchmark", output=out)
    assert code == 0
    printed = capsys.readouterr().out
    assert "Confusion matrix" in printed and "responses/s" in printed
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["correct"] for r in rows] == [True, False, True, True]
    assert rows[3] == {"line": 4, "uid": "d", "group": "math", "extracted": "3", "correct": True,
                       "verdict": "true", "label": False, "agree": False}
    assert list(out.parent.iterdir()) == [out]  # no temp file left behind


def test_run_verify_reports_input_errors(tmp_path, capsys):
    assert run_verify(tmp_path / "missing.jsonl", "response", "gold_answer", None, "plain", None, None) == 2
    assert "file not found" in capsys.readouterr().err
