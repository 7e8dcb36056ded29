"""Benchmark: run every stage of the pipeline on a profile, for each seed and torch thread count, and print
the stage times (process overhead apart from the stage's own work), the pass@1 table and GRPO - SFT with the
95% interval of its paired difference.

    python bench/pipeline_times.py                              # tiny profile, seed 0, default threads
    python bench/pipeline_times.py --seeds 0,1,2 --threads 1,2 --curated  # what `make bench-seeds` runs
    python bench/pipeline_times.py --profile micro --workdir /tmp/r1-micro
    python bench/pipeline_times.py --seeds 1 --stages grpo,evaluate --start-from W/seed1 --set project.seed=11
                                                                # GRPO again from seed 1's SFT, another RL seed

Each stage runs as DVC runs it (`python -m tasks.<stage>` in a work dir), so the times include process
start-up and imports; `work` is the stage's own time (from its metrics file), `overhead` the rest of the wall
time (interpreter start, imports, config, MLflow set-up and teardown). A different thread count changes the
order of floating-point sums, a cheap stand-in for another machine. Seeds set `project.seed` and `data.seed`.
Every work dir keeps its outputs (models, report) for inspection afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from r1_pipeline import paths  # noqa: E402
from r1_pipeline.config import apply_overrides, profile_dict, to_yaml, validate  # noqa: E402
from r1_pipeline.io import read_jsonl  # noqa: E402
from r1_pipeline.metrics import first_last_fifth, paired_difference  # noqa: E402
from r1_pipeline.paths import stage_names  # noqa: E402

CURATED = "data.synthetic.cold_start_scratchpad_fraction=1.0"
MODELS = ("base", "sft", "grpo", "r1_zero", "distill", "distill_no_traces")


def run_pipeline(workdir: Path, profile: str, overrides: list[str], stages: list[str], threads: int | None) -> dict:
    """Run `stages` in `workdir`; returns {stage: (wall seconds, work seconds)} and the exit code."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = validate(apply_overrides(profile_dict(profile), overrides), f"profile {profile}", ROOT)
    (workdir / "params.yaml").write_text(to_yaml(cfg))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'mlflow.db'}")
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)  # torch's intra-op threads
    times: dict[str, tuple[float, float]] = {}
    for stage in stages:
        start = time.time()
        with open(workdir / f"{stage}.log", "w") as log:
            rc = subprocess.call(
                [sys.executable, "-m", f"tasks.{stage}"], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        wall = time.time() - start
        metrics_file = workdir / paths.metrics_file(stage)
        work = json.loads(metrics_file.read_text()).get(f"{stage}_seconds", wall) if metrics_file.exists() else wall
        times[stage] = (wall, work)
        if rc:
            print(f"  {stage} FAILED (exit {rc}, see {workdir}/{stage}.log)", flush=True)
            return {"times": times, "rc": rc}
    return {"times": times, "rc": 0}


def run_curated(
    main_dir: Path, workdir: Path, profile: str, overrides: list[str], threads: int | None, label: str
) -> dict:
    """SFT then GRPO from the base of `main_dir` (same seed, so the same base) with the curated cold start."""
    shutil.copytree(main_dir / paths.model_dir("base"), workdir / paths.model_dir("base"))
    result = run_pipeline(workdir, profile, [*overrides, CURATED], ["data", "sft", "grpo", "evaluate"], threads)
    metrics, records = eval_summary(workdir)
    return print_run(label, workdir, result, metrics, records)


def eval_summary(workdir: Path) -> tuple[dict, list[dict]]:
    metrics_path, records_path = workdir / paths.EVAL_METRICS, workdir / paths.EVAL_RECORDS
    if not metrics_path.exists():
        return {}, []
    return json.loads(metrics_path.read_text()), read_jsonl(records_path)


def print_run(label: str, workdir: Path, result: dict, metrics: dict, records: list[dict]) -> dict:
    times = result["times"]
    print(f"\n### {label}\n")
    print("| stage | wall s | work s | overhead s |\n|---|---|---|---|")
    for stage, (wall, work) in times.items():
        print(f"| {stage} | {wall:.1f} | {work:.1f} | {wall - work:.1f} |")
    wall_total, work_total = sum(w for w, _ in times.values()), sum(w for _, w in times.values())
    print(f"| **total** | **{wall_total:.1f}** | {work_total:.1f} | {wall_total - work_total:.1f} |")
    row = {"label": label, "total_s": wall_total, "overhead_s": wall_total - work_total}
    for bench, by_model in _by_benchmark(metrics).items():
        print(f"\n{bench}: | model | pass@1 | ± |\n|---|---|---|")
        for model in MODELS:
            s = by_model.get(model)
            if s:
                print(f"| {model} | {100 * s['pass@1']:.1f} | {100 * s['pass@1_stderr']:.1f} |")
                row[model] = 100 * s["pass@1"]
        for a, b in (("grpo", "sft"), ("r1_zero", "base"), ("distill", "distill_no_traces")):
            d = paired_difference(records, a, b, bench)
            if d:
                print(
                    f"{a} - {b}: {100 * d['difference']:+.1f} points (paired SE {100 * d['stderr']:.1f}, 95% "
                    f"interval {100 * d['ci_low']:+.1f} to {100 * d['ci_high']:+.1f}): {d['verdict']}"
                )
                row[f"{a}-{b}"] = (100 * d["difference"], 100 * d["ci_low"], 100 * d["ci_high"])
        break  # the first benchmark is the headline
    curves = workdir / paths.REPORT_DIR / "rl_curves.csv"  # written by the report stage
    if curves.exists():
        rows = [line.split(",") for line in curves.read_text().splitlines()[1:] if line.startswith("r1_zero,")]
        if rows:
            row["r1_zero_reward"] = first_last_fifth([float(r[2]) for r in rows])
            row["r1_zero_length"] = first_last_fifth([float(r[3]) for r in rows])
            print(
                f"r1_zero: reward {row['r1_zero_reward'][0]:.3f} -> {row['r1_zero_reward'][1]:.3f}, completion "
                f"length {row['r1_zero_length'][0]:.1f} -> {row['r1_zero_length'][1]:.1f} tokens "
                "(first -> last fifth of steps)"
            )
    return row


def _by_benchmark(metrics: dict) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for model, benches in metrics.items():
        for bench, summary in benches.items():
            out.setdefault(bench, {})[model] = summary
    return out


def print_summary(rows: list[dict]) -> None:
    print("\n## Summary (first benchmark)\n")
    print(
        "| run | base | sft | grpo | grpo - sft [95% CI] | r1_zero reward | r1_zero length | distill / no traces "
        "| total s | overhead s |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    for r in rows:

        def f(key):
            return f"{r[key]:.1f}" if key in r else "–"

        d = r.get("grpo-sft")
        diff = f"{d[0]:+.1f} [{d[1]:+.1f}, {d[2]:+.1f}]" if d else "–"
        rw = r.get("r1_zero_reward")
        ln = r.get("r1_zero_length")
        print(
            f"| {r['label']} | {f('base')} | {f('sft')} | {f('grpo')} | {diff} | "
            f"{f'{rw[0]:.2f} → {rw[1]:.2f}' if rw else '–'} | {f'{ln[0]:.0f} → {ln[1]:.0f}' if ln else '–'} | "
            f"{f('distill')} / {f('distill_no_traces')} | {r['total_s']:.0f} | {r['overhead_s']:.0f} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="tiny", help="profile to run (default: tiny)")
    parser.add_argument("--workdir", help="where outputs go (default: a new temp dir; one subfolder per run)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="KEY.PATH=VALUE override")
    parser.add_argument("--stages", default=",".join(stage_names()), help="comma-separated stages (default: all)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (project.seed and data.seed)")
    parser.add_argument("--threads", default="", help="comma-separated torch thread counts (default: torch's)")
    parser.add_argument(
        "--curated",
        action="store_true",
        help="per seed, also run SFT and GRPO from the same base with a curated cold start "
        f"({CURATED}): how much of GRPO's gain SFT on step-by-step traces gets alone",
    )
    parser.add_argument(
        "--start-from",
        help="copy this finished work dir's outputs/ into each run's work dir first, e.g. with --stages "
        "grpo,evaluate: GRPO settings or GRPO seeds compared from one and the same SFT model",
    )
    args = parser.parse_args()
    if args.start_from:
        if "," in args.seeds or "," in args.threads:
            parser.error("--start-from copies one run's outputs: give one seed and at most one thread count")
        if not (Path(args.start_from) / "outputs").is_dir():
            parser.error(f"--start-from {args.start_from}: no outputs/ folder there (a work dir of this script)")

    root = Path(args.workdir or tempfile.mkdtemp(prefix=f"r1-bench-{args.profile}-"))
    seeds = [int(s) for s in args.seeds.split(",")]
    thread_counts = [int(t) for t in args.threads.split(",")] if args.threads else [None]
    print(f"profile {args.profile}, {os.cpu_count()} CPUs, outputs in {root}", flush=True)
    rows, failed = [], 0
    for seed in seeds:
        for threads in thread_counts:
            label = f"seed {seed}, {threads or 'default'} thread(s)"
            workdir = (
                root / f"seed{seed}-threads{threads or 'default'}" if len(seeds) * len(thread_counts) > 1 else root
            )
            overrides = [f"project.seed={seed}", f"data.seed={seed}", *args.overrides]
            if args.start_from:
                shutil.copytree(Path(args.start_from) / "outputs", workdir / "outputs", dirs_exist_ok=True)
            result = run_pipeline(workdir, args.profile, overrides, args.stages.split(","), threads)
            failed += bool(result["rc"])
            metrics, records = eval_summary(workdir)
            rows.append(print_run(label, workdir, result, metrics, records))
            if args.curated and threads == thread_counts[0] and not result["rc"]:
                rows.append(
                    run_curated(
                        workdir,
                        root / f"seed{seed}-curated",
                        args.profile,
                        overrides,
                        threads,
                        f"seed {seed}, curated cold start",
                    )
                )
    if len(rows) > 1:
        print_summary(rows)
    elif (report := root / paths.REPORT_DIR / "report.md").exists():
        print("\n" + report.read_text())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
