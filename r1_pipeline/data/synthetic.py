"""The synthetic verifiable task of the tiny profile: chains of additions and subtractions.

A problem is the bare expression (`7+3-5+2`; compact, because the tiny model reads characters), its gold answer
the final total (`7`), its difficulty the number of operations. The first operand is drawn from
1..first_operand_max, later operands from 1..operand_max, and each operation is + or - so that every running
total stays in 0..total_max.

Which expressions are held out is decided by a stable hash of the expression text (sha256, not Python's
salted `hash()`), independent of any seed: the held-out set is the same in every run and every profile that
shares the task settings, and `split: train` sources, the RL/cold-start data and the pretraining corpus never
contain a held-out expression.

The renderers (`format_scratchpad`, `format_lazy`, `format_direct`, `format_plain`) produce the completion
texts of the four corpus styles; the `<think>…</think>\\n<answer>…</answer>` shape is the one of
`r1_pipeline.chat.format_completion`, which SFT, rewards and evaluation share.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from r1_pipeline.chat import format_completion
from r1_pipeline.config import SyntheticTaskParams
from r1_pipeline.data.records import ColdStartExample, CorpusDocument, SourceRecord

STYLES = ("scratchpad", "lazy", "direct", "plain")

# A lazy document's guess is right this often (when the document is not one of the deliberate errors); otherwise
# it is the answer off by a small amount. The habit is worse than the scratchpad, but not useless.
LAZY_GUESS_CORRECT = 0.5
# Wrong values (lazy guesses, error documents) are the true value off by 1..MAX_OFFSET, kept in 0..total_max.
MAX_OFFSET = 3
# Consecutive duplicate draws after which a difficulty level is considered exhausted (its space is small).
_MAX_MISSES = 200

_TOKEN = re.compile(r"([+-])(\d+)")


@dataclass(frozen=True)
class Chain:
    """`first` followed by (op, operand) steps."""

    first: int
    steps: tuple[tuple[str, int], ...]

    @property
    def expression(self) -> str:
        return str(self.first) + "".join(f"{op}{b}" for op, b in self.steps)

    @property
    def difficulty(self) -> int:
        return len(self.steps)

    @property
    def totals(self) -> list[int]:
        """Running totals after each step (the last one is the answer)."""
        out, t = [], self.first
        for op, b in self.steps:
            t = t + b if op == "+" else t - b
            out.append(t)
        return out

    @property
    def answer(self) -> int:
        return self.totals[-1] if self.steps else self.first


def parse_expression(expression: str) -> Chain:
    """`7+3-5` -> Chain(7, (('+', 3), ('-', 5))). Raises ValueError on anything else."""
    m = re.fullmatch(r"(\d+)((?:[+-]\d+)*)", expression.strip())
    if not m:
        raise ValueError(f"not a synthetic expression: {expression!r}")
    return Chain(int(m.group(1)), tuple((op, int(b)) for op, b in _TOKEN.findall(m.group(2))))


def evaluate(expression: str) -> int:
    return parse_expression(expression).answer


def expression_hash(expression: str) -> str:
    return hashlib.sha256(expression.encode()).hexdigest()


def is_heldout(expression: str, heldout_fraction: float) -> bool:
    """Stable membership of the held-out split: the first 64 bits of sha256(expression) as a fraction."""
    return int(expression_hash(expression)[:16], 16) / 2**64 < heldout_fraction


def in_split(expression: str, split: str, heldout_fraction: float) -> bool:
    if split not in ("train", "heldout"):
        raise ValueError(f"synthetic split must be `train` or `heldout`, got {split!r}")
    return is_heldout(expression, heldout_fraction) == (split == "heldout")


def record_id(source: str, expression: str) -> str:
    return f"{source}-{expression_hash(expression)[:10]}"


def derive_rng(seed: int, *parts: object) -> random.Random:
    """An independent, reproducible RNG per (seed, purpose...), e.g. derive_rng(0, "rl", "arith")."""
    key = "\x1f".join([str(seed), *map(str, parts)]).encode()
    return random.Random(int(hashlib.sha256(key).hexdigest()[:16], 16))


# ------------------------------------------------------------------------------------------------- sampling


def sample_chain(rng: random.Random, n_ops: int, task: SyntheticTaskParams) -> Chain:
    """One chain of `n_ops` operations. Each operand is drawn uniformly among those for which + or - keeps the
    total in range; the operation is then drawn among the ones that do."""
    total = rng.randint(1, min(task.first_operand_max, task.total_max))
    first, steps = total, []
    for _ in range(n_ops):
        usable = [b for b in range(1, task.operand_max + 1) if total + b <= task.total_max or total - b >= 0]
        b = rng.choice(usable)
        ops = [op for op, ok in (("+", total + b <= task.total_max), ("-", total - b >= 0)) if ok]
        op = rng.choice(ops)
        total = total + b if op == "+" else total - b
        steps.append((op, b))
    return Chain(first, tuple(steps))


def sample_split_chain(rng: random.Random, n_ops: int, task: SyntheticTaskParams, split: str) -> Chain:
    """Rejection-sample a chain until it belongs to `split`."""
    while True:
        chain = sample_chain(rng, n_ops, task)
        if in_split(chain.expression, split, task.heldout_fraction):
            return chain


def generate_chains(task: SyntheticTaskParams, n: int, split: str, rng: random.Random) -> list[Chain]:
    """`n` distinct chains of `split`, each with a difficulty drawn uniformly from chain_lengths.

    A difficulty whose space runs out (short chains have only a few hundred expressions) stops being drawn, so
    fewer than `n` chains come back only when every level is exhausted.
    """
    in_split(" ", split, task.heldout_fraction)  # validates the split name
    levels = sorted(set(task.chain_lengths))
    seen: set[str] = set()
    misses = {n_ops: 0 for n_ops in levels}
    out: list[Chain] = []
    while len(out) < n and levels:
        n_ops = rng.choice(levels)
        chain = sample_chain(rng, n_ops, task)
        expr = chain.expression
        if expr in seen or not in_split(expr, split, task.heldout_fraction):
            misses[n_ops] += 1
            if misses[n_ops] >= _MAX_MISSES:
                levels.remove(n_ops)
            continue
        misses[n_ops] = 0
        seen.add(expr)
        out.append(chain)
    return out


# ------------------------------------------------------------------------------------------------ renderers


def items(chain: Chain) -> list[str]:
    """The expression as its terms: `7+3-5+2` -> ["7", "+3", "-5", "+2"] (one token each, see atomic_tokens)."""
    return [str(chain.first)] + [f"{op}{b}" for op, b in chain.steps]


def scratchpad_lines(chain: Chain, error_step: int | None = None, offset: int = 0) -> list[str]:
    """The expression, then one line per operation that folds the first two terms into their total:

        7+3-5+2
        _10-5+2
        __5+2
        ___7

    Each line keeps the previous line's columns (a `_` for each term already folded in), so every term sits
    exactly one line length below where it was: a tiny model copies by a fixed offset instead of searching
    the prompt, which it learns in a few hundred steps on any seed (docs/architecture.md, "The tiny profile").

    With `error_step=k` (0-based) the total of operation k is off by `offset`, and the later lines compute
    correctly from that wrong value, so the error propagates to the final total.
    """
    terms = items(chain)
    lines = ["".join(terms)]
    for i, true_total in enumerate(chain.totals):
        shown = true_total + (offset if error_step is not None and i >= error_step else 0)
        lines.append("_" * (i + 1) + str(shown) + "".join(terms[i + 2 :]))
    return lines


def scratchpad_reasoning(problem: str | Chain) -> str:
    """The correct step-by-step reasoning of an expression: `7+3-5+2\n_10-5+2\n__5+2\n___7`."""
    chain = parse_expression(problem) if isinstance(problem, str) else problem
    return "\n".join(scratchpad_lines(chain))


def atomic_tokens(task: SyntheticTaskParams) -> list[str]:
    """The tokens the tiny tokenizer keeps whole: every number above 9 the task can show, every signed operand
    (`+3`, `-12`) and the `_` column marker; one token per term keeps the scratchpad's columns aligned."""
    top = max(task.total_max, task.first_operand_max)
    numbers = [str(n) for n in range(10, top + 1)]
    operands = [f"{op}{b}" for op in "+-" for b in range(1, task.operand_max + 1)]
    return numbers + operands + ["_"]


