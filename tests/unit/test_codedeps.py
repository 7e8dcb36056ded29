"""The import closure of each stage and the dvc.yaml deps check built on it."""

from __future__ import annotations

import shutil
from pathlib import Path

from r1_pipeline import codedeps

ROOT = Path(__file__).resolve().parents[2]


def test_every_stage_in_dvc_yaml_lists_exactly_the_code_it_imports():
    reports = codedeps.check_dvc_deps()
    assert {r.stage for r in reports} == {
        "data",
        "base",
        "sft",
        "grpo",
        "r1_zero",
        "rejection",
        "distill",
        "evaluate",
        "report",
    }
    assert all(r.ok for r in reports), codedeps.format_reports(reports)


def test_closure_follows_function_level_and_package_imports():
    sft = {str(p) for p in codedeps.stage_closure("sft")}
    # the prompt and <think>/<answer> format module, imported through r1_pipeline.sft
    assert {"tasks/sft.py", "r1_pipeline/sft.py", "r1_pipeline/chat.py", "r1_pipeline/__init__.py"} <= sft
    assert "r1_pipeline/checkpoints.py" in sft  # imported by the shared training code
    assert not any(p.startswith("flows/") for p in sft)  # the orchestrator is not stage code


def fake_project(tmp_path: Path) -> Path:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "r1_pipeline" / "sub").mkdir(parents=True)
    (tmp_path / "tasks" / "__init__.py").write_text("")
    (tmp_path / "r1_pipeline" / "__init__.py").write_text("")
    (tmp_path / "r1_pipeline" / "sub" / "__init__.py").write_text("from . import leaf\n")
    (tmp_path / "r1_pipeline" / "sub" / "leaf.py").write_text("X = 1\n")
    (tmp_path / "r1_pipeline" / "fmt.py").write_text("import json\n")
    (tmp_path / "r1_pipeline" / "unused.py").write_text("")
    (tmp_path / "tasks" / "train.py").write_text(
        "from r1_pipeline import fmt\n\ndef run():\n    from r1_pipeline.sub import leaf\n    return leaf.X\n"
    )
    return tmp_path


def test_check_reports_a_missing_and_an_unused_dep_and_fix_rewrites_the_line(tmp_path):
    root = fake_project(tmp_path)
    dvc_yaml = root / "dvc.yaml"
    dvc_yaml.write_text(
        "# header comment stays\nstages:\n  train:\n    cmd: python -m tasks.train\n"
        "    deps: [tasks/train.py, r1_pipeline/unused.py, data.jsonl]\n    outs: [model]\n"
    )
    (report,) = codedeps.check_dvc_deps(dvc_yaml, root)
    assert report.missing == [
        "r1_pipeline/__init__.py",
        "r1_pipeline/fmt.py",
        "r1_pipeline/sub/__init__.py",
        "r1_pipeline/sub/leaf.py",
        "tasks/__init__.py",
    ]
    assert report.unused == ["r1_pipeline/unused.py"]
    assert "missing code deps" in codedeps.format_reports([report])

    assert codedeps.fix_dvc_yaml(dvc_yaml, root) == ["train"]
    text = dvc_yaml.read_text()
    assert text.startswith("# header comment stays\n") and "outs: [model]" in text
    assert all(r.ok for r in codedeps.check_dvc_deps(dvc_yaml, root))
    assert "data.jsonl" in text and "unused.py" not in text


def test_code_hash_changes_with_one_line_in_an_imported_module(tmp_path):
    (tmp_path / "a").mkdir()
    root = fake_project(tmp_path / "a")
    before = codedeps.code_hash("train", root)
    copy = tmp_path / "b"
    shutil.copytree(root, copy)
    assert codedeps.code_hash("train", copy) == before  # paths relative to the root: same code, same hash
    (copy / "r1_pipeline" / "sub" / "leaf.py").write_text("X = 2\n")
    codedeps.code_hash.cache_clear()  # cached per process: a stage hashes its code once
    assert codedeps.code_hash("train", copy) != before
    (root / "r1_pipeline" / "unused.py").write_text("# not imported\n")
    codedeps.code_hash.cache_clear()
    assert codedeps.code_hash("train", root) == before
