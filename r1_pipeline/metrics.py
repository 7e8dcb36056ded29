"""Evaluation metrics with the R1 protocol: k sampled responses per problem.

- pass@1: mean over problems of the accuracy over that problem's samples (the R1 paper's pass@1).
- pass@k: the unbiased estimator of Chen et al. (2021) from n samples with c correct.
- cons@k: the accuracy of the majority-voted answer per problem.

All values are fractions in [0, 1]. Inputs are plain lists, so metrics can be recomputed from the evaluation
records (one row per problem x sample) at any time.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

from r1_pipeline.verify import answer_key


def _check_matrix(correct_matrix: Sequence[Sequence[Any]]) -> None:
    if not correct_matrix:
        raise ValueError("no problems")
    for i, row in enumerate(correct_matrix):
        if not row:
            raise ValueError(f"problem {i} has no samples")


def per_problem_accuracy(correct_matrix: Sequence[Sequence[Any]]) -> list[float]:
    """Fraction of correct samples of each problem."""
    _check_matrix(correct_matrix)
    return [sum(bool(x) for x in row) / len(row) for row in correct_matrix]


def pass_at_1(correct_matrix: Sequence[Sequence[Any]]) -> float:
    """Mean over problems of the mean accuracy over its k samples (problems weigh equally, whatever k)."""
    accuracies = per_problem_accuracy(correct_matrix)
    return sum(accuracies) / len(accuracies)


def mean_stderr(values: Sequence[float]) -> float:
    """Standard error of the mean: sample standard deviation (n - 1) / sqrt(n); 0.0 for fewer than 2 values."""
    n = len(values)
    if n < 2:
        return 0.0
    mean = sum(values) / n
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return math.sqrt(variance / n)


def pass_at_1_stderr(correct_matrix: Sequence[Sequence[Any]]) -> float:
    """Standard error of pass@1 across problems (problems are the sampling unit; samples are averaged first)."""
    return mean_stderr(per_problem_accuracy(correct_matrix))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021):
    1 - C(n-c, k) / C(n, k), computed as a product so it never overflows."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0  # every k-subset contains a correct sample
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def majority_index(answers: Sequence[str | None]) -> int | None:
    """Index of the sample whose answer wins the vote, None when there are no samples.

    Rule: answers are grouped by `answer_key` (equal numbers match across forms, other answers by their
    whitespace-free text); the most frequent key wins; a tie goes to the key that occurs first; samples
    without an answer (None) never win unless every sample lacks one (then index 0). The winner is the
    first sample with the winning key.
    """
    if not answers:
        return None
    keys = [answer_key(a) for a in answers]
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return 0
    first = {}
    for i, k in enumerate(keys):
        if k is not None:
            first.setdefault(k, i)
    winner = max(counts, key=lambda k: (counts[k], -first[k]))
    return first[winner]


def cons_at_k(answers: Sequence[Sequence[str | None]], gold_verdicts: Sequence[Sequence[Any]]) -> float:
    """Majority-vote accuracy: per problem, the verdict of the sample chosen by `majority_index`
    (no answer at all counts as wrong), averaged over problems."""
    if len(answers) != len(gold_verdicts):
        raise ValueError(f"{len(answers)} problems of answers but {len(gold_verdicts)} of verdicts")
    _check_matrix(gold_verdicts)
    score = 0
    for i, (row, verdicts) in enumerate(zip(answers, gold_verdicts)):
        if len(row) != len(verdicts):
            raise ValueError(f"problem {i}: {len(row)} answers but {len(verdicts)} verdicts")
        winner = majority_index(row)
        score += winner is not None and row[winner] is not None and bool(verdicts[winner])
    return score / len(answers)


def summarize(
    records: Iterable[Mapping[str, Any]], correct_key: str = "correct", extracted_key: str = "extracted"
) -> dict[str, float | int]:
    """Metrics from evaluation rows {problem_id, sample_idx, extracted, correct}; `correct_key` and
    `extracted_key` name the verdict and answer fields (the evaluate stage keeps one pair per extraction
    policy: `correct`/`extracted` for answer-correct, `correct_strict`/`extracted_strict` for format-following).

    Problems keep their order of first appearance and samples are ordered by sample_idx. k is the number of
    samples per problem (the smallest, if problems have different counts: pass@k then uses each problem's
    own n with that k; pass@1 and cons@k use all samples).
    """
    problems: dict[Any, dict[int, tuple[str | None, bool]]] = {}
    for row in records:
        try:
            pid, idx = row["problem_id"], int(row["sample_idx"])
            extracted, correct = row.get(extracted_key), bool(row[correct_key])
        except KeyError as e:
            raise ValueError(f"evaluation record without {e.args[0]!r}: {dict(row)}") from None
        samples = problems.setdefault(pid, {})
        if idx in samples:
            raise ValueError(f"duplicate sample {idx} of problem {pid!r}")
        samples[idx] = (extracted, correct)
    if not problems:
        raise ValueError("no evaluation records")
    answers, verdicts = [], []
    for samples in problems.values():
        ordered = [samples[i] for i in sorted(samples)]
        answers.append([a for a, _ in ordered])
        verdicts.append([c for _, c in ordered])
    k = min(len(v) for v in verdicts)
    return {
        "pass@1": pass_at_1(verdicts),
        "pass@1_stderr": pass_at_1_stderr(verdicts),
        "cons@k": cons_at_k(answers, verdicts),
        "pass@k": sum(pass_at_k(len(v), sum(v), k) for v in verdicts) / len(verdicts),
        "n_problems": len(verdicts),
        "k": k,
    }


def paired_difference(
    records: Iterable[Mapping[str, Any]], model_a: str, model_b: str, benchmark: str, z: float = 1.96
) -> dict[str, float | int | str] | None:
    """pass@1 of `model_a` minus `model_b` on the problems both answered, with the SE of the paired difference.

    Per problem d_i = acc_a(i) - acc_b(i) (each the mean over its k samples); the difference is mean(d) and its
    standard error std(d)/sqrt(n): pairing removes the between-problem variance that two independent SEs would
    count twice. The verdict says "no clear difference" when the 95% interval (mean ± 1.96 SE) includes 0.
    None when the two models share no problem.
    """
    acc: dict[str, dict[Any, list[bool]]] = {model_a: {}, model_b: {}}
    for row in records:
        if row.get("benchmark") == benchmark and row.get("model") in acc:
            acc[row["model"]].setdefault(row["problem_id"], []).append(bool(row["correct"]))
    shared = [p for p in acc[model_a] if p in acc[model_b]]
    if not shared:
        return None
    diffs = [sum(acc[model_a][p]) / len(acc[model_a][p]) - sum(acc[model_b][p]) / len(acc[model_b][p]) for p in shared]
    mean = sum(diffs) / len(diffs)
    se = mean_stderr(diffs)
    low, high = mean - z * se, mean + z * se
    verdict = "better" if low > 0 else "worse" if high < 0 else "no clear difference"
    return {
        "difference": mean,
        "stderr": se,
        "ci_low": low,
        "ci_high": high,
        "n_problems": len(shared),
        "verdict": verdict,
    }


def reasoning_lines(text: str) -> int:
    """Non-empty lines inside the completion's <think> block (0 without one)."""
    start, end = text.find("<think>"), text.find("</think>")
    if start < 0:
        return 0
    body = text[start + len("<think>") : end if end > start else len(text)]
    return sum(bool(line.strip()) for line in body.splitlines())


def habit_breakdown(
    records: Iterable[Mapping[str, Any]], model: str, benchmark: str, min_lines: int = 2
) -> dict[str, float | int] | None:
    """How a model's samples split between step-by-step reasoning (a <think> of at least `min_lines` lines)
    and the rest, with the accuracy of each: what a change in pass@1 is made of (a habit chosen more often, or
    the same habit done better). None when the model has no sample on `benchmark`."""
    rows = [r for r in records if r.get("model") == model and r.get("benchmark") == benchmark]
    if not rows:
        return None
    steps = [r for r in rows if reasoning_lines(r.get("text", "")) >= min_lines]
    other = [r for r in rows if reasoning_lines(r.get("text", "")) < min_lines]

    def acc(group):
        return sum(bool(r["correct"]) for r in group) / len(group) if group else float("nan")

    return {
        "samples": len(rows),
        "step_share": len(steps) / len(rows),
        "step_accuracy": acc(steps),
        "other_accuracy": acc(other),
    }


def first_last_fifth(values: Sequence[float]) -> tuple[float, float]:
    """Mean of the first and of the last fifth of a curve (at least one point each): how an RL run moved."""
    n = max(1, len(values) // 5)
    return sum(values[:n]) / n, sum(values[-n:]) / n
