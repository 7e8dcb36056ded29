"""A second graded set for the verifier: real long responses rewritten into the shapes other models write.

    python bench/verify_corpus.py --out outputs/verify/corpus.jsonl     # about 1 s, about 5,000 rows

The 6,076 graded triples (../shared/data/graded/verifier_triples.jsonl) helped shape the verifier's rules,
so agreement on them is in-sample. This set is built from the same real responses, rewritten the ways other
models answer (R1 `<think>` blocks, no box, prose final statements, several boxes, empty boxes, answers
only inside the reasoning, truncated reasoning, 30k-character outputs, multiple choice, numeric and
thousands-separated golds), and each row carries the label the rewrite implies:

- `label`: the source's independent label (OpenAI's exact match for GSM8K, the Qwen2.5-Math harness for
  MATH) carried over when the rewrite keeps the final answer; `false` when it removes it (an empty box,
  reasoning that never ends, no answer after `</think>`); the chosen letter's correctness for multiple
  choice. `label_basis` says which.
- `variant` names the rewrite; `group` is `<benchmark>/<variant>`, so `r1 verify --group-field group`
  breaks agreement down by rewrite.

It is never written into the project (the responses are ../shared/data's): tests and benchmarks build it
on the fly. docs/verification.md reports the agreement of both policies on it, and how these labels compare
with the Qwen2.5-Math harness's own grading of the rewritten responses.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRIPLES = ROOT.parent / "shared/data/graded/verifier_triples.jsonl"
LONG_CHARS = 30_000
GSM8K_PER_VARIANT = 400  # GSM8K responses per rewrite (of 5,276): the MATH ones are the long, varied ones


def _pick(uid: str, salt: str, n: int) -> int:
    """A deterministic choice in range(n) from the row id (the same corpus on every machine)."""
    return int(hashlib.sha256(f"{salt}:{uid}".encode()).hexdigest()[:8], 16) % n


def load_triples(path: Path = TRIPLES) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


_BOX = re.compile(r"\\boxed\{")


def _last_box_span(text: str) -> tuple[int, int, str] | None:
    """(start of `\\boxed{`, end after its `}`, content) of the last closed box."""
    starts = [m.start() for m in _BOX.finditer(text)]
    for start in reversed(starts):
        depth, i = 0, start + len("\\boxed")
        while i < len(text):
            c = text[i]
            if c == "\\":
                i += 2
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return start, i + 1, text[start + len("\\boxed{") : i]
            i += 1
    return None


def _split_final(response: str) -> tuple[str, str]:
    """(reasoning, final paragraph): the last paragraph holds the final answer in these responses."""
    body = response.rstrip()
    cut = body.rfind("\n\n")
    if cut < 0:
        cut = body.rfind("\n")
    return (body[:cut], body[cut:].strip()) if cut > 0 else ("", body)


def _row(src: dict, variant: str, response: str, label: bool, basis: str, gold=None) -> dict:
    bench = src["benchmark"]
    return {
        "uid": f"{src['uid']}#{variant}",
        "benchmark": bench,
        "variant": variant,
        "group": f"{bench}/{variant}",
        "response": response,
        "gold_answer": src["gold_answer"] if gold is None else gold,
        "label": bool(label),
        "label_basis": basis,
        "source_uid": src["uid"],
    }


def _pad_to(reasoning: str, final: str, target: int) -> str:
    """An R1-style output of about `target` characters: the reasoning repeated as re-checks, then the final."""
    reasoning = reasoning or final
    parts, size = [reasoning], len(reasoning)
    while size + len(final) < target:
        parts.append("Wait, let me double-check this step by step.\n\n" + reasoning)
        size += len(parts[-1])
    return "<think>\n" + "\n\n".join(parts) + "\n</think>\n\n" + final


_PHRASINGS = [
    "Therefore, the final answer is {a}.",
    "The answer is {a}.",
    "**Final Answer:** {a}",
    "Answer: {a}",
    "So the answer is:\n\\[\n{a}\n\\]",
    "The final answer is ${a}$. I hope it is correct.",
]


def math_variants(src: dict) -> list[dict]:
    """Rewrites of one MATH response that ends in a box (the Qwen2.5-Math-Instruct outputs)."""
    response, label, uid = src["response"], src["label"], src["uid"]
    box = _last_box_span(response)
    if box is None:
        return []
    start, end, content = box
    reasoning, final = _split_final(response)
    rows = [_row(src, "r1_think", f"<think>\n{reasoning}\n</think>\n\n{final}", label, "source label")]
    # the box removed, the math left where it was: "the area is $12\pi$."
    rows.append(_row(src, "unboxed", response[:start] + content + response[end:], label, "source label"))
    # the final paragraph replaced by a final-answer phrase without a box
    phrasing = _PHRASINGS[_pick(uid, "phrase", len(_PHRASINGS))]
    stated = phrasing.format(a=content if "{a}$" in phrasing or "\\[" in phrasing else f"${content}$")
    rows.append(_row(src, "phrase", f"{reasoning}\n\n{stated}", label, "source label"))
    # an earlier box in the reasoning (a first guess), the final box last
    wrong = "\\frac{1}{2}" if content.strip() != "\\frac{1}{2}" else "3"
    guess = f"A first guess would be $\\boxed{{{wrong}}}$, but let us check it.\n\n"
    rows.append(_row(src, "several_boxes", guess + response, label, "source label"))
    # an empty final box: no answer
    rows.append(_row(src, "empty_box", response[:start] + "\\boxed{}" + response[end:], False, "no answer"))
    # the answer only inside a closed reasoning block, nothing after it: scored as the Qwen2.5-Math harness
    # scores it (the last box of the whole text; lighteval drops the block and finds nothing)
    rows.append(
        _row(
            src,
            "answer_in_think",
            f"<think>\n{response}\n</think>\n\n",
            label,
            "source label (answer in the reasoning)",
        )
    )
    # reasoning cut off mid-way (generation ran out of tokens): no answer. Kept only when the cut text
    # ends in no number equal to the gold, so that no grader's last-number fallback can find one.
    cut = reasoning[: len(reasoning) // 2].rsplit(" ", 1)[0]
    numbers = re.findall(r"\d+(?:\.\d+)?", cut.replace(",", ""))
    if cut and (not numbers or numbers[-1].lstrip("0") != src["gold_answer"].strip().lstrip("0")):
        rows.append(_row(src, "truncated_think", f"<think>\n{cut}", False, "no answer"))
    # a 30k-character R1 output
    rows.append(_row(src, "long_30k", _pad_to(reasoning, final, LONG_CHARS), label, "source label"))
    return rows


_ANSWER_LINE = re.compile(r"\nA:\s*(.+?)\s*$")


def gsm8k_variants(src: dict, which: set[str]) -> list[dict]:
    """Rewrites of one GPT-3 GSM8K response ("…\\nA: 26")."""
    response, label = src["response"], src["label"]
    m = _ANSWER_LINE.search(response)
    if m is None:
        return []
    work, answer = response[: m.start()], m.group(1)
    rows = []
    if "prose" in which:  # the final answer stated in a sentence, no box, no phrase (the 84 false negatives)
        rows.append(_row(src, "prose", f"{work}\nTherefore, the result is {answer} in total.", label, "source label"))
    if "boxed_r1" in which:
        rows.append(
            _row(
                src,
                "boxed_r1",
                f"<think>\n{work}\n</think>\n\nThe answer is $\\boxed{{{answer}}}$.",
                label,
                "source label",
            )
        )
    gold = src["gold_answer"]
    if "numeric_gold" in which and re.fullmatch(r"-?\d+", gold):  # AMC stores 27.0
        rows.append(_row(src, "numeric_gold", response, label, "source label", gold=float(gold)))
    if "leading_zero_gold" in which and re.fullmatch(r"\d{1,3}", gold):  # AIME writes 025
        rows.append(_row(src, "leading_zero_gold", response, label, "source label", gold=gold.zfill(3)))
    if "thousands_gold" in which and re.fullmatch(r"\d{4,}", gold):  # MATH writes 10{,}080 or 10,\!080
        sep = "{,}" if _pick(src["uid"], "sep", 2) else ",\\!"
        grouped = f"{int(gold):,}".replace(",", sep)
        rows.append(_row(src, "thousands_gold", response, label, "source label", gold=grouped))
    return rows


_LETTERS = "ABCDE"


def choice_variants(src: dict) -> list[dict]:
    """A multiple-choice version of a MATH response with a short gold: the options listed as "A: …" lines
    in the reasoning, the gold at a letter fixed by the row id, and the response choosing a letter in one
    of the ways models write it. The label is whether the chosen letter is the gold's."""
    response, uid, gold = src["response"], src["uid"], src["gold_answer"]
    box = _last_box_span(response)
    if box is None or len(gold) > 20 or "\\text" in gold:
        return []
    start, end, content = box
    right = _pick(uid, "letter", 5)
    options = [f"{i + 1}" if i != right else gold for i in range(5)]
    if gold.strip() in options[:right] + options[right + 1 :]:
        return []
    listing = "The options are:\n" + "\n".join(f"{_LETTERS[i]}: ${o}$" for i, o in enumerate(options)) + "\n\n"
    # the response picks the letter of its own final answer when it is among the options, else (E)
    chosen = right if src["label"] else (right + 1 + _pick(uid, "wrong", 4)) % 5
    letter = _LETTERS[chosen]
    forms = [
        f"\\text{{({letter})}}",
        f"\\textbf{{({letter})}}",
        f"({letter})",
        f"\\text{{({letter}) }}{options[chosen]}",
        letter,
    ]
    form = forms[_pick(uid, "form", len(forms))]
    rewritten = listing + response[:start] + "\\boxed{" + form + "}" + response[end:]
    gold_forms = [f"\\text{{({_LETTERS[right]})}}", f"({_LETTERS[right]})", _LETTERS[right]]
    gold_letter = gold_forms[_pick(uid, "gold_form", len(gold_forms))]
    return [_row(src, "multiple_choice", rewritten, chosen == right, "chosen letter", gold=gold_letter)]


