"""Evaluation metrics against hand-computed values."""

from __future__ import annotations

import math
import random

import pytest

from r1_pipeline.metrics import (
    cons_at_k,
    majority_index,
    mean_stderr,
    pass_at_1,
    pass_at_1_stderr,
    pass_at_k,
    summarize,
)

MATRIX = [[1, 0, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]]  # per-problem accuracy 0.75, 0, 1


def test_pass_at_1():
    assert pass_at_1(MATRIX) == pytest.approx((0.75 + 0 + 1) / 3)
    assert pass_at_1([[True], [False, True]]) == pytest.approx(0.75)  # problems weigh equally
    with pytest.raises(ValueError):
        pass_at_1([])
    with pytest.raises(ValueError):
        pass_at_1([[1], []])


def test_stderr():
    # mean 7/12; squared deviations 1/36 + 49/144 + 25/144 = 13/24; / (n-1) = 13/48; / n = 13/144
    assert pass_at_1_stderr(MATRIX) == pytest.approx(math.sqrt(13 / 144))
    assert mean_stderr([0.5]) == 0.0
    assert mean_stderr([1.0, 1.0, 1.0]) == 0.0
    assert mean_stderr([0.0, 1.0]) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (4, 1, 1, 0.25),
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (4, 2, 2, 5 / 6),  # 1 - C(2,2)/C(4,2)
        (4, 3, 2, 1.0),  # n - c < k: every pair has a correct sample
        (4, 0, 2, 0.0),
        (4, 4, 4, 1.0),
        (1000, 1, 1, 0.001),
    ],
)
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_matches_the_binomial_formula_without_overflow():
    for n, c, k in [(200, 13, 10), (64, 7, 8), (1000, 500, 100)]:
        exact = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-9)
    assert 0.0 <= pass_at_k(100_000, 3, 50_000) <= 1.0


@pytest.mark.parametrize("n, c, k", [(4, 5, 1), (4, -1, 1), (4, 1, 0), (4, 1, 5)])
def test_pass_at_k_rejects_invalid(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


@pytest.mark.parametrize(
    "answers, expected",
    [
        (["5", "6", "5"], 0),
        (["6", "5", "5", "6"], 0),  # tie: the answer seen first wins
        (["5", "6", "6", "5"], 0),
        ([None, None, "3"], 2),  # a missing answer never wins over a real one
        ([None, None], 0),
        (["1", "0.5", "\\frac{1}{2}"], 1),  # equal numbers vote together
        (["$x+1$", "x + 1", "y"], 0),  # other answers vote by their whitespace-free text
        ([], None),
    ],
)
def test_majority_index(answers, expected):
    assert majority_index(answers) == expected


def test_cons_at_k():
    answers = [["5", "6", "5"], [None, "3", None], ["1", "2", "2"], [None, None, None]]
    verdicts = [[1, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0, 0]]
    # winners: "5" (correct), "3" (correct), "2" (wrong), none (wrong)
    assert cons_at_k(answers, verdicts) == pytest.approx(2 / 4)
    with pytest.raises(ValueError):
        cons_at_k(answers, verdicts[:2])
    with pytest.raises(ValueError):
        cons_at_k([["5"]], [[1, 0]])


def test_summarize():
    rows = [
        {"problem_id": "p1", "sample_idx": i, "extracted": a, "correct": c}
        for i, (a, c) in enumerate([("5", True), ("6", False), ("5", True), ("5", True)])
    ] + [
        {"problem_id": "p2", "sample_idx": i, "extracted": a, "correct": c}
        for i, (a, c) in enumerate([("2", False), ("3", True), ("2", False), (None, False)])
    ]
    random.Random(0).shuffle(rows)  # order of rows does not matter
    got = summarize(rows)
    assert got["n_problems"] == 2 and got["k"] == 4
    assert got["pass@1"] == pytest.approx((0.75 + 0.25) / 2)
    assert got["pass@1_stderr"] == pytest.approx(0.25)  # values 0.75, 0.25
    assert got["cons@k"] == pytest.approx(0.5)  # p1 votes "5" (right), p2 votes "2" (wrong)
    assert got["pass@k"] == pytest.approx(1.0)  # with k = n = 4, any correct sample counts


def test_summarize_errors():
    with pytest.raises(ValueError, match="no evaluation records"):
        summarize([])
    row = {"problem_id": 1, "sample_idx": 0, "extracted": "1", "correct": True}
    with pytest.raises(ValueError, match="duplicate sample"):
        summarize([row, row])
    with pytest.raises(ValueError, match="'correct'"):
        summarize([{"problem_id": 1, "sample_idx": 0}])


def test_summarize_uneven_sample_counts():
    rows = [{"problem_id": "a", "sample_idx": i, "extracted": "1", "correct": i == 0} for i in range(2)]
    rows += [{"problem_id": "b", "sample_idx": i, "extracted": "2", "correct": i == 3} for i in range(4)]
    got = summarize(rows)
    assert got["k"] == 2
    assert got["pass@k"] == pytest.approx((1.0 + 0.5) / 2)  # a: n=2,c=1,k=2; b: n=4,c=1,k=2 -> 1 - 3/6
    assert got["pass@1"] == pytest.approx((0.5 + 0.25) / 2)


def test_paired_difference_uses_the_per_problem_differences():
    from r1_pipeline.metrics import paired_difference

    def rows(model, verdicts):  # verdicts[problem] = list of sample verdicts
        return [
            {"model": model, "benchmark": "b", "problem_id": p, "sample_idx": i, "correct": c}
            for p, vs in enumerate(verdicts)
            for i, c in enumerate(vs)
        ]

    # b solves problems 0-3 half the time; a solves the same ones always: +0.5 on 4 of 8 problems
    a = rows("a", [[1, 1]] * 4 + [[0, 0]] * 4)
    b = rows("b", [[1, 0]] * 4 + [[0, 0]] * 4)
    d = paired_difference(a + b, "a", "b", "b")
    assert d["difference"] == 0.25 and d["n_problems"] == 8
    import statistics

    assert abs(d["stderr"] - statistics.stdev([0.5] * 4 + [0.0] * 4) / 8**0.5) < 1e-12
    assert d["verdict"] == "better" and d["ci_low"] > 0
    # the same models on one problem each way: the interval includes 0
    tie = paired_difference(rows("a", [[1], [0]]) + rows("b", [[0], [1]]), "a", "b", "b")
    assert tie["difference"] == 0 and tie["verdict"] == "no clear difference"
    flipped = paired_difference(a + b, "b", "a", "b")
    assert flipped["difference"] == -0.25 and flipped["verdict"] == "worse"
    assert paired_difference(a, "a", "missing", "b") is None


def test_evaluation_metrics_for_both_policies():
    rows = [
        {
            "problem_id": 1,
            "sample_idx": 0,
            "extracted": "5",
            "correct": True,
            "extracted_strict": None,
            "correct_strict": False,
        },
        {
            "problem_id": 1,
            "sample_idx": 1,
            "extracted": "5",
            "correct": True,
            "extracted_strict": "5",
            "correct_strict": True,
        },
    ]
    assert summarize(rows)["pass@1"] == 1.0
    assert summarize(rows, "correct_strict", "extracted_strict")["pass@1"] == 0.5
