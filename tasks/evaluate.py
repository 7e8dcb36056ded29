"""Stage `evaluate`: every model the run produced on every evaluation set, with the R1 protocol.

k samples per problem at temperature/top-p from params; pass@1 = mean accuracy over the k samples, cons@k =
majority vote over extracted answers, with standard errors. Two accuracies, one per extraction policy of
r1_pipeline.verify: answer-correct (`eval`, as the standard harnesses score: pass@1, cons@k, pass@k) and
format-following (`strict`, the reward's rule: pass@1_strict), so a model that answers right without the
format shows as the gap between them. One record per (model, benchmark, problem, sample) keeps the text,
both extracted answers and verdicts (`verdict` is true, false or error: a verification that timed out or
raised is counted in `verify_errors`, never silently wrong), so any metric can be recomputed.
"""

from __future__ import annotations

from r1_pipeline import paths, registry, tracking
from r1_pipeline.chat import prompt_messages
from r1_pipeline.config import Config
from r1_pipeline.errors import StageError, require
from r1_pipeline.generation import get_backend
from r1_pipeline.io import read_jsonl, write_json, write_jsonl
from r1_pipeline.metrics import summarize
from r1_pipeline.modeling import resolve_device
from r1_pipeline.rewards import has_format
from r1_pipeline.stage import main_for
from r1_pipeline.training import is_skipped
from r1_pipeline.verify import ERROR, check


def run(cfg: Config) -> dict:
    e = cfg.evaluate
    # --- data: every evaluation set ---
    eval_sets = {}
    for s in cfg.data.eval_sets:
        rows = read_jsonl(require(paths.EVAL_DIR / f"{s.name}.jsonl", "data"))
        eval_sets[s.name] = rows[: e.max_problems] if e.max_problems else rows
        tracking.log_dataset(paths.EVAL_DIR / f"{s.name}.jsonl", s.name, "evaluation")
    # --- models: those the run produced (skipped stages left a marker, not a model) ---
    models = [m for m in e.models if paths.model_dir(m).exists() and not is_skipped(paths.model_dir(m))]
    if not models:
        raise StageError(
            f"none of evaluate.models {e.models} exists under {paths.MODELS_DIR}: run the training stages first"
        )
    # --- generate k samples per problem and verify them ---
    records, metrics = [], {}
    for name in models:
        rows, metrics[name] = evaluate_model(cfg, name, eval_sets)
        records.extend(rows)
    # --- save the records and the metrics ---
    write_jsonl(paths.EVAL_RECORDS, records)
    write_json(paths.EVAL_METRICS, metrics)
    tracking.log_artifact(paths.EVAL_METRICS)
    # --- flat metrics; the champion aliases of the model registry ---
    flat = {}
    for model, benches in metrics.items():
        for bench, summary in benches.items():
            for key, value in summary.items():
                if isinstance(value, (int, float)):
                    flat[f"{model}.{bench}.{key}"] = value
    # Each evaluated model's registered version (registered by its training run) gets its evaluation; the
    # `champion` aliases move only on a pass@1 gain beyond 2 SE of the paired difference (r1_pipeline.registry).
    registry.promote_models(cfg, metrics, records)
    return flat


# --- one model on every set ---


def evaluate_model(cfg: Config, name: str, eval_sets: dict[str, list[dict]]) -> tuple[list[dict], dict]:
    e = cfg.evaluate
    backend = get_backend(
        e.backend, paths.model_dir(name), resolve_device(cfg.project.device), cfg.project.precision, e.batch_size
    )
    records, metrics = [], {}
    for bench, problems in eval_sets.items():
        samples = backend.generate(
            [prompt_messages(p["problem"], cfg.chat.system_prompt) for p in problems],
            n=e.num_samples,
            temperature=e.temperature,
            top_p=e.top_p,
            max_new_tokens=e.max_new_tokens,
            seed=cfg.project.seed,
        )
        rows = []
        for p, group in zip(problems, samples):
            for i, s in enumerate(group):
                answer, strict = check(s.text, p["answer"], "eval"), check(s.text, p["answer"], "strict")
                rows.append(
                    {
                        "model": name,
                        "benchmark": bench,
                        "problem_id": p["id"],
                        "sample_idx": i,
                        "gold": p["answer"],
                        "text": s.text,
                        "extracted": answer.extracted,
                        "correct": answer.correct,
                        "verdict": answer.verdict,
                        "verdict_reason": answer.reason,
                        "extracted_strict": strict.extracted,
                        "correct_strict": strict.correct,
                        "verdict_strict": strict.verdict,
                        "format_ok": has_format(s.text),
                        "num_tokens": s.num_tokens,
                        "finished": s.finished,
                    }
                )
        summary = summarize(rows)
        strict_summary = summarize(rows, "correct_strict", "extracted_strict")
        summary["pass@1_strict"] = strict_summary["pass@1"]
        summary["pass@1_strict_stderr"] = strict_summary["pass@1_stderr"]
        summary["verify_errors"] = sum(r["verdict"] == ERROR or r["verdict_strict"] == ERROR for r in rows)
        k = summary["k"]
        # name the metrics with their k, as papers report them (cons@64, pass@8)
        summary[f"cons@{k}"], summary[f"pass@{k}"] = summary.pop("cons@k"), summary.pop("pass@k")
        summary["format_rate"] = sum(r["format_ok"] for r in rows) / len(rows)
        summary["mean_tokens"] = sum(r["num_tokens"] for r in rows) / len(rows)
        metrics[bench] = summary
        records.extend(rows)
        print(
            f"evaluate: {name:>18} {bench:<16} pass@1 {100 * summary['pass@1']:5.1f} ± {100 * summary['pass@1_stderr']:.1f}"
            f"  cons@{k} {100 * summary[f'cons@{k}']:5.1f}"
            f"  strict {100 * summary['pass@1_strict']:5.1f}  format {100 * summary['format_rate']:5.1f}"
            + (f"  verify errors {summary['verify_errors']}" if summary["verify_errors"] else "")
        )
    return records, metrics


if __name__ == "__main__":
    main_for("evaluate", run)