def format_scratchpad(reasoning: str, answer: int | str) -> str:
    """`<think>\\n7+3=10\\n10-5=5\\n5+2=7\\n</think>\\n<answer>7</answer>`."""
    return format_completion(reasoning, str(answer))


def format_lazy(expression: str, guess: int | str) -> str:
    """`<think>\\n7+3-5+2\\n</think>\\n<answer>G</answer>`: a think block that only restates the problem."""
    return format_completion(expression, str(guess))


def format_direct(answer: int | str) -> str:
    """`<answer>7</answer>`."""
    return format_completion(None, str(answer))


def format_plain(answer: int | str) -> str:
    """`7`."""
    return str(answer)


def _wrong_value(rng: random.Random, value: int, total_max: int) -> int:
    """`value` off by 1..MAX_OFFSET, within 0..total_max (never equal to `value`)."""
    options = [value + d for d in range(-MAX_OFFSET, MAX_OFFSET + 1) if d and 0 <= value + d <= total_max]
    return rng.choice(options)


def render_document(
    chain: Chain, style: str, error: bool, rng: random.Random, task: SyntheticTaskParams
) -> CorpusDocument:
    """A corpus document of `style`; `error=True` makes its final answer wrong (see CorpusDocument.error)."""
    expr, answer = chain.expression, chain.answer
    if style == "scratchpad":
        if not error:
            return CorpusDocument(expr, format_scratchpad(scratchpad_reasoning(chain), answer), style)
        if rng.random() < 0.5:
            # A wrong step result that propagates: pick a step and an offset that keep every later total in range.
            totals = chain.totals
            choices = [
                (k, d)
                for k in range(len(totals))
                for d in range(-MAX_OFFSET, MAX_OFFSET + 1)
                if d and all(0 <= t + d <= task.total_max for t in totals[k:])
            ]
            if choices:
                k, d = rng.choice(choices)
                lines = scratchpad_lines(chain, error_step=k, offset=d)
                return CorpusDocument(expr, format_scratchpad("\n".join(lines), answer + d), style, "step")
        wrong = _wrong_value(rng, answer, task.total_max)
        return CorpusDocument(expr, format_scratchpad(scratchpad_reasoning(chain), wrong), style, "final")
    if style == "lazy":
        if error or rng.random() >= LAZY_GUESS_CORRECT:
            guess = _wrong_value(rng, answer, task.total_max)
            return CorpusDocument(expr, format_lazy(expr, guess), style, "guess" if error else "")
        return CorpusDocument(expr, format_lazy(expr, answer), style)
    if style in ("direct", "plain"):
        shown = _wrong_value(rng, answer, task.total_max) if error else answer
        text = format_direct(shown) if style == "direct" else format_plain(shown)
        return CorpusDocument(expr, text, style, "final" if error else "")
    raise ValueError(f"unknown corpus style {style!r}; expected one of {STYLES}")