GSM8K_VARIANTS = ("prose", "boxed_r1", "numeric_gold", "leading_zero_gold", "thousands_gold")


def build(path: Path = TRIPLES) -> list[dict]:
    """The whole corpus, deterministic: every MATH response rewritten every way, a fixed sample of the
    GSM8K ones per rewrite."""
    rows: list[dict] = []
    triples = load_triples(path)
    for src in triples:
        if src["benchmark"] == "math_test":
            rows += math_variants(src)
            rows += choice_variants(src)
    gsm8k = [r for r in triples if r["benchmark"] == "gsm8k_test"]
    for variant in GSM8K_VARIANTS:
        taken = 0
        for src in sorted(gsm8k, key=lambda r: _pick(r["uid"], variant, 1 << 30)):
            made = gsm8k_variants(src, {variant})
            rows += made
            taken += bool(made)
            if taken == GSM8K_PER_VARIANT:
                break
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "outputs/verify/corpus.jsonl")
    p.add_argument("--triples", type=Path, default=TRIPLES)
    args = p.parse_args()
    rows = build(args.triples)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["group"]] = counts.get(r["group"], 0) + 1
    print(f"wrote {len(rows)} rows to {args.out}")
    for group, n in sorted(counts.items()):
        print(f"  {group:<32} {n:>5}")


if __name__ == "__main__":
    main()
