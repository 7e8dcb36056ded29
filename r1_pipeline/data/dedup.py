"""Deduplication and decontamination of training problems.

- Exact duplicates: the same text after lowercasing and collapsing whitespace; the first occurrence is kept.
- Near duplicates: Jaccard similarity of word 3-gram sets >= threshold (lowercased, split on whitespace). A text
  shorter than 3 words is represented by its whole word sequence, so it can only match an identical text
  (which exact dedup already removed). Computed exactly, not approximately: an all-pairs similarity join with
  prefix filtering (shingles ordered rarest first; two sets with Jaccard >= t must share one of their first
  |x| - ceil(t|x|) + 1 shingles), plus a size filter. For ~10k problems it runs in well under a second and,
  unlike MinHash, has no false negatives and no randomness. Greedy in input order: an item is dropped when it
  is near a kept earlier item.
- Decontamination (as open-r1's `scripts/decontaminate.py`): lowercase, collapse whitespace, split on
  whitespace, and flag a training problem that shares any word n-gram (n = decontamination_ngram, 8) with an
  evaluation problem. Like open-r1, a text shorter than n words has no n-grams and cannot match by n-gram;
  unlike open-r1 we also flag an exact (normalized) match of the whole problem, which covers short problems
  and is the "exact expression overlap" check of the synthetic task (a bare expression is one word).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Iterable, Sequence


def normalize(text: str) -> str:
    """Lowercase, strip, collapse whitespace (open-r1's normalize_string)."""
    return " ".join(str(text).lower().split())


def word_ngrams(text: str, n: int) -> list[str]:
    """Word n-grams of the normalized text; empty when it has fewer than n words (open-r1's word_ngrams)."""
    words = normalize(text).split()
    return [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]


def shingles(text: str, n: int = 3) -> frozenset[str]:
    """Word n-gram set used for near-duplicate detection; a text shorter than n words is one shingle."""
    grams = word_ngrams(text, n)
    if not grams:
        norm = normalize(text)
        return frozenset([norm]) if norm else frozenset()
    return frozenset(grams)


def jaccard(a: frozenset | set, b: frozenset | set) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def exact_duplicates(texts: Sequence[str]) -> list[int | None]:
    """For each text, the index of the earlier text it duplicates (normalized), else None."""
    first: dict[str, int] = {}
    out: list[int | None] = []
    for i, t in enumerate(texts):
        key = normalize(t)
        out.append(first.get(key))
        first.setdefault(key, i)
    return out


def near_duplicates(texts: Sequence[str], threshold: float, n: int = 3) -> list[int | None]:
    """For each text, the index of a kept earlier text with Jaccard(word n-grams) >= threshold, else None.

    Greedy in order: kept items are indexed; each new item is compared only with kept items that share a
    prefix shingle and have a compatible size, then verified exactly.
    """
    sets = [shingles(t, n) for t in texts]
    freq = Counter(g for s in sets for g in s)
    order = lambda g: (freq[g], g)  # noqa: E731 - the global shingle order: rarest first, ties by text
    index: dict[str, list[int]] = {}
    out: list[int | None] = []
    for i, s in enumerate(sets):
        size = len(s)
        if size == 0:
            out.append(None)
            continue
        tokens = sorted(s, key=order)
        prefix = tokens[: size - math.ceil(threshold * size - 1e-9) + 1]
        match = None
        seen: set[int] = set()
        for tok in prefix:
            for j in index.get(tok, ()):
                if j in seen:
                    continue
                seen.add(j)
                other = sets[j]
                # size filter: Jaccard >= t needs t*|x| <= |y| <= |x|/t
                if len(other) < threshold * size - 1e-9 or len(other) * threshold > size + 1e-9:
                    continue
                if jaccard(s, other) >= threshold:
                    match = j if match is None else min(match, j)
        out.append(match)
        if match is None:
            for tok in prefix:
                index.setdefault(tok, []).append(i)
    return out


class Decontaminator:
    """Looks training problems up against every evaluation set by word n-grams and exact normalized text."""

    def __init__(self, eval_sets: dict[str, Iterable[str]], ngram: int = 8):
        self.ngram = ngram
        self.names: list[str] = []
        self.ngrams: dict[str, set[str]] = {}
        self.exact: dict[str, set[str]] = {}
        for name, problems in eval_sets.items():
            self.names.append(name)
            for p in problems:
                self.exact.setdefault(normalize(p), set()).add(name)
                for g in word_ngrams(p, ngram):
                    self.ngrams.setdefault(g, set()).add(name)

    def matches(self, text: str) -> set[str]:
        """Names of the evaluation sets `text` overlaps with (empty when clean)."""
        hit = set(self.exact.get(normalize(text), ()))
        for g in word_ngrams(text, self.ngram):
            names = self.ngrams.get(g)
            if names:
                hit |= names
        return hit
