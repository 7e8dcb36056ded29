"""Read every kind of data source into normalized `SourceRecord`s.

Source types (SourceParams.type):
- `synthetic`: the arithmetic-chain task (r1_pipeline.data.synthetic); `limit` is the number of problems.
- `jsonl`, `parquet`: a local file, `path` relative to the project root (the params file's folder).
- `hf`: a Hugging Face dataset, `datasets.load_dataset(hf_id, hf_config, split=split)`.

Field mapping is the same for every file/dataset: `problem_field`, `answer_field` read with `answer_format`
(`plain` as is, `gsm8k` the text after `####` with commas removed, `boxed` the last \\boxed{} of a solution),
and an optional `solution_field` (the worked solution; the <think> text of cold-start examples).
NuminaMath/OpenR1-Math style records (problem, solution with \\boxed, answer) work with
`answer_field: answer, solution_field: solution`: a record whose `answer` is empty falls back to the last
\\boxed{} of its solution.

A record that lacks a mapped field is an error naming the file, the line (or row) and the field. A record
whose gold answer is empty or cannot be extracted is skipped and counted (`skipped_no_answer`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from r1_pipeline.config import SourceParams, SyntheticTaskParams
from r1_pipeline.data import synthetic
from r1_pipeline.data.records import SourceRecord
from r1_pipeline.errors import StageError

# Problems a synthetic source generates when it sets no `limit`.
DEFAULT_SYNTHETIC_COUNT = 1000


class DataError(StageError, ValueError):
    """A data source that cannot be read; the message names the file/dataset, the line and the field."""


@dataclass
class SourceResult:
    records: list[SourceRecord]
    rows_read: int = 0
    skipped_no_answer: int = 0
    skipped_no_solution: int = 0
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------- readers


def iter_jsonl(path: str | Path) -> Iterator[tuple[str, dict]]:
    """(location, record) per non-blank line; location is `path:line`."""
    path = Path(path)
    try:
        f = open(path, encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot open ({exc.strerror})") from None
    with f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
            if not isinstance(rec, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
            yield f"{path}:{lineno}", rec


def iter_parquet(path: str | Path) -> Iterator[tuple[str, dict]]:
    """(location, record) per row; location is `path row N` (1-based)."""
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for unreadable files
        raise DataError(f"{path}: cannot read as Parquet ({exc})") from None
    for i, rec in enumerate(table.to_pylist(), 1):
        yield f"{path} row {i}", rec


def iter_hf(src: SourceParams, **load_kwargs: Any) -> Iterator[tuple[str, dict]]:
    """(location, record) per row of `load_dataset(hf_id, hf_config, split=split, **load_kwargs)`.

    `load_kwargs` is for callers that point the loader at local files (e.g. `data_files=` with the `json` or
    `parquet` builder); the stage itself passes none.
    """
    import datasets

    name = f"hf:{src.hf_id}" + (f"/{src.hf_config}" if src.hf_config else "") + f"[{src.split}]"
    try:
        ds = datasets.load_dataset(src.hf_id, src.hf_config, split=src.split, **load_kwargs)
    except Exception as exc:  # hub/network/builder errors: name the dataset, keep one line
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{name}: cannot load ({msg})") from None
    for i, rec in enumerate(ds, 1):
        yield f"{name} row {i}", rec


def iter_rows(src: SourceParams, root: Path, **hf_kwargs: Any) -> Iterator[tuple[str, dict]]:
    if src.type == "jsonl":
        return iter_jsonl(root / src.path)
    if src.type == "parquet":
        return iter_parquet(root / src.path)
    if src.type == "hf":
        return iter_hf(src, **hf_kwargs)
    raise ValueError(f"source type {src.type} has no rows to read")


# ---------------------------------------------------------------------------------------------- normalizing


def plain_answer(value: Any) -> Optional[str]:
    """A gold answer as text: strings stripped, integral floats without `.0` (AMC's 27.0 -> "27")."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return str(int(value))
        return repr(value)
    text = str(value).strip()
    return text or None


def extract_answer(value: Any, fmt: str) -> Optional[str]:
    """The gold answer read from `value` with `answer_format`; None when there is none."""
    from r1_pipeline.verify import gold_from_boxed, gold_from_gsm8k

    if fmt == "plain":
        return plain_answer(value)
    if value is None:
        return None
    if fmt == "gsm8k":
        text = str(value)
        if "####" not in text:
            return None
        return plain_answer(gold_from_gsm8k(text))
    if fmt == "boxed":
        return plain_answer(gold_from_boxed(str(value)))
    raise ValueError(f"unknown answer_format {fmt!r}")


_GSM8K_CALC = re.compile(r"<<[^<>]*>>")
_GSM8K_FINAL = re.compile(r"\n?\s*####.*\Z", re.S)


def clean_solution(text: str, fmt: str) -> str:
    """The worked solution as <think> text. For GSM8K, drop the `#### answer` line (the answer goes in
    <answer>) and the `<<48/2=24>>` calculator annotations."""
    text = str(text)
    if fmt == "gsm8k":
        text = _GSM8K_FINAL.sub("", _GSM8K_CALC.sub("", text))
    return text.strip()


def _field(rec: dict, name: str, where: str, src: SourceParams) -> Any:
    if name not in rec:
        fields = ", ".join(sorted(map(str, rec))) or "none"
        raise DataError(f"{where}: missing field {name!r} (source {src.name}; fields: {fields})")
    return rec[name]


def normalize_rows(src: SourceParams, rows: Iterator[tuple[str, dict]]) -> SourceResult:
    """Map raw rows to SourceRecords with the source's field mapping; ids are `<name>-<row index>`."""
    result = SourceResult(records=[])
    for index, (where, rec) in enumerate(rows):
        result.rows_read += 1
        problem = _field(rec, src.problem_field, where, src)
        raw_answer = _field(rec, src.answer_field, where, src)
        solution = _field(rec, src.solution_field, where, src) if src.solution_field else None
        answer = extract_answer(raw_answer, src.answer_format)
        if answer is None and src.answer_format == "plain" and solution:
            answer = extract_answer(solution, "boxed")  # NuminaMath-style records with an empty `answer`
        problem_text = str(problem).strip() if problem is not None else ""
        if answer is None or not problem_text:
            result.skipped_no_answer += 1
            continue
        result.records.append(
            SourceRecord(
                id=f"{src.name}-{index}",
                source=src.name,
                problem=problem_text,
                answer=answer,
                solution=clean_solution(solution, src.answer_format) if solution else None,
            )
        )
    return result


def _limit(records: list[SourceRecord], limit: Optional[int], seed: int, role: str, name: str) -> list[SourceRecord]:
    """At most `limit` records, a seeded random sample kept in source order."""
    if limit is None or len(records) <= limit:
        return records
    order = list(range(len(records)))
    synthetic.derive_rng(seed, "limit", role, name).shuffle(order)
    return [records[i] for i in sorted(order[:limit])]


def load_source(
    src: SourceParams,
    *,
    role: str,
    seed: int,
    task: SyntheticTaskParams,
    root: str | Path = ".",
    hf_loader: Optional[Callable[[SourceParams], Iterator[tuple[str, dict]]]] = None,
) -> SourceResult:
    """Read one source for `role` (rl, cold_start, eval) into SourceRecords.

    Synthetic sources generate `limit` (default DEFAULT_SYNTHETIC_COUNT) distinct expressions of their split
    with an RNG derived from (seed, role, name), so RL and cold-start sources of the same name differ.
    `hf_loader` replaces `iter_hf` (tests point it at a local file).
    """
    if src.type == "synthetic":
        rng = synthetic.derive_rng(seed, role, src.name)
        try:
            chains = synthetic.generate_chains(task, src.limit or DEFAULT_SYNTHETIC_COUNT, src.split, rng)
        except ValueError as exc:
            raise DataError(f"source {src.name}: {exc}") from None
        # Cold-start examples show the scratchpad with probability cold_start_scratchpad_fraction, else a short
        # think; RL and eval records always carry the scratchpad (it is only a reference solution there).
        share = task.cold_start_scratchpad_fraction if role == "cold_start" else 1.0
        style_rng = synthetic.derive_rng(seed, role, src.name, "style")
        records = [synthetic.chain_record(src.name, c, style_rng.random() < share) for c in chains]
        return SourceResult(records=records, rows_read=len(records))
    rows = hf_loader(src) if (src.type == "hf" and hf_loader) else iter_rows(src, Path(root))
    result = normalize_rows(src, rows)
    result.records = _limit(result.records, src.limit, seed, role, src.name)
    return result
