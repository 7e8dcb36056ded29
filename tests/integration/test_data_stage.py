"""`python -m tasks.data` end to end, as DVC runs it: a subprocess in a fresh working directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from r1_pipeline.config import Config, profile_dict
from r1_pipeline.io import read_jsonl

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT.parent / "shared" / "data" / "benchmarks"
DATA = Path("outputs") / "data"


def run_stage(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "tasks.data", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )


def write_params(cwd: Path, raw: dict) -> None:
    (cwd / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def tiny_params() -> dict:
    raw = Config().model_dump(mode="json")
    raw["data"]["synthetic"]["corpus_documents"] = 2000
    return raw


def snapshot(cwd: Path) -> dict[str, bytes]:
    # outputs/data only: outputs/metrics/data.json holds the stage's wall time, which differs run to run
    return {str(p.relative_to(cwd)): p.read_bytes() for p in sorted((cwd / DATA).rglob("*")) if p.is_file()}


def rows(path: Path) -> list[dict]:
    # not str.splitlines(): JSONL written with ensure_ascii=False may hold U+2028 inside strings
    return read_jsonl(path)


def test_tiny_profile_outputs_stats_and_determinism(tmp_path):
    write_params(tmp_path, tiny_params())
    first = run_stage(tmp_path)
    assert first.returncode == 0, first.stderr
    files = snapshot(tmp_path)
    assert set(files) == {
        f"{DATA}/{name}"
        for name in (
            "rl_train.jsonl",
            "rl_val.jsonl",
            "cold_start.jsonl",
            "corpus.jsonl",
            "stats.json",
            "eval/arith_heldout.jsonl",
        )
    }
    stats = json.loads(files[f"{DATA}/stats.json"])
    assert stats["counts"] == {
        "rl_train": 2850,
        "rl_val": 150,
        "cold_start": 256,
        "corpus": 2000,
        "eval.arith_heldout": 200,
    }
    assert stats["corpus"]["style.scratchpad"] == 1000 and stats["corpus"]["error_documents"] == 200
    train = rows(tmp_path / DATA / "rl_train.jsonl")
    val = rows(tmp_path / DATA / "rl_val.jsonl")
    held = rows(tmp_path / DATA / "eval" / "arith_heldout.jsonl")
    cold = rows(tmp_path / DATA / "cold_start.jsonl")
    corpus = rows(tmp_path / DATA / "corpus.jsonl")
    assert set(train[0]) == {"id", "source", "problem", "answer", "difficulty"}
    assert set(cold[0]) == {"id", "source", "problem", "answer", "reasoning"}
    assert set(corpus[0]) == {"prompt", "completion", "style"}
    held_problems = {r["problem"] for r in held}
    assert not held_problems & {r["problem"] for r in train + val + cold}
    assert not held_problems & {r["prompt"] for r in corpus}
    assert not {r["id"] for r in train} & {r["id"] for r in val}
    assert all(r["answer"] == str(eval(r["problem"])) for r in train + held + cold)  # noqa: S307
    # cold start: step-by-step scratchpads ending in the answer, or (the default mix) a think that restates
    from r1_pipeline.data.synthetic import check_scratchpad

    steps = [r for r in cold if "\n" in r["reasoning"]]
    assert all(
        check_scratchpad(r["reasoning"].split("\n")) and r["reasoning"].split("\n")[-1].lstrip("_") == r["answer"]
        for r in steps
    )
    assert all(r["reasoning"] == r["problem"] for r in cold if "\n" not in r["reasoning"])
    assert 0.15 < len(steps) / len(cold) < 0.35  # cold_start_scratchpad_fraction 0.25

    # same params, same seed: byte-identical outputs
    second = run_stage(tmp_path)
    assert second.returncode == 0, second.stderr
    assert snapshot(tmp_path) == files
    # another seed (a --set override) draws other problems
    third = run_stage(tmp_path, "--set", "data.seed=1")
    assert third.returncode == 0, third.stderr
    assert (tmp_path / DATA / "rl_train.jsonl").read_bytes() != files[f"{DATA}/rl_train.jsonl"]


@pytest.mark.skipif(not BENCHMARKS.is_dir(), reason="../shared/data/benchmarks is not next to the project")
def test_local_benchmarks_profile(tmp_path):
    raw = profile_dict("local-benchmarks")
    for section in ("rl_sources", "cold_start_sources", "eval_sets"):
        for src in raw["data"][section]:
            if src.get("path"):  # relative to the project root; the test runs elsewhere
                src["path"] = str((ROOT / src["path"]).resolve())
    write_params(tmp_path, raw)
    proc = run_stage(tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / DATA

    math500 = rows(out / "eval" / "math500.jsonl")
    raw_math = rows(BENCHMARKS / "math500" / "test.jsonl")
    assert len(math500) == 500
    assert math500[0]["id"] == "math500-0"
    assert math500[0]["answer"] == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert [r["answer"] for r in math500] == [r["answer"] for r in raw_math]
    assert [r["problem"] for r in math500] == [r["problem"] for r in raw_math]

    gsm_test = rows(out / "eval" / "gsm8k_test.jsonl")
    raw_test = rows(BENCHMARKS / "gsm8k" / "test.jsonl")
    assert len(gsm_test) == 1319
    assert gsm_test[0]["answer"] == "18" and gsm_test[0]["problem"].startswith("Janet’s ducks lay 16 eggs")
    assert [r["answer"] for r in gsm_test] == [r["answer"].split("####")[-1].strip().replace(",", "") for r in raw_test]

    assert rows(out / "eval" / "aime24.jsonl")[0]["answer"] == "204"
    assert rows(out / "eval" / "aime25.jsonl")[0]["answer"] == "70"
    assert rows(out / "eval" / "amc23.jsonl")[0]["answer"] == "27"  # stored as 27.0

    rl = {r["id"]: r for r in rows(out / "rl_train.jsonl") + rows(out / "rl_val.jsonl")}
    assert rl["gsm8k_train-0"]["answer"] == "72"
    assert rl["gsm8k_train-0"]["problem"].startswith("Natalia sold clips to 48 of her friends")
    raw_train = rows(BENCHMARKS / "gsm8k" / "train.jsonl")
    comma = next(i for i, r in enumerate(raw_train) if "#### 1,080" in r["answer"])
    assert rl[f"gsm8k_train-{comma}"]["answer"] == "1080"

    cold = rows(out / "cold_start.jsonl")
    assert len(cold) > 1900
    assert all("####" not in c["reasoning"] and "<<" not in c["reasoning"] for c in cold)
    assert (out / "corpus.jsonl").read_text() == ""  # no synthetic training source, no corpus

    stats = json.loads((out / "stats.json").read_text())
    # GSM8K train shares 8-grams with GSM8K test: those prompts are removed and counted
    assert stats["eval_sets"]["gsm8k_test"]["contaminated_rl"] > 0
    assert stats["rl_sources"]["gsm8k_train"]["contaminated"] == stats["eval_sets"]["gsm8k_test"]["contaminated_rl"]
    test_problems = {" ".join(r["question"].lower().split()) for r in raw_test}
    assert not any(" ".join(r["problem"].lower().split()) in test_problems for r in rl.values())
    assert stats["counts"]["rl_train"] + stats["counts"]["rl_val"] == stats["rl_sources"]["gsm8k_train"]["kept"]


def _unknown_key(raw, tmp):
    raw["data"]["sed"] = 3
    return "data.sed"


def _wrong_type(raw, tmp):
    raw["data"]["seed"] = "abc"
    return "data.seed"


def _missing_file(raw, tmp):
    raw["data"]["rl_sources"] = [{"name": "mine", "type": "jsonl", "path": "nope/missing.jsonl"}]
    return "data.rl_sources[0].path"


def _missing_field(raw, tmp):
    (tmp / "bad.jsonl").write_text('{"problem": "1+1", "answer": "2"}\n{"problem": "2+2"}\n')
    raw["data"]["rl_sources"] = [{"name": "mine", "type": "jsonl", "path": "bad.jsonl"}]
    return "bad.jsonl:2: missing field 'answer'"


def _empty_eval_set(raw, tmp):
    (tmp / "empty.jsonl").write_text("")
    raw["data"]["eval_sets"].append({"name": "mine", "type": "jsonl", "path": "empty.jsonl"})
    return "data.eval_sets: mine (path empty.jsonl) has 0 problems: the source has no rows"


def _eval_set_without_answers(raw, tmp):
    (tmp / "noanswers.jsonl").write_text('{"problem": "1+1", "answer": ""}\n{"problem": "2+2", "answer": null}\n')
    raw["data"]["eval_sets"] = [{"name": "mine", "type": "jsonl", "path": "noanswers.jsonl"}]
    return "mine (path noanswers.jsonl) has 0 problems: all 2 rows lack a usable gold answer"


def _empty_cold_start(raw, tmp):
    (tmp / "empty.jsonl").write_text("")
    raw["data"]["cold_start_sources"] = [{"name": "c", "type": "jsonl", "path": "empty.jsonl", "solution_field": "s"}]
    return "data.cold_start_sources: no cold-start example is left"


def _no_cold_start_source(raw, tmp):
    raw["data"]["cold_start_sources"] = []
    return "but sft.enabled is true"


@pytest.mark.parametrize(
    "breakage",
    [
        _unknown_key,
        _wrong_type,
        _missing_file,
        _missing_field,
        _empty_eval_set,
        _eval_set_without_answers,
        _empty_cold_start,
        _no_cold_start_source,
    ],
)
def test_broken_params_fail_cleanly_and_write_nothing(tmp_path, breakage):
    raw = tiny_params()
    expected = breakage(raw, tmp_path)
    write_params(tmp_path, raw)
    proc = run_stage(tmp_path)
    assert proc.returncode == 2
    message = proc.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert expected in message
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "outputs").exists()


def test_failed_run_keeps_previous_outputs(tmp_path):
    raw = tiny_params()
    raw["data"]["synthetic"]["corpus_documents"] = 100
    write_params(tmp_path, raw)
    assert run_stage(tmp_path).returncode == 0
    before = snapshot(tmp_path)
    raw["data"]["cold_start_sources"] = [{"name": "c", "type": "jsonl", "path": "params.yaml", "solution_field": "s"}]
    write_params(tmp_path, raw)
    proc = run_stage(tmp_path)
    assert proc.returncode == 2 and "params.yaml:1: invalid JSON" in proc.stderr
    assert snapshot(tmp_path) == before
