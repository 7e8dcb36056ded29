"""Verifier benchmark: agreement of both extraction policies with independent labels, and throughput.

    python bench/verify_bench.py                      # agreement on both sets, throughput on 30k-char outputs
    python bench/verify_bench.py --labels harness_label --corpus outputs/verify/corpus_harness.jsonl
    python bench/verify_bench.py --verifier-from-git 624e75f   # the same for an older r1_pipeline/verify.py

Sets: the 6,076 graded triples (../shared/data/graded/verifier_triples.jsonl) and the rewritten corpus of
bench/verify_corpus.py (built on the fly unless --corpus names a file, e.g. one re-graded by another
grader with its label in --labels). For each set and policy it prints agreement per group and overall, the
verification errors, and plain math-verify on whole responses as the baseline.

Throughput: one process, pinned to one core (os.sched_setaffinity) where the OS allows, extraction and
verification of the corpus's 30k-character `long_30k` rows (fresh caches: each run starts a new process),
reported as responses/s for each policy with the slowest item. A verifier older than the policies (no
`policy` argument) is run with its one extraction rule under both names.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import verify_corpus  # noqa: E402


def load_verifier(git_rev: str | None):
    """r1_pipeline.verify, or the file as it was at `git_rev` (loaded under another module name)."""
    if git_rev is None:
        from r1_pipeline import verify

        return verify
    source = subprocess.run(
        ["git", "show", f"{git_rev}:r1_pipeline/verify.py"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "verify_at_rev.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("verify_at_rev", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["verify_at_rev"] = module
    spec.loader.exec_module(module)
    return module


def checker(v, policy: str):
    """fn(response, gold) -> (correct, failed) for the verifier module `v` under `policy`."""
    if hasattr(v, "check"):

        def fn(response, gold):
            c = v.check(response, gold, policy)
            return c.correct, c.verdict == v.ERROR

        return fn
    takes_policy = "policy" in inspect.signature(v.extract_answer).parameters

    def old(response, gold):
        span = v.extract_answer(response, policy) if takes_policy else v.extract_answer(response)
        return v.verify(span, gold), False

    return old


def plain_math_verify(response, gold):
    from math_verify import parse, verify

    try:
        return bool(verify(parse(f"${gold}$"), parse(response))), False
    except Exception:
        return False, True


def agreement(rows, fn, label_field: str, group_field: str) -> dict:
    groups = defaultdict(lambda: [0, 0, 0])  # n, agree, failed
    for r in rows:
        ok, failed = fn(r["response"], r["gold_answer"])
        for g in (r.get(group_field) or r["benchmark"], "all"):
            s = groups[g]
            s[0] += 1
            s[1] += bool(ok) == bool(r[label_field])
            s[2] += failed
    return dict(groups)


def print_table(title: str, results: dict[str, dict]) -> None:
    names = list(results)
    groups = sorted({g for res in results.values() for g in res} - {"all"}) + ["all"]
    print(f"\n### {title}\n")
    print(
        "| group | n | "
        + " | ".join(f"{n} agreement" for n in names)
        + " | "
        + " | ".join(f"{n} errors" for n in names)
        + " |"
    )
    print("|---|---:|" + "---:|" * (2 * len(names)))
    for g in groups:
        n = next(res[g][0] for res in results.values() if g in res)
        cells = [f"{100 * res[g][1] / res[g][0]:.2f}%" if g in res else "-" for res in results.values()]
        errs = [str(res[g][2]) if g in res else "-" for res in results.values()]
        line = f"| {g} | {n:,} | " + " | ".join(cells) + " | " + " | ".join(errs) + " |"
        print(f"**{line}**" if g == "all" else line)


def throughput(rows, v, policy: str) -> tuple[float, float, int]:
    """Responses/s and the slowest item, caches cleared first (math-verify's import is done before)."""
    if hasattr(v, "_load_math_verify"):
        v._load_math_verify()
    for cache in ("_math_verify_equal", "_parse_gold"):
        if hasattr(getattr(v, cache, None), "cache_clear"):
            getattr(v, cache).cache_clear()
    fn = checker(v, policy)
    times = []
    for r in rows:
        t0 = time.perf_counter()
        fn(r["response"], r["gold_answer"])
        times.append(time.perf_counter() - t0)
    return len(times) / sum(times), max(times), len(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--verifier-from-git", metavar="REV", help="benchmark r1_pipeline/verify.py as of this commit")
    p.add_argument("--triples", type=Path, default=verify_corpus.TRIPLES)
    p.add_argument("--corpus", type=Path, help="a corpus JSONL (default: build bench/verify_corpus.py's)")
    p.add_argument("--labels", default="label", help="label field of the corpus (e.g. harness_label)")
    p.add_argument("--no-plain", action="store_true", help="skip plain math-verify (the slowest column)")
    p.add_argument("--sections", default="triples,corpus,throughput")
    args = p.parse_args()
    sections = set(args.sections.split(","))
    try:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        pinned = "pinned to one core"
    except (AttributeError, OSError):
        pinned = "not pinned (no sched_setaffinity)"
    v = load_verifier(args.verifier_from_git)
    label = args.verifier_from_git or "working tree"
    print(f"verifier: r1_pipeline/verify.py ({label}); {pinned}")
    if args.corpus:
        with args.corpus.open(encoding="utf-8") as f:
            corpus = [json.loads(line) for line in f if line.strip()]
    else:
        corpus = verify_corpus.build(args.triples)
    if "throughput" in sections:
        long_rows = [r for r in corpus if r["variant"] == "long_30k"]
        chars = sum(len(r["response"]) for r in long_rows) / len(long_rows)
        print(f"\n### throughput, {len(long_rows)} long responses (mean {chars:,.0f} chars), one process\n")
        print("| policy | responses/s | slowest item ms |")
        print("|---|---:|---:|")
        for policy in ("eval", "strict"):
            rate, slowest, _ = throughput(long_rows, v, policy)
            print(f"| {policy} | {rate:,.0f} | {1000 * slowest:.1f} |")

    fns = {"eval": checker(v, "eval"), "strict": checker(v, "strict")}
    if not args.no_plain:
        fns["plain math-verify"] = plain_math_verify
    if "triples" in sections:
        triples = verify_corpus.load_triples(args.triples)
        print_table(
            f"graded triples ({len(triples):,} rows, label `label`)",
            {name: agreement(triples, fn, "label", "benchmark") for name, fn in fns.items()},
        )
    if "corpus" in sections:
        print_table(
            f"rewritten corpus ({len(corpus):,} rows, label `{args.labels}`)",
            {name: agreement(corpus, fn, args.labels, "group") for name, fn in fns.items()},
        )


if __name__ == "__main__":
    main()
