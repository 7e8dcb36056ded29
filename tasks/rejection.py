"""Stage `rejection`: sample N completions per RL prompt from the RL model, keep up to M that verify and pass
the readability filters, deduplicate, and write an SFT dataset (the R1 stage-3 data) plus yield statistics."""

from __future__ import annotations

from collections import Counter

from r1_pipeline import paths, tracking
from r1_pipeline.chat import prompt_messages
from r1_pipeline.config import Config
from r1_pipeline.filters import rejection_reason, think_text
from r1_pipeline.generation import get_backend
from r1_pipeline.io import read_jsonl, write_json, write_jsonl
from r1_pipeline.modeling import resolve_device
from r1_pipeline.stage import StageError, main_for, require
from r1_pipeline.training import is_skipped
from r1_pipeline.verify import extract_answer, verify


def run(cfg: Config) -> dict:
    rc = cfg.rejection
    model_path = require(paths.model_dir(rc.source_model), rc.source_model)
    if is_skipped(model_path):
        raise StageError(f"rejection.source_model is `{rc.source_model}`, but that stage was skipped")
    prompts = read_jsonl(require(paths.RL_TRAIN, "data"))[: rc.num_prompts]
    backend = get_backend(rc.backend, model_path, resolve_device(cfg.project.device), cfg.project.precision, rc.batch_size)
    samples = backend.generate(
        [prompt_messages(p["problem"], cfg.chat.system_prompt) for p in prompts],
        n=rc.num_samples, temperature=rc.temperature, top_p=rc.top_p, max_new_tokens=rc.max_new_tokens,
        seed=cfg.project.seed,
    )
    kept, reasons, pass_rates = [], Counter(), []
    for prompt, group in zip(prompts, samples):
        seen, n_correct, n_kept = set(), 0, 0
        for s in group:
            correct = verify(extract_answer(s.text), prompt["answer"])
            n_correct += correct
            reason = None if correct else "incorrect"
            reason = reason or rejection_reason(s.text, rc)
            if reason is None and s.text.strip() in seen:
                reason = "duplicate"
            if reason is None and n_kept >= rc.max_kept_per_prompt:
                reason = "over_quota"
            if reason:
                reasons[reason] += 1
                continue
            seen.add(s.text.strip())
            n_kept += 1
            kept.append({
                "id": f"{prompt['id']}-r{n_kept}", "source": prompt["source"], "problem": prompt["problem"],
                "answer": prompt["answer"], "reasoning": think_text(s.text), "completion": s.text,
            })
        pass_rates.append(n_correct / len(group))
    if not kept:
        # Not an error: an undertrained model (a micro run) may solve nothing. Distill then says so and skips.
        print(f"rejection: WARNING: no completion of {rc.source_model} passed verification and the filters")
    total = len(prompts) * rc.num_samples
    stats = {
        "prompts": len(prompts),
        "samples": total,
        "kept": len(kept),
        "yield": len(kept) / total,
        "source_model": rc.source_model,
        "mean_pass_rate": sum(pass_rates) / len(pass_rates),
        "prompts_with_a_kept_trace": len({r["problem"] for r in kept}),
        "rejected": {r: reasons.get(r, 0) for r in ("incorrect", "format", "length", "repetition", "mixed_language", "duplicate", "over_quota")},
        "pass_rate_histogram": {f"{b / 10:.1f}": sum(1 for p in pass_rates if min(int(p * 10), 9) == b) for b in range(10)},
    }
    write_jsonl(paths.REJECTION_DATA, kept)
    write_json(paths.REJECTION_STATS, stats)
    tracking.log_artifact(paths.REJECTION_STATS)
    tracking.log_table(kept[:50], "rejection/kept_sample.json")
    flat = {f"rejection_{k}": v for k, v in stats.items() if isinstance(v, (int, float))}
    flat.update({f"rejected_{k}": v for k, v in stats["rejected"].items()})
    return flat


if __name__ == "__main__":
    main_for("rejection", run)
