"""`r1 verify`: score a JSONL file of model responses with the verifier and report how it agrees with labels.

Each record is checked with `r1_pipeline.verify.check` under one extraction policy (`eval` by default: how
the standard harnesses score any model's output; `strict`: the reward's format-only rule). The report
gives accuracy, agreement with an independent label (overall, per group, 2x2 confusion), verification
errors (timeouts and exceptions) per group, and throughput. Per-item verdicts can be written as JSONL.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1_pipeline.verify import ERROR, GOLD_FORMATS, POLICIES, TRUE, check, normalize_gold


class VerifyInputError(ValueError):
    """A JSONL file that cannot be scored; the message names the file, line and field."""


@dataclass
class Confusion:
    """2x2 counts of (label, ours)."""

    label_true_ours_true: int = 0
    label_true_ours_false: int = 0
    label_false_ours_true: int = 0
    label_false_ours_false: int = 0

    def add(self, label: bool, ours: bool) -> None:
        name = f"label_{str(label).lower()}_ours_{str(ours).lower()}"
        setattr(self, name, getattr(self, name) + 1)


@dataclass
class GroupStats:
    n: int = 0
    correct: int = 0  # our verdict true
    labelled: int = 0
    label_true: int = 0
    agree: int = 0
    timeouts: int = 0  # verdict `error` because math-verify ran out of time
    errors: int = 0  # verdict `error` because of an exception

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def agreement(self) -> float | None:
        return self.agree / self.labelled if self.labelled else None


@dataclass
class ItemVerdict:
    line: int
    group: str | None
    extracted: str | None
    verdict: str  # "true", "false" or "error"
    label: bool | None = None
    uid: Any = None
    reason: str | None = None  # why a verdict is `error`

    @property
    def correct(self) -> bool:
        return self.verdict == TRUE


@dataclass
class VerifyResult:
    path: str
    items: list[ItemVerdict]
    seconds: float
    policy: str = "eval"
    label_field: str | None = None
    groups: dict[str, GroupStats] = field(default_factory=dict)
    overall: GroupStats = field(default_factory=GroupStats)
    confusion: Confusion | None = None

    @property
    def throughput(self) -> float:
        """Responses verified per second (extraction + verification, excluding file reading)."""
        return len(self.items) / self.seconds if self.seconds > 0 else float("inf")

    @property
    def agreement(self) -> float | None:
        return self.overall.agreement

    def disagreements(self) -> list[ItemVerdict]:
        return [it for it in self.items if it.label is not None and it.label != it.correct]


_TRUE = {"true", "1", "yes", "correct", "y", "t"}
_FALSE = {"false", "0", "no", "incorrect", "wrong", "n", "f"}


def _as_label(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    return None


def _response_text(value: Any) -> str | None:
    """A response field as text: a string, or a chat list whose last message content is the response. Not
    chat.completion_text, which joins every message: a graded record's chat list usually holds the prompt too."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        content = value[-1].get("content")
        return content if isinstance(content, str) else None
    return None


def _read_records(path: Path) -> list[tuple[int, dict]]:
    if not path.exists():
        raise VerifyInputError(f"{path}: file not found")
    if path.is_dir():
        raise VerifyInputError(f"{path}: is a directory, expected a JSONL file")
    records = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise VerifyInputError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(record, dict):
                raise VerifyInputError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            records.append((lineno, record))
    if not records:
        raise VerifyInputError(f"{path}: no records")
    return records


def _field(path: Path, lineno: int, record: dict, name: str) -> Any:
    if name not in record:
        available = ", ".join(sorted(record)[:20])
        raise VerifyInputError(f"{path}:{lineno}: field {name!r} missing (fields: {available})")
    return record[name]


def _score_one(args: tuple[str | None, str, str]) -> tuple[str | None, str, str | None]:
    response, gold, policy = args
    c = check(response, gold, policy)
    return c.extracted, c.verdict, c.reason


