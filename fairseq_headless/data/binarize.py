"""Tokenizer ids straight into fairseq's own binary format, and the dictionary that goes with it.

fairseq id = tokenizer id + 4: ``dict.txt`` lists the tokenizer's ids 0..V-1 in order after
fairseq's ``<s> <pad> </s> <unk>`` (the headless CWT loss uses the input embedding matrix as its
targets, so every tokenizer token keeps a fixed, documented row rather than fairseq's frequency
order), padded with ``madeupwordNNNN`` rows to a multiple of --padding-factor.

Each text line becomes one entry, its ids + 4 followed by ``</s>``; a document boundary is one
entry holding only ``</s>`` (never first or last, never doubled), which is what
``sample_break_mode=complete_doc`` splits on. Entries go through fairseq's
``MMapIndexedDatasetBuilder`` (one per unit of work), and the units are joined with the builder's
``merge_file_``: the ``.bin``/``.idx`` are byte for byte what ``fairseq-preprocess --only-source
--srcdict dict.txt`` writes for the same ids (tests/test_prepare_data.py runs it to check), with no
decimal-text round trip.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import DataError

FAIRSEQ_SPECIALS = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
ID_OFFSET = len(FAIRSEQ_SPECIALS)
EOS = FAIRSEQ_SPECIALS["</s>"]


def madeupwords(vocab_size: int, padding_factor: int) -> int:
    return (-(ID_OFFSET + vocab_size)) % padding_factor


def dictionary_size(vocab_size: int, padding_factor: int) -> int:
    """len(fairseq Dictionary) of our dict.txt: 4 specials + V + padding rows."""
    return ID_OFFSET + vocab_size + madeupwords(vocab_size, padding_factor)


def dictionary_text(counts: Sequence[int], padding_factor: int) -> tuple[str, int]:
    """dict.txt body: `<id> <count>` for every tokenizer id in order, then madeupwordNNNN rows
    (count 0, as fairseq's own padding writes them) until 4 specials + rows is a multiple of
    padding_factor. Returns (text, madeupwords)."""
    rows = [f"{i} {int(c)}" for i, c in enumerate(counts)]
    madeup = madeupwords(len(rows), padding_factor)
    rows += [f"madeupword{j:04d} 0" for j in range(madeup)]
    return "".join(r + "\n" for r in rows), madeup


def _builder(prefix: Path, dict_size: int):
    from fairseq.data import indexed_dataset

    # The dtype fairseq-preprocess picks for this dictionary (uint16 below 65,500 entries).
    return indexed_dataset.make_builder(f"{prefix}.bin", "mmap", vocab_size=dict_size)


class SplitWriter:
    """One split's entries for one unit of work, with the manifest's counts."""

    def __init__(self, prefix: Path, dict_size: int, vocab_size: int, option: str, counts: np.ndarray | None):
        import torch

        self._torch = torch
        self.prefix = Path(prefix)
        self.builder = _builder(self.prefix, dict_size)
        self.vocab_size, self.option, self.counts = vocab_size, option, counts
        self.lines = self.documents = self.tokens = self.dropped_lines = 0
        self._pending_boundary = False
        self._separator = torch.tensor([EOS])

    def add(self, encoded: list[list[int]], new_document: list[bool]) -> None:
        """Add a batch of encoded lines; ``new_document[j]``: line j does not continue the text of
        the line before it in this split (a document starts, or lines between them went elsewhere)."""
        flat = np.fromiter((i for ids in encoded for i in ids), dtype=np.int64)
        if flat.size:
            low, high = int(flat.min()), int(flat.max())
            if low < 0 or high >= self.vocab_size:
                bad = high if high >= self.vocab_size else low
                raise DataError(f"{self.option}: the tokenizer produced id {bad}, outside its vocabulary of "
                                f"{self.vocab_size}; the tokenizer file is inconsistent")
            if self.counts is not None:
                self.counts += np.bincount(flat, minlength=self.vocab_size)
        entry = np.empty(flat.size + len(encoded), dtype=np.int64)
        start = 0
        for ids, starts in zip(encoded, new_document):
            self._pending_boundary = self._pending_boundary or starts
            if not ids:
                self.dropped_lines += 1  # text the tokenizer turns into nothing is left out
                continue
            if self._pending_boundary:
                if self.lines:
                    self.builder.add_item(self._separator)
                self.documents += 1
                self._pending_boundary = False
            n = len(ids)
            view = entry[start:start + n + 1]
            view[:n] = ids
            view[:n] += ID_OFFSET
            view[n] = EOS
            self.builder.add_item(self._torch.from_numpy(view))
            start += n + 1
            self.lines += 1
            self.tokens += n

    def finish(self) -> dict:
        self.builder.finalize(f"{self.prefix}.idx")
        return {"prefix": str(self.prefix), "lines": self.lines, "documents": self.documents,
                "tokens": self.tokens, "dropped_lines": self.dropped_lines}


def join(prefix: Path, parts: Sequence[dict], dict_size: int) -> None:
    """One dataset from the units' parts, in order, a document boundary between two parts."""
    import torch

    builder = _builder(prefix, dict_size)
    wrote = False
    for part in parts:
        if not part["lines"]:
            continue
        if wrote:
            builder.add_item(torch.tensor([EOS]))
        builder.merge_file_(part["prefix"])
        wrote = True
    builder.finalize(f"{prefix}.idx")
