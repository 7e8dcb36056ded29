"""r1_pipeline.verify_report (`r1 verify`): scoring a JSONL file of responses, agreement with labels per group and
as a confusion matrix, verification errors counted per group, the printed report and the verdicts file."""

from __future__ import annotations

import json
import time

import pytest

from r1_pipeline import verify as V
from r1_pipeline.verify_report import VerifyInputError, format_report, run_verify, score_jsonl

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
        2,
        0,
        1,
        1,
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
    code = run_verify(
        path,
        response_field="response",
        gold_field="gold_answer",
        label_field="label",
        gold_format="plain",
        group_field="benchmark",
        output=out,
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "Confusion matrix" in printed and "responses/s" in printed
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["correct"] for r in rows] == [True, False, True, True]
    assert rows[3] == {
        "line": 4,
        "uid": "d",
        "group": "math",
        "extracted": "3",
        "correct": True,
        "verdict": "true",
        "label": False,
        "agree": False,
    }
    assert list(out.parent.iterdir()) == [out]  # no temp file left behind


def test_run_verify_reports_input_errors(tmp_path, capsys):
    assert run_verify(tmp_path / "missing.jsonl", "response", "gold_answer", None, "plain", None, None) == 2
    assert "file not found" in capsys.readouterr().err


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
