"""Promotion rule of r1_pipeline.registry.decide: pass@1 must beat the champion by more than 2 SE of the paired
difference, under the same evaluation protocol; an unevaluated version is never promoted."""

from __future__ import annotations

import pytest

from r1_pipeline.registry import champion_alias, decide, model_digest, outcomes_by_problem, problems_digest

PROTOCOL = {"k": "4", "temperature": "0.6", "top_p": "0.95", "max_new_tokens": "64", "problems_sha256": "abc"}


def evidence(correct_per_problem: list[list[bool]], **protocol) -> dict:
    return {**PROTOCOL, **protocol, "outcomes": {f"p{i}": row for i, row in enumerate(correct_per_problem)}}


def test_first_evaluated_version_is_promoted_and_unevaluated_never():
    assert decide(evidence([[True] * 4] * 3), None)["decision"] == "promoted"
    assert decide({**PROTOCOL, "outcomes": {}}, None)["decision"] == "not evaluated"
    assert decide({**PROTOCOL, "outcomes": {}}, evidence([[False] * 4] * 3))["decision"] == "not evaluated"


def test_clear_gain_promotes_with_its_numbers():
    champion = evidence([[False, False, False, False]] * 20 + [[True] * 4] * 20)
    better = evidence([[True, True, True, False]] * 20 + [[True] * 4] * 20)
    d = decide(better, champion)
    assert d["decision"] == "promoted"
    assert d["difference"] == pytest.approx(0.375) and d["n_problems"] == 40
    assert d["difference"] > 2 * d["stderr"] > 0


def test_gain_within_two_standard_errors_is_kept():
    # one problem of 40 better by one sample of 4: +0.00625 with SE 0.00625, not above 2 SE
    champion = evidence([[False] * 4] * 40)
    slightly = evidence([[True, False, False, False]] + [[False] * 4] * 39)
    d = decide(slightly, champion)
    assert d["decision"] == "kept" and d["difference"] > 0
    # a worse model is kept out as well, and the same outcomes are no gain
    assert decide(champion, slightly)["decision"] == "kept"
    assert decide(champion, champion)["decision"] == "kept"


@pytest.mark.parametrize(
    "key,value",
    [("k", "8"), ("temperature", "1.0"), ("top_p", "1.0"), ("max_new_tokens", "256"), ("problems_sha256", "other")],
)
def test_other_protocol_is_not_comparable(key, value):
    champion = evidence([[False] * 4] * 40)
    better = evidence([[True] * 4] * 40, **{key: value})
    d = decide(better, champion)
    assert d["decision"] == "not comparable" and key in d["reason"]


def test_no_shared_problem_is_not_comparable():
    champion = {**PROTOCOL, "outcomes": {"a": [False]}}
    assert decide({**PROTOCOL, "outcomes": {"b": [True]}}, champion)["decision"] == "not comparable"


def test_outcomes_and_problem_digest_from_records():
    rows = [
        {
            "model": "sft",
            "benchmark": "b",
            "problem_id": p,
            "sample_idx": i,
            "correct": (p + i) % 2 == 0,
            "gold": str(p),
        }
        for p in (2, 1)
        for i in (1, 0)
    ]
    assert outcomes_by_problem(rows, "sft", "b") == {"2": [True, False], "1": [False, True]}
    assert outcomes_by_problem(rows, "grpo", "b") == {}
    assert problems_digest(rows, "sft", "b") == problems_digest(list(reversed(rows)), "sft", "b")
    assert problems_digest(rows, "sft", "b") != problems_digest(rows[:2], "sft", "b")


def test_alias_and_digest(tmp_path):
    assert champion_alias("math-500.v2") == "champion-math-500_v2"
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "w.bin").write_bytes(b"1")
    first = model_digest(tmp_path / "a")
    (tmp_path / "a" / "w.bin").write_bytes(b"2")
    assert model_digest(tmp_path / "a") != first
