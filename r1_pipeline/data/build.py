"""Build every dataset of the run in memory (`build_datasets`), then write them all at once (`write_datasets`).

Order of work:
1. Evaluation sets are read first (kept as they are: no dedup, no decontamination; they are the yardstick).
2. RL prompts: all rl_sources in order -> exact dedup -> near dedup -> decontamination against every eval set
   -> seeded shuffle -> the first round(rl_val_fraction * n) prompts are the validation split.
3. Cold-start examples: the same dedup and decontamination over cold_start_sources (no split). Synthetic
   sources get the correct scratchpad as reasoning; real sources their `solution_field` text.
4. Pretraining corpus: only when a training source (rl or cold start) is synthetic; train-split expressions
   only, decontaminated against the eval sets like everything else.

Duplicates across sources count against the later source. Stats are nested one level at most and numeric, so
DVC can read stats.json as metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from r1_pipeline import paths
from r1_pipeline.config import Config, DataParams, SourceParams
from r1_pipeline.data import synthetic
from r1_pipeline.data.dedup import Decontaminator, exact_duplicates, near_duplicates
from r1_pipeline.data.records import ColdStartExample, Problem, SourceRecord
from r1_pipeline.data.sources import DataError, load_source
from r1_pipeline.io import atomic_path, write_json, write_jsonl


def _check_names(sources: list[SourceParams], section: str) -> None:
    names = [s.name for s in sources]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"data.{section}: source names must be unique (they prefix record ids), repeated: {dup}")


def _clean_pool(
    records: list[SourceRecord], data: DataParams, decon: Decontaminator, per_source: dict[str, dict]
) -> tuple[list[SourceRecord], dict[str, int]]:
    """Exact dedup, near dedup, decontamination; fills per-source counters, returns kept records and eval hits."""
    eval_hits = {name: 0 for name in decon.names}
    exact = exact_duplicates([r.problem for r in records])
    stage1 = []
    for r, dup in zip(records, exact, strict=True):
        if dup is None:
            stage1.append(r)
        else:
            per_source[r.source]["exact_duplicates"] += 1
    near = near_duplicates([r.problem for r in stage1], data.near_duplicate_threshold)
    stage2 = []
    for r, dup in zip(stage1, near, strict=True):
        if dup is None:
            stage2.append(r)
        else:
            per_source[r.source]["near_duplicates"] += 1
    kept = []
    for r in stage2:
        hits = decon.matches(r.problem)
        if hits:
            per_source[r.source]["contaminated"] += 1
            for name in hits:
                eval_hits[name] += 1
        else:
            kept.append(r)
    for r in kept:
        per_source[r.source]["kept"] += 1
    return kept, eval_hits


def src_label(src: SourceParams) -> str:
    """Where a source comes from, for error messages: its file, dataset id or synthetic split."""
    for attr in ("path", "hf_id"):
        if getattr(src, attr, None):
            return f"{attr} {getattr(src, attr)}"
    return f"{src.type} split {getattr(src, 'split', '?')}"


def _counters(result) -> dict[str, int]:
    return {
        "rows_read": result.rows_read,
        "loaded": len(result.records),
        "skipped_no_answer": result.skipped_no_answer,
        "skipped_no_solution": 0,
        "exact_duplicates": 0,
        "near_duplicates": 0,
        "contaminated": 0,
        "kept": 0,
    }


def build_datasets(cfg: Config | DataParams, root: str | Path | None = None) -> dict[str, Any]:
    """Everything the data stage writes, without writing it.

    Returns {"rl_train": [row], "rl_val": [row], "cold_start": [row], "corpus": [row],
    "eval": {name: [row]}, "stats": {...}}; rows are plain dicts in the written schema. `root` is where
    relative source paths are resolved (the folder of params.yaml; default: the working directory).
    Raises DataError (one line naming the source, file, line and field) when a source cannot be read.
    """
    data: DataParams = cfg.data if isinstance(cfg, Config) else cfg
    root = Path(root) if root is not None else Path.cwd()
    task, seed = data.synthetic, data.seed
    _check_names(data.rl_sources, "rl_sources")
    _check_names(data.cold_start_sources, "cold_start_sources")

    def load(src: SourceParams, role: str):
        if data.from_hub and src.hf_id and src.type != "hf":
            src = src.model_copy(update={"type": "hf"})  # the same set, from the hub (data.from_hub)
        return load_source(src, role=role, seed=seed, task=task, root=root)

    stats: dict[str, Any] = {}

    # 1. evaluation sets
    evals: dict[str, list[Problem]] = {}
    eval_stats: dict[str, dict[str, int]] = {}
    for src in data.eval_sets:
        res = load(src, "eval")
        evals[src.name] = [r.problem_row() for r in res.records]
        eval_stats[src.name] = {
            "rows_read": res.rows_read,
            "problems": len(res.records),
            "skipped_no_answer": res.skipped_no_answer,
        }
        if not res.records:
            # an empty yardstick would make evaluate fail (or report nothing) stages later
            why = f"all {res.rows_read} rows lack a usable gold answer" if res.rows_read else "the source has no rows"
            raise DataError(f"data.eval_sets: {src.name} ({src_label(src)}) has 0 problems: {why}")
    decon = Decontaminator({n: [p.problem for p in ps] for n, ps in evals.items()}, data.decontamination_ngram)

    # 2. RL prompts
    rl_stats: dict[str, dict[str, int]] = {}
    rl_records: list[SourceRecord] = []
    for src in data.rl_sources:
        res = load(src, "rl")
        rl_stats[src.name] = _counters(res)
        rl_records.extend(res.records)
    rl_kept, rl_hits = _clean_pool(rl_records, data, decon, rl_stats)
    order = list(range(len(rl_kept)))
    synthetic.derive_rng(seed, "rl_val_split").shuffle(order)
    n_val = round(len(order) * data.rl_val_fraction)
    if data.rl_val_fraction > 0 and n_val == 0 and len(order) >= 2:
        n_val = 1
    rl_val = [rl_kept[i].problem_row() for i in order[:n_val]]
    rl_train = [rl_kept[i].problem_row() for i in order[n_val:]]
    for name in rl_stats:
        rl_stats[name]["train"] = sum(p.source == name for p in rl_train)
        rl_stats[name]["val"] = sum(p.source == name for p in rl_val)
    if not rl_train:
        raise DataError("data.rl_sources: no RL prompt is left after dedup, decontamination and the val split")

    # 3. cold-start examples
    cs_stats: dict[str, dict[str, int]] = {}
    cs_records: list[SourceRecord] = []
    for i, src in enumerate(data.cold_start_sources):
        if src.type != "synthetic" and not src.solution_field:
            raise DataError(
                f"data.cold_start_sources[{i}].solution_field: source {src.name} needs a solution field "
                "(its text is the <think> reasoning of the cold-start examples)"
            )
        res = load(src, "cold_start")
        cs_stats[src.name] = _counters(res)
        with_solution = [r for r in res.records if r.solution]
        cs_stats[src.name]["skipped_no_solution"] = len(res.records) - len(with_solution)
        cs_records.extend(with_solution)
    cs_kept, cs_hits = _clean_pool(cs_records, data, decon, cs_stats)
    cold_start = [ColdStartExample(r.id, r.source, r.problem, r.answer, r.solution or "") for r in cs_kept]
    needs_cold_start = cfg.sft.enabled if isinstance(cfg, Config) else bool(data.cold_start_sources)
    if needs_cold_start and not cold_start:
        read = sum(s["rows_read"] for s in cs_stats.values())
        raise DataError(
            "data.cold_start_sources: no cold-start example is left "
            f"({len(data.cold_start_sources)} source(s), {read} rows read, after answers, solutions, dedup and "
            "decontamination) but sft.enabled is true"
        )

    # 4. pretraining corpus (synthetic task only)
    corpus_hits = {name: 0 for name in evals}
    corpus_docs = []
    makes_corpus = any(s.type == "synthetic" for s in [*data.rl_sources, *data.cold_start_sources])
    if makes_corpus:
        for doc in synthetic.generate_corpus(task, synthetic.derive_rng(seed, "corpus")):
            hits = decon.matches(doc.prompt)
            for name in hits:
                corpus_hits[name] += 1
            if not hits:
                corpus_docs.append(doc)
    corpus_contaminated = (task.corpus_documents - len(corpus_docs)) if makes_corpus else 0

    # stats
    for name in eval_stats:
        eval_stats[name]["contaminated_rl"] = rl_hits[name]
        eval_stats[name]["contaminated_cold_start"] = cs_hits[name]
        eval_stats[name]["contaminated_corpus"] = corpus_hits[name]
    styles = synthetic.style_counts(corpus_docs)
    errors = {kind: sum(d.error == kind for d in corpus_docs) for kind in ("step", "final", "guess")}
    stats["counts"] = {
        "rl_train": len(rl_train),
        "rl_val": len(rl_val),
        "cold_start": len(cold_start),
        "corpus": len(corpus_docs),
        **{f"eval.{n}": len(ps) for n, ps in evals.items()},
    }
    stats["rl_sources"] = rl_stats
    stats["cold_start_sources"] = cs_stats
    stats["eval_sets"] = eval_stats
    stats["corpus"] = {
        "documents": len(corpus_docs),
        "contaminated": corpus_contaminated,
        **{f"style.{s}": c for s, c in styles.items()},
        **{f"error.{k}": c for k, c in errors.items()},
        "error_documents": sum(errors.values()),
    }
    pools = [rl_stats, cs_stats]
    stats["removed"] = {
        "exact_duplicates": sum(s["exact_duplicates"] for p in pools for s in p.values()),
        "near_duplicates": sum(s["near_duplicates"] for p in pools for s in p.values()),
        "contaminated": sum(s["contaminated"] for p in pools for s in p.values()) + corpus_contaminated,
        "contaminated_rl": sum(s["contaminated"] for s in rl_stats.values()),
        "contaminated_cold_start": sum(s["contaminated"] for s in cs_stats.values()),
        "contaminated_corpus": corpus_contaminated,
    }
    return {
        "rl_train": [p.to_row() for p in rl_train],
        "rl_val": [p.to_row() for p in rl_val],
        "cold_start": [c.to_row() for c in cold_start],
        "corpus": [d.to_row() for d in corpus_docs],
        "eval": {name: [p.to_row() for p in ps] for name, ps in evals.items()},
        "stats": stats,
    }


def write_datasets(result: dict[str, Any], data_dir: str | Path = paths.DATA_DIR) -> None:
    """Write a `build_datasets` result under `data_dir` (outputs/data) in one step.

    Everything goes to a temporary sibling folder first and replaces `data_dir` by a rename, so a failed or
    killed run leaves the previous outputs intact and a stale eval set never survives a rerun.
    """
    data_dir = Path(data_dir)

    def rel(p: Path) -> Path:
        return Path(p).relative_to(paths.DATA_DIR)

    with atomic_path(data_dir, is_dir=True) as tmp:
        write_jsonl(tmp / rel(paths.RL_TRAIN), result["rl_train"])
        write_jsonl(tmp / rel(paths.RL_VAL), result["rl_val"])
        write_jsonl(tmp / rel(paths.COLD_START), result["cold_start"])
        write_jsonl(tmp / rel(paths.CORPUS), result["corpus"])
        eval_dir = tmp / rel(paths.EVAL_DIR)
        eval_dir.mkdir(parents=True, exist_ok=True)
        for name, rows in result["eval"].items():
            write_jsonl(eval_dir / f"{name}.jsonl", rows)
        write_json(tmp / rel(paths.DATA_STATS), result["stats"])


def summary(stats: dict[str, Any]) -> str:
    c, r = stats["counts"], stats["removed"]
    evals = ", ".join(f"{k[5:]} {v}" for k, v in c.items() if k.startswith("eval."))
    return (
        f"rl_train {c['rl_train']}, rl_val {c['rl_val']}, cold_start {c['cold_start']}, corpus {c['corpus']}; "
        f"eval: {evals}; removed: {r['exact_duplicates']} exact dup, {r['near_duplicates']} near dup, "
        f"{r['contaminated']} contaminated"
    )
