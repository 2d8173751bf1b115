"""Tokenizer ids straight into fairseq's own binary format, and the dictionary that goes with it.

fairseq id = tokenizer id + 4 (the CWT loss uses the input embeddings as targets, so each token
keeps a fixed row); a line is one entry ending in ``</s>``, a document boundary an entry of ``</s>``
alone. Units are built with fairseq's ``MMapIndexedDatasetBuilder`` and joined by :func:`join`,
byte for byte what fairseq-preprocess writes (docs/data.md, also why not ``merge_file_``)."""
from __future__ import annotations

import shutil
import struct
from pathlib import Path
from typing import Sequence

import numpy as np
from ..cli import InputError


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


def preload() -> None:
    """Import torch and fairseq's builder in the parent before it forks its workers, so that they inherit both
    instead of each importing them again in every pass (seconds of CPU per worker and pass)."""
    import torch  # noqa: F401
    from fairseq.data import indexed_dataset  # noqa: F401


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
                raise InputError(f"{self.option}: the tokenizer produced id {bad}, outside its vocabulary of "
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


def write_index(idx_path: Path, dtype, sizes_path: Path, lines: int, chunk: int = 1 << 24) -> None:
    """fairseq's mmap ``.idx`` (its writer's header, the line count, int32 sizes, int64 byte offsets) from
    a file of int32 line sizes, one chunk at a time, the offsets summed in int64 whatever the count."""
    from fairseq.data.indexed_dataset import MMapIndexedDataset
    itemsize = np.dtype(dtype).itemsize
    with MMapIndexedDataset.Index.writer(str(idx_path), dtype) as index:  # magic, version, dtype code
        index._file.write(struct.pack("<Q", lines))
        with open(sizes_path, "rb") as side:
            shutil.copyfileobj(side, index._file, 64 << 20)
        sizes = np.memmap(sizes_path, dtype=np.int32, mode="r") if lines else np.zeros(0, np.int32)
        offset = 0
        for start in range(0, lines, chunk):
            part = sizes[start:start + chunk].astype(np.int64) * itemsize
            index._file.write((np.cumsum(part) - part + offset).tobytes())
            offset += int(part.sum())
        del sizes


def join(prefix: Path, parts: Sequence[dict], dict_size: int) -> None:
    """One dataset from the units' parts, in order, a document boundary (a lone </s>) between two parts:
    the parts' ``.bin`` concatenated, their sizes streamed into one ``.idx`` (see the module docstring)."""
    from fairseq.data.indexed_dataset import MMapIndexedDataset, best_fitting_int_dtype
    dtype = best_fitting_int_dtype(dict_size)
    prefix = Path(prefix)
    sizes_path = prefix.with_name(prefix.name + ".sizes.tmp")
    lines = 0
    try:
        with open(f"{prefix}.bin", "wb") as data, open(sizes_path, "wb") as side:
            for part in (p for p in parts if p["lines"]):
                if lines:
                    data.write(np.array([EOS], dtype=dtype).tobytes())
                    side.write(np.array([1], dtype=np.int32).tobytes())
                    lines += 1
                index = MMapIndexedDataset.Index(f"{part['prefix']}.idx")
                assert index.dtype == dtype, (index.dtype, dtype)
                side.write(np.asarray(index.sizes, dtype=np.int32).tobytes())
                lines += len(index.sizes)
                del index
                with open(f"{part['prefix']}.bin", "rb") as source:
                    shutil.copyfileobj(source, data, 16 << 20)
        write_index(Path(f"{prefix}.idx"), dtype, sizes_path, lines)
    finally:
        sizes_path.unlink(missing_ok=True)
