"""Near-duplicate replies: word 3-gram shingles, Jaccard similarity, and an index that answers exactly.

Pure text functions, no I/O; `records.RecordFilter` uses them for `training.near_dedup_threshold`.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Collection
from typing import Any


def shingles(text: str) -> frozenset[int]:
    """The word 3-grams of `text` (lowercased, split on any whitespace), as hashes; a shorter text is one shingle.

    Hashes rather than strings keep the sets small and the comparisons fast; two different
    3-grams of one group sharing a 64-bit hash is too unlikely to matter.
    """
    words = text.lower().split()
    if len(words) < 3:
        return frozenset([hash(tuple(words))])
    return frozenset(map(hash, zip(words, words[1:], words[2:])))


def jaccard(first: frozenset[int], second: Collection[int]) -> float:
    """|A & B| / |A | B| of two sets of shingles (`second` may be any collection without repeats)."""
    common = len(first.intersection(second))
    return common / (len(first) + len(second) - common)


class NearDuplicateIndex:
    """Kept replies per group, answering exactly: is a kept reply's Jaccard similarity to this one >= threshold?

    Comparing a reply with every kept one is quadratic. A prefix filter (as in set-similarity
    joins: Bayardo et al., "Scaling up all pairs similarity search", 2007) makes it close to
    linear: with every set's shingles sorted in one shared order, two sets of similarity >= t
    share a shingle among the first `|A| - floor(t |A|) + 1` shingles of each. Only the kept
    replies that share one of those, and whose sizes allow the threshold, are compared in full.
    The order decides only how many candidates are compared, never the answer; see `_Group`.
    """

    def __init__(self, threshold: float):
        self.threshold = threshold
        self._groups: dict[Any, _Group] = {}
        self._last: tuple[str, frozenset[int]] | None = None

    def _shingles(self, text: str) -> frozenset[int]:
        # `contains` then `add` for the same reply: shingle it once.
        if self._last is None or self._last[0] != text:
            self._last = (text, shingles(text))
        return self._last[1]

    def contains(self, group: Any, text: str) -> bool:
        """Whether a kept reply of `group` is near-identical to `text`."""
        kept = self._groups.get(group)
        return kept is not None and kept.contains(self._shingles(text), self.threshold)

    def add(self, group: Any, text: str) -> None:
        """Remember `text` as a kept reply of `group`."""
        self._groups.setdefault(group, _Group()).add(self._shingles(text), self.threshold)


class _Group:
    """The kept shingle sets of one (task, agent), indexed by their prefixes.

    The shared order puts shingles that several kept replies hold (text every reply shares: a
    code template, an answer format) last, by how many hold them, so that they stay outside the
    prefixes and do not make every kept reply a candidate; the others come first, by value. The
    counts are taken from up to `SAMPLE` kept replies whenever the group doubles in size (from 32
    on), and the index is rebuilt in the new order: amortized, a constant cost per reply.
    Kept sets are stored as arrays of 8-byte hashes (a set of Python ints takes about 8 times more).
    """

    SAMPLE = 64

    def __init__(self) -> None:
        self.sets: list[array] = []
        self.index: dict[int, list[int]] = {}
        self.shared: dict[int, int] = {}
        """The order's counts: shingle -> sampled kept sets holding it, for those held by two or more."""
        self.next_rebuild = 32
        self._probed: tuple[frozenset[int], list[int]] | None = None

    def prefix(self, items: frozenset[int], threshold: float) -> list[int]:
        # floor, not the lemma's ceil: a longer prefix is as correct, and immune to float rounding.
        length = len(items) - math.floor(threshold * len(items)) + 1
        shared = self.shared
        rare = sorted(items.difference(shared))  # a dict argument: looked up, not iterated
        if len(rare) >= length:
            return rare[:length]
        common = sorted(items.difference(rare), key=lambda item: (shared[item], item))
        return (rare + common)[:length]

    def contains(self, candidate: frozenset[int], threshold: float) -> bool:
        prefix = self.prefix(candidate, threshold)
        self._probed = (candidate, prefix)  # `add` usually follows: sort once
        checked: set[int] = set()
        for item in prefix:
            for number in self.index.get(item, ()):
                if number in checked:
                    continue
                checked.add(number)
                other = self.sets[number]
                small, large = sorted((len(candidate), len(other)))  # J <= small / large
                if small / large >= threshold and jaccard(candidate, other) >= threshold:
                    return True
        return False

    def add(self, items: frozenset[int], threshold: float) -> None:
        self.sets.append(array("q", items))
        if len(self.sets) < self.next_rebuild:
            probed = self._probed
            prefix = probed[1] if probed is not None and probed[0] is items else self.prefix(items, threshold)
            self._index(len(self.sets) - 1, prefix)
            return
        self.next_rebuild *= 2
        counts: Counter = Counter()
        for kept in self.sets[:: len(self.sets) // self.SAMPLE or 1]:
            counts.update(kept)
        self.shared = {item: count for item, count in counts.items() if count > 1}
        self.index = {}
        for number, kept in enumerate(self.sets):
            self._index(number, self.prefix(frozenset(kept), threshold))

    def _index(self, number: int, prefix: list[int]) -> None:
        for item in prefix:
            self.index.setdefault(item, []).append(number)
