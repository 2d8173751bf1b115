"""Which split and which shard each record goes to, decided by a hash of its name.

blake2b-128 of ``(source name, position)`` gives ``rank`` (valid = the smallest ranks up to
--valid-lines lines, then test, then train) and ``shard`` (``% K``); neither depends on --seed or
on which worker reads the record. docs/data.md, "Splits"."""
from __future__ import annotations

import dataclasses
import hashlib
import heapq
from ..cli import InputError

MAX_DEFAULT_SPLIT_LINES = 10_000
METHOD = ("hash: records (jsonl lines; text documents, cut every 8 KiB) ranked by blake2b of "
          "(source name, byte position); valid = the records of smallest rank up to --valid-lines "
          "lines, test = the next ones up to --test-lines lines")


class RecordHasher:
    """rank and shard of the records of one source."""

    def __init__(self, source_name: str):
        # The digest state after the name is computed once; each record only adds its position.
        self._prefix = hashlib.blake2b(source_name.encode("utf-8") + b"\n", digest_size=16)

    def __call__(self, position: int) -> tuple[int, int]:
        h = self._prefix.copy()
        h.update(b"%d" % position)
        digest = h.digest()
        return int.from_bytes(digest[:8], "big"), int.from_bytes(digest[8:], "big")


def default_split_lines(n_lines: int) -> int:
    """1% of the lines, at least 1 and at most 10k."""
    return max(1, min(MAX_DEFAULT_SPLIT_LINES, n_lines // 100))


class SmallestRecords:
    """The records of smallest rank, enough of them to cover ``line_budget`` lines."""

    def __init__(self, line_budget: int):
        self.line_budget = line_budget
        self._heap: list[tuple[int, int, int]] = []  # (-rank, lines, unit), the largest rank on top
        self._lines = 0

    def add(self, rank: int, lines: int, unit: int) -> list[tuple[int, int, int]]:
        """Keep the record if it may be needed; returns what is no longer (rank, lines, unit)."""
        if self._heap and self._lines >= self.line_budget and -self._heap[0][0] < rank:
            return [(rank, lines, unit)]
        heapq.heappush(self._heap, (-rank, lines, unit))
        self._lines += lines
        dropped = []
        while self._lines - self._heap[0][1] >= self.line_budget:
            r, n, u = heapq.heappop(self._heap)
            self._lines -= n
            dropped.append((-r, n, u))
        return dropped

    def items(self) -> list[tuple[int, int, int]]:
        """(rank, lines, unit), smallest rank first."""
        return sorted((-r, n, u) for r, n, u in self._heap)


class SplitCandidates:
    """What the valid/test thresholds are chosen from, built record by record and mergeable (each
    unit keeps its own, the parent joins them), in memory bounded by the split sizes.

    ``first`` keeps the smallest-rank records covering the largest valid size possible; a record
    it lets go can never be a valid record any more (later records only add lines below it), so it
    goes to ``second``, which keeps the smallest of those covering the largest test size."""

    def __init__(self, valid_budget: int, test_budget: int):
        self.first = SmallestRecords(valid_budget)
        self.second = SmallestRecords(test_budget)

    def add(self, rank: int, lines: int, unit: int) -> None:
        for item in self.first.add(rank, lines, unit):
            self.second.add(*item)

    def state(self) -> tuple[list, list]:
        return self.first.items(), self.second.items()

    def merge(self, state: tuple[list, list]) -> None:
        first, second = state
        for item in first:
            self.add(*item)
        for item in second:  # not valid in its unit, so not valid anywhere
            self.second.add(*item)

    def items(self) -> list[tuple[int, int, int]]:
        return self.first.items() + self.second.items()  # every rank in first < every rank in second


@dataclasses.dataclass(frozen=True)
class SplitPlan:
    """valid: rank < valid_below; test: valid_below <= rank < test_below; train: the rest."""

    valid_below: int
    test_below: int

    def split_of(self, rank: int) -> str:
        if rank < self.valid_below:
            return "valid"
        return "test" if rank < self.test_below else "train"


@dataclasses.dataclass
class GroupSplit:
    """The plan of one group (the whole corpus, or one language) and what it takes out of each unit."""

    plan: SplitPlan
    lines: dict[str, int]  # lines per split
    records: dict[str, int]
    unit_lines: dict[int, dict[str, int]]  # unit -> valid/test lines in it


def plan_split(candidates: SplitCandidates, total_lines: int, n_valid: int, n_test: int, what: str,
               option_hint: str = "--valid-lines/--test-lines") -> GroupSplit:
    """Thresholds so that valid holds >= n_valid lines and test >= n_test (whole records)."""
    items = candidates.items()
    lines = {"valid": 0, "test": 0}
    records = {"valid": 0, "test": 0}
    unit_lines: dict[int, dict[str, int]] = {}
    bounds = {}
    i = 0
    for name, want in (("valid", n_valid), ("test", n_test)):
        while lines[name] < want and i < len(items):
            rank, n, unit = items[i]
            lines[name] += n
            records[name] += 1
            unit_lines.setdefault(unit, {"valid": 0, "test": 0})[name] += n
            i += 1
        bounds[name] = items[i - 1][0] + 1 if records[name] else (bounds.get("valid", 0))
    train = total_lines - lines["valid"] - lines["test"]
    if lines["valid"] < n_valid or lines["test"] < n_test or train < 1:
        raise InputError(f"{what} has only {total_lines} non-empty lines, not enough for {n_valid} valid + {n_test} "
                         f"test lines (whole documents) and a training set; lower {option_hint} or add text")
    lines["train"] = train
    records["train"] = None  # counted by the encoding pass
    return GroupSplit(SplitPlan(bounds["valid"], bounds["test"]), lines, records, unit_lines)
