"""Stage `rejection`: sample N completions per RL prompt from the RL model, keep up to M that verify and pass
the readability filters, deduplicate, and write an SFT dataset (the R1 stage-3 data) plus yield statistics.

The readability filters (R1: drop mixed-language, overlong, repetitive, unformatted CoT) use the format
reward's own check and <think> span (r1_pipeline.rewards), so "readable" means the same thing in RL,
rejection sampling and evaluation.
"""

from __future__ import annotations

from collections import Counter

from r1_pipeline import paths, tracking
from r1_pipeline.chat import prompt_messages
from r1_pipeline.config import Config, RejectionParams
from r1_pipeline.errors import StageError, require
from r1_pipeline.generation import get_backend
from r1_pipeline.io import read_jsonl, write_json, write_jsonl
from r1_pipeline.modeling import resolve_device
from r1_pipeline.rewards import has_format, think_span
from r1_pipeline.stage import main_for
from r1_pipeline.training import is_skipped
from r1_pipeline.verify import extract_answer, verify

REASONS = ("incorrect", "format", "length", "repetition", "mixed_language", "duplicate", "over_quota")


def run(cfg: Config) -> dict:
    rc = cfg.rejection
    # --- model and prompts ---
    model_path = require(paths.model_dir(rc.source_model), rc.source_model)
    if is_skipped(model_path):
        raise StageError(f"rejection.source_model is `{rc.source_model}`, but that stage was skipped")
    prompts = read_jsonl(require(paths.RL_TRAIN, "data"))[: rc.num_prompts]
    # --- sample N completions per prompt ---
    backend = get_backend(
        rc.backend, model_path, resolve_device(cfg.project.device), cfg.project.precision, rc.batch_size
    )
    samples = backend.generate(
        [prompt_messages(p["problem"], cfg.chat.system_prompt) for p in prompts],
        n=rc.num_samples,
        temperature=rc.temperature,
        top_p=rc.top_p,
        max_new_tokens=rc.max_new_tokens,
        seed=cfg.project.seed,
    )
    # --- keep up to M per prompt that verify, read well and are new ---
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
            kept.append(
                {
                    "id": f"{prompt['id']}-r{n_kept}",
                    "source": prompt["source"],
                    "problem": prompt["problem"],
                    "answer": prompt["answer"],
                    "reasoning": think_text(s.text),
                    "completion": s.text,
                }
            )
        pass_rates.append(n_correct / len(group))
    if not kept:
        # Not an error: an undertrained model (a micro run) may solve nothing. Distill then says so and skips.
        print(f"rejection: WARNING: no completion of {rc.source_model} passed verification and the filters")
    # --- save the traces and the yield statistics ---
    total = len(prompts) * rc.num_samples
    stats = {
        "prompts": len(prompts),
        "samples": total,
        "kept": len(kept),
        "yield": len(kept) / total,
        "source_model": rc.source_model,
        "mean_pass_rate": sum(pass_rates) / len(pass_rates),
        "prompts_with_a_kept_trace": len({r["problem"] for r in kept}),
        "rejected": {r: reasons.get(r, 0) for r in REASONS},
        "pass_rate_histogram": {
            f"{b / 10:.1f}": sum(1 for p in pass_rates if min(int(p * 10), 9) == b) for b in range(10)
        },
    }
    write_jsonl(paths.REJECTION_DATA, kept)
    write_json(paths.REJECTION_STATS, stats)
    tracking.log_artifact(paths.REJECTION_STATS)
    tracking.log_table(kept[:50], "rejection/kept_sample.json")
    # --- metrics ---
    flat = {f"rejection_{k}": v for k, v in stats.items() if isinstance(v, (int, float))}
    flat.update({f"rejected_{k}": v for k, v in stats["rejected"].items()})
    return flat


# --- readability filters ---


def think_text(completion: str) -> str | None:
    span = think_span(completion)
    return span.strip() if span is not None else None


def repeated_ngram_fraction(text: str, n: int = 4) -> float:
    words = text.split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    counts = Counter(grams)
    return sum(c - 1 for c in counts.values()) / len(grams)


def non_ascii_letter_fraction(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    return sum(not c.isascii() for c in letters) / len(letters) if letters else 0.0


def rejection_reason(completion: str, rc: RejectionParams) -> str | None:
    """Why a (correct) completion is unreadable, or None when it passes every filter."""
    if not has_format(completion):
        return "format"
    if len(completion) > rc.max_completion_chars or len(think_text(completion) or "") < rc.min_think_chars:
        return "length"
    if repeated_ngram_fraction(completion) > rc.max_repeated_ngram_fraction:
        return "repetition"
    if non_ascii_letter_fraction(completion) > rc.max_non_ascii_fraction:
        return "mixed_language"
    return None


if __name__ == "__main__":
    main_for("rejection", run)
