"""Source readers: field mapping, gold-answer extraction, Parquet, Hugging Face by id, clear errors."""

import json

import pytest

from r1_pipeline.config import SourceParams, SyntheticTaskParams
from r1_pipeline.data.sources import DataError, clean_solution, iter_hf, load_source, plain_answer

TASK = SyntheticTaskParams()


def write_jsonl(path, rows, blank_lines_after=()):
    with open(path, "w") as f:
        for i, r in enumerate(rows):
            f.write(json.dumps(r) + "\n")
            if i in blank_lines_after:
                f.write("\n")
    return path


def load(src, tmp_path, role="rl", **kw):
    return load_source(src, role=role, seed=0, task=TASK, root=tmp_path, **kw)


GSM8K_ROWS = [
    {"question": "Tom has 2 apples and buys 3.  How many?", "answer": "2+3 = <<2+3=5>>5 apples.\n#### 5"},
    {"question": "A big sum?", "answer": "It is 1000+234 = <<1000+234=1234>>1,234.\n#### 1,234"},
    {"question": "No final answer line", "answer": "I forgot the hashes."},
]


def test_gsm8k_answers_and_reasoning(tmp_path):
    write_jsonl(tmp_path / "g.jsonl", GSM8K_ROWS)
    src = SourceParams(
        name="gsm",
        type="jsonl",
        path="g.jsonl",
        problem_field="question",
        answer_field="answer",
        answer_format="gsm8k",
        solution_field="answer",
    )
    res = load(src, tmp_path)
    assert [(r.id, r.answer) for r in res.records] == [("gsm-0", "5"), ("gsm-1", "1234")]
    assert res.skipped_no_answer == 1 and res.rows_read == 3
    # the worked solution becomes <think> text: no `####` line, no calculator annotations
    assert res.records[1].solution == "It is 1000+234 = 1,234."
    assert res.records[0].problem == "Tom has 2 apples and buys 3.  How many?"
    assert clean_solution("a\n#### 7", "boxed") == "a\n#### 7"  # only GSM8K solutions are rewritten


def test_math_boxed_and_numina_style(tmp_path):
    rows = [
        {"problem": "Half?", "solution": "So it is $\\boxed{\\frac{1}{2}}$.", "answer": ""},
        {"problem": "Pair?", "solution": "First \\boxed{1}, then finally \\boxed{(3, \\pi)}.", "answer": "(3, \\pi)"},
        {"problem": "Nothing boxed", "solution": "no box here", "answer": None},
    ]
    write_jsonl(tmp_path / "m.jsonl", rows)
    boxed = SourceParams(name="m", type="jsonl", path="m.jsonl", answer_field="solution", answer_format="boxed")
    res = load(boxed, tmp_path)
    assert [r.answer for r in res.records] == ["\\frac{1}{2}", "(3, \\pi)"]
    assert res.skipped_no_answer == 1
    # NuminaMath / OpenR1-Math: answer field, solution with \boxed as the reasoning and as a fallback answer
    numina = SourceParams(name="n", type="jsonl", path="m.jsonl", answer_field="answer", solution_field="solution")
    res = load(numina, tmp_path)
    assert [r.answer for r in res.records] == ["\\frac{1}{2}", "(3, \\pi)"]
    assert res.records[1].solution.startswith("First \\boxed{1}")


def test_plain_answers_of_any_type():
    assert plain_answer(27.0) == "27"  # AMC 2023 stores floats
    assert plain_answer(70) == "70"  # AIME 2025 stores ints
    assert plain_answer(" 204 ") == "204"
    assert plain_answer(2.5) == "2.5"
    assert plain_answer("") is None and plain_answer(None) is None


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"q": ["One plus one?", "Two times two?"], "a": [2.0, 4.0], "sol": ["1+1=2", "2*2=4"]})
    pq.write_table(table, tmp_path / "d.parquet")
    src = SourceParams(
        name="p", type="parquet", path="d.parquet", problem_field="q", answer_field="a", solution_field="sol"
    )
    res = load(src, tmp_path)
    assert [(r.id, r.problem, r.answer, r.solution) for r in res.records] == [
        ("p-0", "One plus one?", "2", "1+1=2"),
        ("p-1", "Two times two?", "4", "2*2=4"),
    ]
    bad = SourceParams(name="p", type="parquet", path="d.parquet", problem_field="question", answer_field="a")
    with pytest.raises(DataError, match=r"d\.parquet row 1: missing field 'question'"):
        load(bad, tmp_path)


