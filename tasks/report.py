"""Stage `report`: one Markdown report with the model x benchmark table, the comparisons that matter and
PNG plots (accuracy by stage, reward and response length over RL steps, rejection-sampling yield)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless
import matplotlib.pyplot as plt

from r1_pipeline import paths, tracking
from r1_pipeline.config import Config
from r1_pipeline.cost import cost_table
from r1_pipeline.errors import require
from r1_pipeline.io import atomic_path, read_jsonl, write_text
from r1_pipeline.metrics import first_last_fifth, habit_breakdown, paired_difference
from r1_pipeline.stage import main_for


def run(cfg: Config) -> dict:
    # --- inputs: evaluation metrics and records, RL curves, rejection statistics, stage times ---
    metrics = load_json(require(paths.EVAL_METRICS, "evaluate"))
    records = read_jsonl(require(paths.EVAL_RECORDS, "evaluate"))  # per sample: paired differences
    curves = {s: rl_curves(s) for s in ("grpo", "r1_zero")}
    rejection = load_json(paths.REJECTION_STATS)
    timings = {}
    for s in paths.stage_names():
        m = load_json(paths.metrics_file(s))
        if f"{s}_seconds" in m:
            timings[s] = m[f"{s}_seconds"]
    # --- plots and the Markdown report, written in one rename ---
    with atomic_path(paths.REPORT_DIR, is_dir=True) as tmp:
        plot_accuracy(metrics, tmp / "accuracy.png")
        plot_rl(curves, tmp / "rl_curves.png")
        if rejection:
            plot_rejection(rejection, tmp / "rejection.png")
        write_text(tmp / "report.md", markdown(cfg, metrics, curves, rejection, timings, records))
        with open(tmp / "rl_curves.csv", "w") as f:
            f.write("stage,step,reward,length\n")
            for stage, c in curves.items():
                for st, r, ln in zip(c["step"], c["reward"], c["length"]):
                    f.write(f"{stage},{st},{r},{ln}\n")
    # --- publish ---
    tracking.log_artifact(paths.REPORT_DIR, "report")
    print((paths.REPORT_DIR / "report.md").read_text())
    return {}


# --- inputs ---


def load_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def rl_curves(stage: str) -> dict[str, list[float]]:
    rows = read_jsonl(paths.train_log(stage)) if paths.train_log(stage).exists() else []
    rows = [r for r in rows if "reward" in r]
    return {
        "step": [r["step"] for r in rows],
        "reward": [r["reward"] for r in rows],
        "length": [r.get("completions/mean_length", float("nan")) for r in rows],
    }


# --- plots ---


def plot_accuracy(metrics: dict, out: Path) -> None:
    models = list(metrics)
    benches = sorted({b for m in metrics.values() for b in m})
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(models)), 3.5))
    width = 0.8 / max(1, len(benches))
    for j, bench in enumerate(benches):
        vals = [100 * metrics[m].get(bench, {}).get("pass@1", 0) for m in models]
        errs = [100 * metrics[m].get(bench, {}).get("pass@1_stderr", 0) for m in models]
        ax.bar([i + j * width for i in range(len(models))], vals, width, yerr=errs, label=bench, capsize=3)
    ax.set_xticks([i + width * (len(benches) - 1) / 2 for i in range(len(models))], models, rotation=20)
    ax.set_ylabel("pass@1 (%)")
    ax.set_title("Accuracy by stage")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_rl(curves: dict[str, dict], out: Path) -> None:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.3))
    for stage, c in curves.items():
        if c["step"]:
            ax1.plot(c["step"], c["reward"], label=stage)
            ax2.plot(c["step"], c["length"], label=stage)
    ax1.set(title="Mean reward", xlabel="RL step")
    ax2.set(title="Mean completion length (tokens)", xlabel="RL step")
    ax1.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_rejection(stats: dict, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    labels = ["kept"] + list(stats.get("rejected", {}))
    values = [stats.get("kept", 0)] + list(stats.get("rejected", {}).values())
    ax.bar(labels, values, color=["tab:green"] + ["tab:red"] * (len(labels) - 1))
    ax.set_title(f"Rejection sampling: {100 * stats.get('yield', 0):.1f}% of {stats.get('samples', 0)} samples kept")
    ax.tick_params(axis="x", rotation=25)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


# --- the Markdown report ---


def pct(summary: dict, key: str) -> str:
    return f"{100 * summary[key]:.1f}" if key in summary else "–"


def markdown(cfg: Config, metrics: dict, curves: dict, rejection: dict, timings: dict, records: list[dict]) -> str:
    k = cfg.evaluate.num_samples
    lines = [f"# {cfg.report.title}", ""]
    lines += [
        f"Evaluation protocol: k={k} samples per problem, temperature {cfg.evaluate.temperature}, "
        f"top-p {cfg.evaluate.top_p}, max {cfg.evaluate.max_new_tokens} new tokens. pass@1 is the mean "
        f"accuracy over the k samples (± standard error over problems); cons@{k} is the majority vote.",
        "",
    ]
    lines += [
        "## Accuracy (model × benchmark)",
        "",
        f"| model | benchmark | pass@1 | ± | cons@{k} | format | mean tokens |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, benches in metrics.items():
        for bench, s in benches.items():
            lines.append(
                f"| {model} | {bench} | {pct(s, 'pass@1')} | {pct(s, 'pass@1_stderr')} | {pct(s, f'cons@{k}')} "
                f"| {pct(s, 'format_rate')} | {s.get('mean_tokens', 0):.1f} |"
            )
    chance = {s.name: 1 / (cfg.data.synthetic.total_max + 1) for s in cfg.data.eval_sets if s.type == "synthetic"}
    if chance:
        lines += [
            "",
            "Chance level (a uniform guess among the possible answers): "
            + ", ".join(f"{bench} {100 * c:.1f}%" for bench, c in chance.items())
            + ".",
        ]
    lines += ["", "![accuracy](accuracy.png)", "", "## Comparisons", ""]
    for bench in sorted({b for m in metrics.values() for b in m}):

        def p(model):
            return metrics.get(model, {}).get(bench, {}).get("pass@1")

        pairs = [
            ("sft", "base", "cold-start SFT over the base"),
            ("grpo", "sft", "GRPO over its SFT start"),
            ("r1_zero", "base", "R1-Zero over the base"),
            ("grpo", "r1_zero", "GRPO (with cold start) over R1-Zero"),
            ("distill", "distill_no_traces", "distilled student over a same-size student trained without traces"),
        ]
        for a, b, what in pairs:
            diff = paired_difference(records, a, b, bench) if p(a) is not None and p(b) is not None else None
            if diff is not None:
                lines.append(
                    f"- {bench}: {what}: {100 * diff['difference']:+.1f} points pass@1 (paired SE "
                    f"{100 * diff['stderr']:.1f}, 95% interval {100 * diff['ci_low']:+.1f} to {100 * diff['ci_high']:+.1f}, "
                    f"{diff['n_problems']} problems): {diff['verdict']}"
                )
        fa, fb = (metrics.get(m, {}).get(bench, {}).get("format_rate") for m in ("sft", "base"))
        if fa is not None and fb is not None:
            lines.append(f"- {bench}: format rate base {100 * fb:.1f}% → SFT {100 * fa:.1f}%")
    lines += habit_section(metrics, records)
    lines += ["", "## RL curves", "", "![rl curves](rl_curves.png)", ""]
    for stage, c in curves.items():
        if c["reward"]:
            (first, last), (lf, ll) = first_last_fifth(c["reward"]), first_last_fifth(c["length"])
            lines.append(
                f"- {stage}: mean reward {first:.3f} (first fifth of steps) → {last:.3f} (last fifth); "
                f"completion length {lf:.1f} → {ll:.1f} tokens"
            )
    if rejection:
        lines += [
            "",
            "## Rejection sampling",
            "",
            "![rejection](rejection.png)",
            "",
            f"{rejection['kept']} traces kept of {rejection['samples']} samples from {rejection['prompts']} prompts "
            f"(yield {100 * rejection['yield']:.1f}%, mean pass rate {100 * rejection['mean_pass_rate']:.1f}%). "
            f"Rejected: " + ", ".join(f"{k} {v}" for k, v in rejection["rejected"].items()) + ".",
        ]
    if timings:
        lines += ["", "## Stage times", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {s} | {t:.1f} |" for s, t in timings.items()]
        lines.append(f"| total | {sum(timings.values()):.1f} |")
    lines += cost_table(paths.stage_names())  # r1_pipeline/cost.py: the stages' cost rows (empty without any)
    return "\n".join(lines) + "\n"


def habit_section(metrics: dict, records: list[dict]) -> list[str]:
    """What each model's pass@1 is made of: how often it reasons step by step (a <think> of two or more lines)
    and how accurate it is with and without doing so. RL on a base that already has the step-by-step habit can
    gain mostly by choosing it more often; this table shows whether that is what happened."""
    lines = [
        "",
        "## What the gains are made of",
        "",
        "Step-by-step: samples whose <think> has two or more lines; other: a one-line think or none.",
        "",
        "| model | benchmark | step-by-step share | pass@1 step-by-step | pass@1 other |",
        "|---|---|---|---|---|",
    ]
    for model, benches in metrics.items():
        for bench in benches:
            h = habit_breakdown(records, model, bench)
            if h:

                def acc(v):
                    return "–" if v != v else f"{100 * v:.1f}"  # NaN: no sample of that kind

                lines.append(
                    f"| {model} | {bench} | {100 * h['step_share']:.1f}% | {acc(h['step_accuracy'])} "
                    f"| {acc(h['other_accuracy'])} |"
                )
    lines += [
        "",
        "When a model gains mainly through a higher step-by-step share at a similar step-by-step accuracy, "
        "RL selected a reasoning habit the base already had rather than teaching a new skill. How much of "
        "GRPO's gain a curated cold start (only step-by-step traces) gets by SFT alone is measured in "
        'docs/architecture.md ("The tiny profile").',
    ]
    return lines


if __name__ == "__main__":
    main_for("report", run)
