"""The training benchmark harness runs end to end at its smallest size and reports every row and column.

Checks the shape of the report (not the speeds): `bench/train_bench.py --mode cpu --quick` must print the
header and the four tables, with every variant as a row, every column filled (a number, or n/a / skipped with
a reason), no row failed, and the same rows in results.json.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, SHARED_DATA, stage_env

pytestmark = pytest.mark.slow

sys.path.insert(0, str(ROOT / "bench"))
import train_bench  # noqa: E402


def table_rows(text: str, title: str) -> tuple[list[str], list[list[str]]]:
    """Header cells and body rows of the Markdown table under the `### <title>` heading."""
    lines = text[text.index(f"### {title}") :].splitlines()[1:]
    end = next((i for i, line in enumerate(lines) if line.startswith("### ")), len(lines))
    body = [line for line in lines[:end] if line.startswith("|")]
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in body]
    return cells[0], cells[2:]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "train_bench.py"),
        "--mode",
        "cpu",
        "--quick",
        "--threads",
        "1",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=stage_env(), capture_output=True, text=True, timeout=600)
    log = (out / "bench.log").read_text() if (out / "bench.log").exists() else ""
    assert proc.returncode == 0, f"bench failed:\n{proc.stderr[-3000:]}\n{log[-3000:]}"
    return proc.stdout, json.loads((out / "results.json").read_text()), (out / "table.md").read_text(), log


def test_prints_the_report_and_writes_it(report):
    stdout, results, table_md, _ = report
    assert stdout.strip() == table_md.strip()
    for line in (
        "- hardware:",
        "- versions:",
        "torch ",
        "transformers ",
        "trl ",
        "accelerate ",
        "deepspeed ",
        "liger-kernel ",
        "vllm ",
        "- measured matmul peak:",
    ):
        assert line in stdout
    assert results["header"]["peak"]["peak_flops"] > 0


def test_sft_table_has_every_variant_and_column(report):
    stdout, _, _, _ = report
    header, rows = table_rows(stdout, "SFT throughput")
    assert header[:2] == ["seq", "variant"]
    assert [c[0] for c in train_bench.SFT_COLS] == header[2:]
    seq_lens = train_bench.SIZES["quick"].seq_lens
    expected = {
        (str(seq), label)
        for seq in seq_lens
        for key, label, *_ in train_bench.SFT_VARIANTS
        if not (key == "ours_compile" and seq not in train_bench.SIZES["quick"].compile_seq_lens)
    }
    assert {(r[0], r[1]) for r in rows} == expected
    assert all(len(r) == len(header) and all(r) for r in rows)
    for r in rows:
        measured = ("bare TRL (", "bare TRL + packing", "ours (", "ours + packing (", "ours + packing in rows (")
        if r[1].startswith(measured):
            assert float(r[2].replace(",", "")) > 0, r  # measured in-process: tokens/s is a number
            assert r[3].endswith("%") and r[4].endswith("%")
    liger = [r for r in rows if "Liger" in r[1]]
    assert all(r[2].startswith(("n/a (liger-kernel not installed)", "skipped")) or r[2][0].isdigit() for r in liger)


def test_grpo_overhead_and_reward_tables(report):
    stdout, _, _, _ = report
    header, rows = table_rows(stdout, "GRPO step")
    assert header[0] == "variant" and [c[0] for c in train_bench.GRPO_COLS] == header[1:]
    labels = [r[0] for r in rows]
    assert labels[:2] == ["bare TRL (GRPOConfig defaults)", "ours: r1_pipeline.grpo.train_grpo"]
    assert labels[2:] == [train_bench.BASELINE_LABEL] + [label for _, label, *_ in train_bench.GRPO_VARIANTS]
    for r in rows[:2]:
        # mean step (min-max), generate, reward, logprob, fwd+bwd, optimizer, other
        split = [float(r[1].split()[0])] + [float(x) for x in r[2:8]]
        assert split[0] > 0 and split[1] > 0
        assert sum(split[1:]) == pytest.approx(split[0], rel=0.25, abs=0.02)

    header, rows = table_rows(stdout, "Pipeline overhead")
    assert [c[0] for c in train_bench.OVERHEAD_COLS] == header[1:]
    labels = [r[0] for r in rows]
    assert labels[:3] == [
        "bare TRL script, the same GRPOConfig",
        "ours: r1_pipeline.grpo.train_grpo",
        "ratio ours / bare (x)",
    ]
    assert float(rows[2][1]) > 0  # the ratio of time per step

    header, rows = table_rows(stdout, "Reward verification")
    assert [c[0] for c in train_bench.REWARD_COLS] == header[1:]
    assert [r[0] for r in rows] == [label for _, label in train_bench.REWARD_VARIANTS]
    if (SHARED_DATA / "graded" / "verifier_triples.jsonl").exists():
        assert all(float(r[2].replace(",", "")) > 0 for r in rows)


def test_no_row_failed_and_json_matches(report):
    stdout, results, _, log = report
    failed = [r for r in results["rows"] if r.get("status") not in ("ok", "n/a", "skipped")]
    assert not failed, f"{[(r['key'], r.get('message')) for r in failed]}\n{log[-4000:]}"
    assert "error:" not in stdout
    sft = [r for r in results["rows"] if r["section"] == "sft" and r["status"] == "ok"]
    assert all(r["tokens_per_s"] > 0 and r["mfu_6n"] > 0 and r["steps"] for r in sft)
