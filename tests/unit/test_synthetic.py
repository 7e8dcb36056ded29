"""The synthetic arithmetic-chain task: generator, held-out split, traces, corpus styles and errors."""

import random

import pytest

from r1_pipeline.config import SyntheticTaskParams
from r1_pipeline.data import synthetic as syn
from r1_pipeline.data.synthetic import (
    answer_of_completion,
    check_scratchpad,
    derive_rng,
    format_direct,
    format_lazy,
    format_plain,
    format_scratchpad,
    generate_chains,
    generate_corpus,
    is_heldout,
    parse_expression,
    scratchpad_reasoning,
)

TASK = SyntheticTaskParams()


def test_chains_respect_ranges_and_difficulty():
    rng = random.Random(0)
    task = SyntheticTaskParams(chain_lengths=[1, 3, 8], first_operand_max=12, operand_max=7, total_max=15)
    for _ in range(3000):
        n_ops = rng.choice(task.chain_lengths)
        chain = syn.sample_chain(rng, n_ops, task)
        assert chain.difficulty == n_ops
        assert 1 <= chain.first <= 12
        assert all(1 <= b <= 7 and op in "+-" for op, b in chain.steps)
        assert all(0 <= t <= 15 for t in chain.totals)
        assert parse_expression(chain.expression) == chain
        assert eval(chain.expression) == chain.answer  # noqa: S307 - our own digits-and-signs expression


def test_first_operand_is_capped_by_total_max():
    task = SyntheticTaskParams(first_operand_max=50, total_max=10)
    rng = random.Random(1)
    assert all(syn.sample_chain(rng, 2, task).first <= 10 for _ in range(500))


def test_heldout_split_is_stable_disjoint_and_sized():
    # Pinned: the split depends only on sha256 of the text, never on a seed or Python's hash salt; changing the
    # rule would silently move expressions between training and evaluation across versions.
    assert [is_heldout(e, 0.2) for e in ("7+3-5+2", "12-7+9", "8-8+7", "2-2+9-9+8")] == [False, False, True, True]
    h = int(syn.expression_hash("7+3-5+2")[:16], 16) / 2**64
    assert is_heldout("7+3-5+2", 0.2) == (h < 0.2)
    train = generate_chains(TASK, 800, "train", derive_rng(0, "a"))
    held = generate_chains(TASK, 400, "heldout", derive_rng(0, "b"))
    train_exprs, held_exprs = {c.expression for c in train}, {c.expression for c in held}
    assert len(train_exprs) == 800 and len(held_exprs) == 400  # distinct
    assert not train_exprs & held_exprs
    assert all(is_heldout(e, 0.2) for e in held_exprs)
    assert not any(is_heldout(e, 0.2) for e in train_exprs)
    # another seed draws other expressions, but membership never changes
    other = generate_chains(TASK, 400, "train", derive_rng(7, "a"))
    assert not {c.expression for c in other} & held_exprs
    rng = random.Random(3)
    sample = [syn.sample_chain(rng, 6, TASK).expression for _ in range(4000)]
    share = sum(is_heldout(e, 0.2) for e in sample) / len(sample)
    assert 0.17 < share < 0.23


def test_bad_split_name():
    with pytest.raises(ValueError, match="train.*heldout"):
        generate_chains(TASK, 5, "test", random.Random(0))


def test_small_space_is_exhausted_without_hanging():
    task = SyntheticTaskParams(chain_lengths=[1], first_operand_max=2, operand_max=1, total_max=3)
    chains = generate_chains(task, 100, "train", random.Random(0))
    exprs = [c.expression for c in chains]
    assert len(exprs) == len(set(exprs)) < 100  # at most 1+1, 1-1, 2+1, 2-1 exist


def test_generation_is_deterministic():
    a = generate_chains(TASK, 300, "train", derive_rng(5, "rl", "arith"))
    b = generate_chains(TASK, 300, "train", derive_rng(5, "rl", "arith"))
    c = generate_chains(TASK, 300, "train", derive_rng(6, "rl", "arith"))
    assert a == b
    assert a != c
    assert derive_rng(0, "rl", "x").random() != derive_rng(0, "cold_start", "x").random()


def test_reasoning_and_renderers():
    assert scratchpad_reasoning("7+3-5+2") == "7+3-5+2\n_10-5+2\n__5+2\n___7"
    assert scratchpad_reasoning("4-4") == "4-4\n_0"
    assert format_scratchpad("7+3-5+2\n_10-5+2\n__5+2\n___7", 7) == (
        "<think>\n7+3-5+2\n_10-5+2\n__5+2\n___7\n</think>\n<answer>7</answer>"
    )
    # a wrong fold, a dropped term or a missing column marker fails the check
    assert not check_scratchpad(["7+3-5+2", "_11-5+2", "__6+2", "___8"])
    assert not check_scratchpad(["7+3-5+2", "_10+2", "___12"])
    assert not check_scratchpad(["7+3-5+2", "10-5+2", "5+2", "7"])
    assert format_lazy("7+3-5+2", 8) == "<think>\n7+3-5+2\n</think>\n<answer>8</answer>"
    assert format_direct(7) == "<answer>7</answer>"
    assert format_plain(7) == "7"
    rng = random.Random(0)
    for _ in range(500):
        chain = syn.sample_chain(rng, rng.choice([1, 2, 4, 6]), TASK)
        lines = scratchpad_reasoning(chain).split("\n")
        assert len(lines) == chain.difficulty + 1 and lines[0] == chain.expression
        assert check_scratchpad(lines)
        assert lines[-1] == "_" * chain.difficulty + str(chain.answer)