def score_jsonl(
    path: str | os.PathLike,
    response_field: str = "response",
    gold_field: str = "gold_answer",
    label_field: str | None = None,
    gold_format: str = "plain",
    workers: int = 1,
    group_field: str | None = None,
    policy: str = "eval",
) -> VerifyResult:
    """Verify every record of a JSONL file under `policy`; with `label_field`, measure agreement with those
    labels. Groups (for per-benchmark numbers) come from `group_field`, else a `benchmark` or `source` field
    when the records have one. Raises VerifyInputError with the line and field on bad input.
    """
    path = Path(path)
    if gold_format not in GOLD_FORMATS:
        raise VerifyInputError(f"gold_format must be one of {', '.join(GOLD_FORMATS)}, got {gold_format!r}")
    if policy not in POLICIES:
        raise VerifyInputError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    records = _read_records(path)
    if group_field is None:
        group_field = next((f for f in ("benchmark", "source") if f in records[0][1]), None)

    jobs, meta = [], []
    for lineno, record in records:
        raw_response = _field(path, lineno, record, response_field)
        response = _response_text(raw_response)
        if response is None and raw_response is not None:
            raise VerifyInputError(
                f"{path}:{lineno}: field {response_field!r} must be a string or a chat message list, "
                f"got {type(raw_response).__name__}"
            )
        gold = normalize_gold(_field(path, lineno, record, gold_field), gold_format)
        if gold is None:
            raise VerifyInputError(f"{path}:{lineno}: field {gold_field!r} has no gold answer (format {gold_format!r})")
        label = None
        if label_field is not None:
            label = _as_label(_field(path, lineno, record, label_field))
            if label is None:
                raise VerifyInputError(
                    f"{path}:{lineno}: field {label_field!r} must be true/false, got {record[label_field]!r}"
                )
        group = record.get(group_field) if group_field else None
        jobs.append((response, gold, policy))
        meta.append((lineno, None if group is None else str(group), label, record.get("uid", record.get("id"))))

    start = time.perf_counter()
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            verdicts = pool.map(_score_one, jobs, chunksize=max(1, len(jobs) // (workers * 8)))
    else:
        verdicts = [_score_one(job) for job in jobs]
    seconds = time.perf_counter() - start

    result = VerifyResult(str(path), [], seconds, policy=policy, label_field=label_field)
    if label_field is not None:
        result.confusion = Confusion()
    for (lineno, group, label, uid), (extracted, verdict, reason) in zip(meta, verdicts):
        item = ItemVerdict(lineno, group, extracted, verdict, label, uid, reason)
        result.items.append(item)
        stats = [result.overall] + ([result.groups.setdefault(group, GroupStats())] if group else [])
        for s in stats:
            s.n += 1
            s.correct += item.correct
            if verdict == ERROR:
                if reason and reason.startswith("timeout"):
                    s.timeouts += 1
                else:
                    s.errors += 1
            if label is not None:
                s.labelled += 1
                s.label_true += label
                s.agree += label == item.correct
        if label is not None:
            result.confusion.add(label, item.correct)
    return result


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def format_report(result: VerifyResult) -> str:
    """A readable summary: accuracy, agreement and verification errors per group, the confusion matrix and
    throughput."""
    o = result.overall
    lines = [
        f"Verified {o.n} responses from {result.path} with policy {result.policy!r} in {result.seconds:.2f} s "
        f"({result.throughput:,.0f} responses/s)",
        "",
    ]
    labelled = result.label_field is not None
    header = f"{'group':<20} {'n':>7} {'ours correct':>13}"
    if labelled:
        header += f" {'label correct':>14} {'agree':>7} {'agreement':>10}"
    header += f" {'timeouts':>9} {'errors':>7}"
    lines.append(header)
    lines.append("-" * len(header))
    rows = sorted(result.groups.items()) + [("all", o)]
    for name, s in rows:
        row = f"{name:<20} {s.n:>7} {_pct(s.accuracy):>13}"
        if labelled:
            label_acc = s.label_true / s.labelled if s.labelled else None
            row += f" {_pct(label_acc):>14} {s.agree:>7} {_pct(s.agreement):>10}"
        row += f" {s.timeouts:>9} {s.errors:>7}"
        lines.append(row)
    if result.confusion is not None:
        c = result.confusion
        lines += [
            "",
            f"Confusion matrix (rows: {result.label_field!r}, columns: our verdict)",
            f"{'':<14} {'ours=true':>10} {'ours=false':>11}",
            f"{'label=true':<14} {c.label_true_ours_true:>10} {c.label_true_ours_false:>11}",
            f"{'label=false':<14} {c.label_false_ours_true:>10} {c.label_false_ours_false:>11}",
        ]
        disagreements = result.disagreements()
        if disagreements:
            lines += ["", f"Disagreements: {len(disagreements)} (first 10: line, group, label, ours, extracted)"]
            for it in disagreements[:10]:
                shown = "None" if it.extracted is None else repr(it.extracted[:60])
                lines.append(f"  line {it.line:>6}  {it.group or '-':<12} {it.label!s:<5} {it.verdict:<5} {shown}")
    failed = [it for it in result.items if it.verdict == ERROR]
    if failed:
        lines += ["", f"Verification errors: {len(failed)} (first 10: line, group, reason, extracted)"]
        for it in failed[:10]:
            shown = "None" if it.extracted is None else repr(it.extracted[:60])
            lines.append(f"  line {it.line:>6}  {it.group or '-':<12} {it.reason or '-':<24} {shown}")
    return "\n".join(lines)


def write_verdicts(result: VerifyResult, output: str | os.PathLike) -> None:
    """Per-item verdicts as JSONL, written atomically (a temp file in the same folder, then os.replace)."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for it in result.items:
                row = {
                    "line": it.line,
                    "uid": it.uid,
                    "group": it.group,
                    "extracted": it.extracted,
                    "correct": it.correct,
                    "verdict": it.verdict,
                }
                if it.reason is not None:
                    row["reason"] = it.reason
                if it.label is not None:
                    row.update(label=it.label, agree=it.label == it.correct)
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_verify(
    file: str | os.PathLike,
    response_field: str = "response",
    gold_field: str = "gold_answer",
    label_field: str | None = None,
    gold_format: str = "plain",
    group_field: str | None = None,
    output: str | os.PathLike | None = None,
    workers: int = 1,
    policy: str = "eval",
) -> int:
    """`r1 verify`: score a JSONL file, print the report, optionally write verdicts. Returns an exit code
    (0 done, 2 bad input)."""
    try:
        result = score_jsonl(file, response_field, gold_field, label_field, gold_format, workers, group_field, policy)
    except VerifyInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_report(result))
    if output is not None:
        write_verdicts(result, output)
        print(f"\nWrote {len(result.items)} verdicts to {output}")
    return 0