def test_missing_field_names_file_line_and_field(tmp_path):
    rows = [{"problem": "a", "answer": "1"}, {"problem": "b", "answer": "2"}, {"problem": "c"}]
    write_jsonl(tmp_path / "x.jsonl", rows, blank_lines_after={0})  # a blank line: line numbers stay true
    src = SourceParams(name="x", type="jsonl", path="x.jsonl")
    with pytest.raises(DataError) as err:
        load(src, tmp_path)
    msg = str(err.value)
    assert "x.jsonl:4:" in msg and "missing field 'answer'" in msg and "\n" not in msg
    solution = SourceParams(name="x", type="jsonl", path="x.jsonl", solution_field="worked")
    with pytest.raises(DataError, match=r"x\.jsonl:1: missing field 'worked'"):
        load(solution, tmp_path)


def test_invalid_json_names_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"problem": "a", "answer": "1"}\n{"problem": oops}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: invalid JSON"):
        load(SourceParams(name="b", type="jsonl", path="bad.jsonl"), tmp_path)


def test_limit_is_a_seeded_sample_in_source_order(tmp_path):
    write_jsonl(tmp_path / "many.jsonl", [{"problem": f"p{i}", "answer": str(i)} for i in range(50)])
    src = SourceParams(name="s", type="jsonl", path="many.jsonl", limit=10)
    a, b = load(src, tmp_path).records, load(src, tmp_path).records
    assert a == b and len(a) == 10
    idx = [int(r.id.split("-")[1]) for r in a]
    assert idx == sorted(idx) and idx != list(range(10))
    other = load_source(src, role="rl", seed=1, task=TASK, root=tmp_path).records
    assert other != a


def test_hf_by_id_through_a_local_file(tmp_path):
    """The `hf` path calls datasets.load_dataset(hf_id, hf_config, split=...); here the `json` builder reads a
    local file (nothing can be downloaded from the hub on these machines)."""
    write_jsonl(tmp_path / "hf.jsonl", GSM8K_ROWS[:2])
    src = SourceParams(
        name="gsm8k",
        type="hf",
        hf_id="json",
        split="train",
        problem_field="question",
        answer_field="answer",
        answer_format="gsm8k",
        solution_field="answer",
    )
    kwargs = {"data_files": str(tmp_path / "hf.jsonl"), "cache_dir": str(tmp_path / "cache")}
    rows = list(iter_hf(src, **kwargs))
    assert rows[0][0] == "hf:json[train] row 1"
    res = load(src, tmp_path, role="cold_start", hf_loader=lambda s: iter_hf(s, **kwargs))
    assert [(r.id, r.answer) for r in res.records] == [("gsm8k-0", "5"), ("gsm8k-1", "1234")]
    assert res.records[0].solution == "2+3 = 5 apples."
    bad = src.model_copy(update={"problem_field": "problem"})
    with pytest.raises(DataError, match=r"hf:json\[train\] row 1: missing field 'problem'"):
        load(bad, tmp_path, hf_loader=lambda s: iter_hf(s, **kwargs))


def test_hf_load_failure_is_one_line(tmp_path):
    src = SourceParams(name="h", type="hf", hf_id="json", split="train")
    with pytest.raises(DataError, match=r"^hf:json\[train\]: cannot load") as err:
        list(iter_hf(src, data_files=str(tmp_path / "absent.jsonl"), cache_dir=str(tmp_path / "c")))
    assert "\n" not in str(err.value)


def test_synthetic_source(tmp_path):
    src = SourceParams(name="arith", type="synthetic", split="heldout", limit=50)
    res = load(src, tmp_path, role="eval")
    assert len(res.records) == 50
    r = res.records[0]
    assert r.id.startswith("arith-") and r.answer == str(eval(r.problem))  # noqa: S307
    assert r.difficulty == r.problem.count("+") + r.problem.count("-")
    assert load(src, tmp_path, role="eval").records == res.records
    with pytest.raises(DataError, match="arith"):
        load(SourceParams(name="arith", type="synthetic", split="validation"), tmp_path)