def _true_answer(prompt: str) -> int:
    return syn.evaluate(prompt)


def test_corpus_styles_errors_and_train_only():
    task = SyntheticTaskParams(
        corpus_documents=4000,
        corpus_error_rate=0.25,
        chain_lengths=[1, 2, 4, 6],
        corpus_style_weights={"scratchpad": 0.35, "lazy": 0.25, "direct": 0.2, "plain": 0.2},
    )
    docs = generate_corpus(task, derive_rng(0, "corpus"))
    assert len(docs) == 4000
    assert syn.style_counts(docs) == {"scratchpad": 1400, "lazy": 1000, "direct": 800, "plain": 800}
    assert sum(bool(d.error) for d in docs) == 1000
    assert {d.error for d in docs} == {"", "step", "final", "guess"}
    assert not any(is_heldout(d.prompt, task.heldout_fraction) for d in docs)
    lazy_right = lazy_total = 0
    for d in docs:
        truth = _true_answer(d.prompt)
        given = answer_of_completion(d.completion)
        assert given is not None and 0 <= int(given) <= task.total_max
        if d.error:
            assert int(given) != truth, d  # every error document really is wrong
        if d.style == "scratchpad":
            body = d.completion.split("<think>\n")[1].split("\n</think>")[0]
            lines = body.split("\n")
            assert len(lines) == parse_expression(d.prompt).difficulty + 1
            if d.error == "step":
                assert not check_scratchpad(lines)
                assert lines[-1].lstrip("_") == given  # the wrong step propagates to the answer
            else:
                assert check_scratchpad(lines)
                assert (int(given) == truth) == (d.error == "")
        elif d.style == "lazy":
            assert d.completion == format_lazy(d.prompt, given)
            if not d.error:
                lazy_total += 1
                lazy_right += int(given) == truth
        elif d.style == "direct":
            assert d.completion == f"<answer>{given}</answer>"
            assert (int(given) == truth) == (d.error == "")
        else:
            assert d.completion == given
            assert (int(given) == truth) == (d.error == "")
    # a lazy guess outside the error share is right only about LAZY_GUESS_CORRECT of the time
    assert 0.4 < lazy_right / lazy_total < 0.6


def test_corpus_is_deterministic_and_respects_zero_weights():
    task = SyntheticTaskParams(corpus_documents=500, corpus_style_weights={"scratchpad": 1, "plain": 0})
    a = generate_corpus(task, derive_rng(1, "corpus"))
    assert a == generate_corpus(task, derive_rng(1, "corpus"))
    assert a != generate_corpus(task, derive_rng(2, "corpus"))
    assert {d.style for d in a} == {"scratchpad"}


def test_atomic_tokens_keep_every_term_one_token():
    """Numbers above 9 and signed operands are single tokens, so a scratchpad line's columns line up with the
    line above (the offset a tiny model copies by)."""
    from r1_pipeline.modeling import train_tokenizer

    task = SyntheticTaskParams(first_operand_max=19, operand_max=9, total_max=19)
    tok = train_tokenizer(["12+3-9\n_15-9\n__6"], 300, atomic=syn.atomic_tokens(task))
    lines = scratchpad_reasoning("12+3-9+7").split("\n")
    pieces = [[tok.decode([i]) for i in tok(line, add_special_tokens=False)["input_ids"]] for line in lines]
    assert pieces == [["12", "+3", "-9", "+7"], ["_", "15", "-9", "+7"], ["_", "_", "6", "+7"], ["_", "_", "_", "13"]]


def test_cold_start_mixes_scratchpads_and_short_thinks():
    from r1_pipeline.config import SourceParams
    from r1_pipeline.data.sources import load_source

    for share, expected in ((0.0, 0), (1.0, 200)):
        task = SyntheticTaskParams(cold_start_scratchpad_fraction=share)
        src = SourceParams(name="arith", type="synthetic", split="train", limit=200)
        records = load_source(src, role="cold_start", seed=0, task=task).records
        assert sum("\n" in r.solution for r in records) == expected
        assert all(r.solution == r.problem for r in records if "\n" not in r.solution)
    task = SyntheticTaskParams(cold_start_scratchpad_fraction=0.25)
    records = load_source(
        SourceParams(name="arith", type="synthetic", split="train", limit=400), role="cold_start", seed=0, task=task
    ).records
    assert 60 < sum("\n" in r.solution for r in records) < 140
    # RL records always carry the scratchpad as their reference solution
    rl = load_source(
        SourceParams(name="arith", type="synthetic", split="train", limit=50), role="rl", seed=0, task=task
    ).records
    assert all(check_scratchpad(r.solution.split("\n")) for r in rl)
