"""Exact and near deduplication, and decontamination against evaluation sets."""

import random
import time

from r1_pipeline.data.dedup import (
    Decontaminator,
    exact_duplicates,
    jaccard,
    near_duplicates,
    normalize,
    shingles,
    word_ngrams,
)

WORDS = "apple banana cherry dog egg fish goat house ink jam kite lamp moon nest owl pear queen rose sun tree".split()


def test_normalize_and_ngrams():
    assert normalize("  What IS\t2+2?\n") == "what is 2+2?"
    assert word_ngrams("a b c d", 3) == ["a b c", "b c d"]
    assert word_ngrams("a b", 3) == []  # open-r1: no n-grams for a shorter text
    assert shingles("a b", 3) == frozenset({"a b"})  # near dedup: a short text is its whole word sequence


def test_exact_duplicates_ignore_case_and_whitespace():
    texts = ["What is 2+2?", "what  is 2+2?", "What is 2+3?", "WHAT IS 2+2?\n"]
    assert exact_duplicates(texts) == [None, 0, None, 0]


def test_near_duplicates_hand_made():
    base = " ".join(WORDS * 2)  # 40 words, 38 word 3-grams
    one_word_changed = base.rsplit(" ", 1)[0] + " zebra"  # 37 shared of 39: J = 0.949
    many_changed = " ".join(WORDS[:10] + ["x"] * 5 + WORDS[15:] + WORDS)
    texts = [base, "something else entirely here", one_word_changed, many_changed, "1+2", "1+3"]
    assert jaccard(shingles(base), shingles(one_word_changed)) > 0.9
    assert near_duplicates(texts, 0.9) == [None, None, 0, None, None, None]
    # a lower threshold also catches the heavier edit; short expressions never match each other
    assert near_duplicates(texts, 0.5)[3] == 0
    assert near_duplicates(["1+2", "1+2 ", "2+1"], 0.9) == [None, 0, None]


def _brute_force(texts, threshold):
    sets = [shingles(t) for t in texts]
    kept, out = [], []
    for i, s in enumerate(sets):
        match = next((j for j in kept if jaccard(s, sets[j]) >= threshold), None)
        out.append(match)
        if match is None:
            kept.append(i)
    return out


def test_near_duplicates_match_brute_force():
    """The prefix-filtered join is exact: same answers as comparing every pair."""
    rng = random.Random(0)
    texts = []
    for _ in range(300):
        if texts and rng.random() < 0.5:
            words = rng.choice(texts).split()
            for _ in range(rng.randint(0, 3)):  # a few edits
                words[rng.randrange(len(words))] = rng.choice(WORDS)
            texts.append(" ".join(words))
        else:
            texts.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30))))
    for threshold in (0.6, 0.8, 0.9, 1.0):
        got, want = near_duplicates(texts, threshold), _brute_force(texts, threshold)
        # the greedy choice of which kept item matched may differ; whether an item is dropped may not
        assert [g is None for g in got] == [w is None for w in want]


def test_near_duplicates_fast_for_10k():
    rng = random.Random(1)
    vocab = [f"w{i}" for i in range(3000)]
    texts = [" ".join(rng.choice(vocab) for _ in range(40)) for _ in range(10_000)]
    start = time.time()
    near_duplicates(texts, 0.9)
    assert time.time() - start < 10  # ~1 s on a 2-core laptop


def test_decontamination_hand_made():
    evals = {
        "bench_a": ["If a train travels 60 miles in 1.5 hours, what is its average speed in miles per hour?"],
        "bench_b": ["7+3-5+2", "Compute the sum."],
    }
    d = Decontaminator(evals, ngram=8)
    # shares the 8-gram "what is its average speed in miles per" (case and spacing do not matter)
    assert d.matches("A car goes 100 miles. WHAT is its  average speed in miles per hour, roughly?") == {"bench_a"}
    # only 7 consecutive words shared: clean
    assert d.matches("Tell me what is its average speed in miles today.") == set()
    # the synthetic task: a bare expression is one word, caught by exact (normalized) overlap only
    assert d.matches("7+3-5+2") == {"bench_b"}
    assert d.matches("7+3-5+3") == set()
    assert d.matches("compute the  SUM.") == {"bench_b"}
    assert d.names == ["bench_a", "bench_b"]
    both = Decontaminator({"x": ["one two three four"], "y": ["two three four five"]}, ngram=3)
    assert both.matches("zero one two three four five six") == {"x", "y"}
