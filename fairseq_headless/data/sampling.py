"""Sampling that streams, unit by unit: XLM's multilingual resampling (paper Sec. 5) and the
tokenizer's training sample (a mergeable priority reservoir), so that workers share no state.

q_i = p_i^alpha / sum_j p_j^alpha; each language's extra lines are shared out among its units and
drawn there by selection sampling. The method and why it is exact: docs/data.md."""
from __future__ import annotations

import hashlib
import heapq
import math
import random
from typing import Iterable

PRIORITY_RANGE = 1 << 64


def sampling_probabilities(counts: dict[str, int], alpha: float) -> dict[str, float]:
    """XLM sampling: q_i = p_i^alpha / sum_j p_j^alpha with p_i = n_i / sum n."""
    total = sum(counts.values())
    weights = {lang: (n / total) ** alpha for lang, n in counts.items()}
    z = sum(weights.values())
    return {lang: w / z for lang, w in weights.items()}


def allocate(total: int, weights: dict, order: Iterable | None = None) -> dict:
    """Integers proportional to ``weights`` that sum to ``total`` (largest remainder; ties go to
    the key listed first)."""
    keys = list(order if order is not None else weights)
    z = sum(weights[k] for k in keys)
    if z == 0:
        return {k: 0 for k in keys}
    exact = {k: total * weights[k] / z for k in keys}
    result = {k: math.floor(x) for k, x in exact.items()}
    missing = total - sum(result.values())
    for k in sorted(keys, key=lambda k: -(exact[k] - result[k]))[:missing]:
        result[k] += 1
    return result


def sampled_line_counts(counts: dict[str, int], alpha: float) -> dict[str, int]:
    """m_i = q_i * sum n, rounded to integers summing to sum n."""
    return allocate(sum(counts.values()), sampling_probabilities(counts, alpha), order=counts)


class SelectionSampler:
    """Knuth's algorithm S: exactly ``k`` of the next ``n`` items, each k-subset equally likely,
    deciding item by item with two counters."""

    def __init__(self, k: int, n: int, rng: random.Random):
        assert 0 <= k <= n, (k, n)
        self.k, self.n, self.rng = k, n, rng

    def take(self) -> bool:
        take = self.rng.random() * self.n < self.k
        self.n -= 1
        if take:
            self.k -= 1
        return take


def unit_rng(seed: int, language: str | None, source_name: str, unit_start: int) -> random.Random:
    # A string seed is hashed deterministically (not by PYTHONHASHSEED).
    return random.Random(f"{seed}:{language}:{source_name}:{unit_start}")


class Priorities:
    """Priority of a training line (reservoir sampling) from the seed and the line's name."""

    def __init__(self, seed: int, source_name: str):
        self._prefix = hashlib.blake2b(f"{seed}\n{source_name}\n".encode("utf-8"), digest_size=8)

    def __call__(self, position: int, line: int, piece: int, copy: int) -> int:
        h = self._prefix.copy()
        h.update(b"%d:%d:%d:%d" % (position, line, piece, copy))
        return int.from_bytes(h.digest(), "big")


def reservoir_cutoff(k: int, population: int) -> int:
    """A priority below which a unit keeps its lines: the k-th smallest of ``population`` uniform priorities lies
    below k/population + 10 standard deviations (but for a chance of 1e-23, when the caller asks again)."""
    if population <= k:
        return PRIORITY_RANGE
    share = (k + 10 * math.sqrt(k) + 100) / population
    return PRIORITY_RANGE if share >= 1 else int(share * PRIORITY_RANGE)


class Reservoir:
    """The items of smallest priority seen, as many as fit in k items and (for strings) in
    ``max_bytes`` UTF-8 bytes: a max-heap that lets go of its largest priority when either
    bound is passed. ``cut`` is the smallest priority let go: the reservoir holds exactly the
    items offered below it."""

    def __init__(self, k: int, max_bytes: int | None = None):
        self.k, self.max_bytes = k, max_bytes
        self._heap: list[tuple[int, str, int]] = []  # (-priority, item, bytes)
        self.bytes = 0
        self.cut = PRIORITY_RANGE

    def offer(self, priority: int, item: str) -> None:
        if priority >= self.cut:
            return
        size = len(item.encode("utf-8")) if self.max_bytes is not None else 0
        heapq.heappush(self._heap, (-priority, item, size))
        self.bytes += size
        while len(self._heap) > self.k or (self.max_bytes is not None and self.bytes > self.max_bytes):
            negative, _, size = heapq.heappop(self._heap)
            self.bytes -= size
            self.cut = -negative

    def merge(self, pairs: Iterable[tuple[int, str]]) -> None:
        for priority, item in pairs:
            self.offer(priority, item)

    def __len__(self) -> int:
        return len(self._heap)

    def pairs(self) -> list[tuple[int, str]]:
        """(priority, item), smallest priority first."""
        return sorted((-p, i) for p, i, _ in self._heap)

    def items(self) -> list[str]:
        """Smallest priority first (a random order)."""
        return [item for _, item in self.pairs()]