def _exact_counts(weights: dict[str, float], n: int) -> dict[str, int]:
    """Split n by weights with the largest-remainder method (exact, deterministic)."""
    styles = [s for s in STYLES if weights.get(s, 0) > 0]
    total = sum(weights[s] for s in styles)
    raw = {s: n * weights[s] / total for s in styles}
    counts = {s: int(raw[s]) for s in styles}
    by_remainder = sorted(styles, key=lambda s: (-(raw[s] - counts[s]), STYLES.index(s)))
    for s in by_remainder[: n - sum(counts.values())]:
        counts[s] += 1
    return counts


def generate_corpus(task: SyntheticTaskParams, rng: random.Random) -> list[CorpusDocument]:
    """`corpus_documents` documents over train-split expressions (repeats allowed, never a held-out one).

    Style shares follow corpus_style_weights exactly (largest remainder); exactly round(corpus_error_rate * n)
    documents carry an error. Lazy documents that are not error documents still guess wrong half of the time.
    """
    n = task.corpus_documents
    counts = _exact_counts(task.corpus_style_weights, n)
    styles = [s for s in STYLES for _ in range(counts.get(s, 0))]
    rng.shuffle(styles)
    errors = set(rng.sample(range(n), round(task.corpus_error_rate * n)))
    levels = list(task.chain_lengths)
    docs = []
    for i, style in enumerate(styles):
        chain = sample_split_chain(rng, rng.choice(levels), task, "train")
        docs.append(render_document(chain, style, i in errors, rng, task))
    return docs


# ------------------------------------------------------------------------------------------------- records


def chain_record(source: str, chain: Chain, scratchpad: bool = True) -> SourceRecord:
    """A problem record; its solution is the scratchpad, or with `scratchpad=False` a think that only restates
    the expression (the short-think examples of a cold start that is not curated)."""
    return SourceRecord(
        id=record_id(source, chain.expression),
        source=source,
        problem=chain.expression,
        answer=str(chain.answer),
        solution=scratchpad_reasoning(chain) if scratchpad else chain.expression,
        difficulty=chain.difficulty,
    )


def cold_start_example(record: SourceRecord) -> ColdStartExample:
    return ColdStartExample(record.id, record.source, record.problem, record.answer, record.solution or "")


def style_counts(docs: Iterable[CorpusDocument]) -> dict[str, int]:
    counts = {s: 0 for s in STYLES}
    for d in docs:
        counts[d.style] += 1
    return counts


def answer_of_completion(completion: str) -> str | None:
    """The answer a corpus completion gives: the <answer> span, or the whole text of a plain document."""
    m = re.search(r"<answer>(.*?)</answer>", completion, re.S)
    if m:
        return m.group(1).strip()
    return completion.strip() if "<" not in completion else None


def check_scratchpad(lines: Sequence[str]) -> bool:
    """Whether each line folds the previous line's first two terms correctly and copies the rest (used by
    tests and sanity checks). The first line is the expression itself."""
    if not lines:
        return False
    try:
        prev = items(parse_expression(lines[0]))
    except ValueError:
        return False
    for depth, line in enumerate(lines[1:], 1):
        if not line.startswith("_" * depth) or len(prev) < 2:
            return False
        try:
            terms = items(parse_expression(line[depth:]))
        except ValueError:
            return False
        folded = int(prev[0]) + int(prev[1])
        if terms != [str(folded)] + prev[2:]:
            return False
        prev = terms
    return True
