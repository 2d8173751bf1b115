"""A prepare_data.py folder read without fairseq, cut into samples as the fairseq configs cut it.

fairseq's mmap split (``.idx``: header, int32 sizes, int64 offsets; ``.bin``: the ids) is one token stream
(each line's ids and ``</s>``, a lone ``</s>`` between documents), memory-mapped, never loaded whole. It is
packed as ``sample_break_mode: none`` packs it (docs/data.md, Packing): masked LM, blocks of
tokens_per_sample - 1 tokens after ``<s>``; causal LM, blocks of tokens_per_sample targets, each sample
holding the token before its block too (``</s>`` before the first), so that every token is a target once.
Shards are read one after the other: an epoch here is every shard once (fairseq: one shard an epoch).
:func:`to_model_ids` is the one map from the folder's ids to the model's (tokenizer) ids.
"""
from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..cli import InputError
from ..data.binarize import FAIRSEQ_SPECIALS, ID_OFFSET
from ..data.folder import DataFolder, open_data_folder, split_data_path

IDX_MAGIC = b"MMIDIDX\x00\x00"
DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.double,
          8: np.uint16, 9: np.uint32, 10: np.uint64}  # fairseq's indexed_dataset codes
BOS, PAD, EOS, UNK = (FAIRSEQ_SPECIALS[s] for s in ("<s>", "<pad>", "</s>", "<unk>"))


@dataclasses.dataclass(frozen=True)
class Specials:
    """The model's ids of the tokens a sample needs (``mask``: masked LM only; ``unk``: None if none)."""

    bos: int
    eos: int
    pad: int
    unk: int | None = None
    mask: int | None = None


def to_model_ids(folder_ids, specials: Specials) -> np.ndarray:
    """Folder (fairseq) ids -> model ids: tokenizer id + 4 -> tokenizer id; fairseq's <s> <pad> </s> <unk>
    -> the tokenizer's own."""
    ids = np.asarray(folder_ids).astype(np.int64)
    out = ids - ID_OFFSET
    low = ids < ID_OFFSET
    if low.any():
        lookup = np.array([specials.bos, specials.pad, specials.eos, -1 if specials.unk is None else specials.unk])
        out[low] = lookup[ids[low]]
        if (out[low] < 0).any():
            raise InputError("the data holds fairseq's <unk> (id 3) but the tokenizer has no unknown token")
    return out


class TokenStream:
    """One split of one folder: ``.bin`` as a memory-mapped array, its lines' sizes from ``.idx``.

    The maps are opened in the process that reads them (a pickled stream, as a spawned data-loader
    worker gets it, carries the paths only, not a copy of the data)."""

    def __init__(self, prefix: Path):
        self.idx, self.bin = Path(f"{prefix}.idx"), Path(f"{prefix}.bin")
        with open(self.idx, "rb") as f:
            magic, (version,), (code,), (self.lines,) = (f.read(9), struct.unpack("<Q", f.read(8)),
                                                         struct.unpack("<B", f.read(1)), struct.unpack("<Q", f.read(8)))
        if magic != IDX_MAGIC or version != 1 or code not in DTYPES:
            raise InputError(f"{self.idx}: not a fairseq mmap index; give a folder written by scripts/prepare_data.py")
        self.dtype = np.dtype(DTYPES[code])
        self.header, self._maps = 9 + 8 + 1 + 8, {}
        if self.lines:
            pointers = np.memmap(self.idx, np.int64, "r", self.header + 4 * self.lines, (self.lines,))
            if pointers[0] != 0 or pointers[-1] + int(self.sizes[-1]) * self.dtype.itemsize != self.bin.stat().st_size:
                raise InputError(f"{self.bin}: its entries are not one contiguous stream as prepare_data.py writes")

    def __getstate__(self):
        return {**self.__dict__, "_maps": {}}

    @property
    def sizes(self) -> np.ndarray:
        if "sizes" not in self._maps:
            self._maps["sizes"] = (np.memmap(self.idx, np.int32, "r", self.header, (self.lines,)) if self.lines
                                   else np.zeros(0, np.int32))
        return self._maps["sizes"]

    @property
    def tokens(self) -> np.ndarray:
        if "tokens" not in self._maps:
            self._maps["tokens"] = (np.memmap(self.bin, self.dtype, "r") if self.bin.stat().st_size
                                    else np.zeros(0, self.dtype))
        return self._maps["tokens"]


def open_shards(data, where: str = "--data") -> tuple[DataFolder, list[Path]]:
    """``data``: a folder, a colon list of shards, or the parent of prepare_data.py's ``shard0..shardK-1``;
    returns the first shard's DataFolder (manifest, tokenizer) and every shard."""
    parts = split_data_path(data)
    if len(parts) == 1 and (parts[0] / "shard0" / "manifest.json").is_file():
        manifest = json.loads((parts[0] / "shard0" / "manifest.json").read_text(encoding="utf-8"))
        parts = [parts[0] / name for name in manifest["shards"]["paths"]]
    folder = open_data_folder(":".join(map(str, parts)), where)
    for part in parts:
        if not (part / "train.idx").is_file():
            raise InputError(f"{where}: no train.idx/.bin in {part}; give a folder written by scripts/prepare_data.py")
    return folder, parts


class Sample(NamedTuple):
    epoch: int  # with index, what the masking of this sample is seeded with
    index: int
    tokens: np.ndarray  # folder ids


class PackedBlocks:
    """The samples of one split of every shard (a map-style dataset for the Trainer)."""

    def __init__(self, shards: list[Path], split: str, task: str, tokens_per_sample: int):
        self.task = task
        self.block = tokens_per_sample - 1 if task == "mlm" else tokens_per_sample  # mlm: <s> comes first
        self.streams = [TokenStream(s / split) for s in shards if (s / f"{split}.idx").is_file()]
        counts = [-(-len(stream.tokens) // self.block) for stream in self.streams]
        self.starts = np.cumsum([0] + counts)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # called by the Trainer's dataloader each epoch
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < len(self):
            raise IndexError(index)
        shard = int(np.searchsorted(self.starts, index, side="right")) - 1
        tokens, start = self.streams[shard].tokens, (index - int(self.starts[shard])) * self.block
        block = np.asarray(tokens[start:start + self.block], dtype=np.int64)
        if self.task == "mlm":
            head = [BOS]
        else:  # the input before the first target: the token before the block
            head = [EOS] if start == 0 else [int(tokens[start - 1])]
        return Sample(self.epoch, index, np.concatenate([np.array(head, np.int64), block]))


@dataclasses.dataclass
class Collator:
    """Samples -> ``input_ids``, ``attention_mask`` and position-aligned ``labels`` (IGNORE where not scored).

    Masked LM: fairseq's masking (any position but padding, ``<s>`` included, as MaskTokensDataset does),
    seeded by (seed, epoch, sample index) so that a resumed run masks as an uninterrupted one. Causal LM:
    inputs are a sample without its last token, labels the sample without its first."""

    task: str
    specials: Specials
    vocab_size: int  # the tokenizer's own ids: the random replacements of masking
    seed: int
    mask_prob: float = 0.15
    special_ids: frozenset = frozenset()  # never drawn as random replacements (fairseq's: its specials)

    def __call__(self, samples: list[Sample]) -> dict:
        import torch

        from .objective import IGNORE, mask_tokens

        lengths = torch.tensor([len(s.tokens) for s in samples])
        ids = torch.full((len(samples), int(lengths.max())), self.specials.pad, dtype=torch.long)
        for row, sample in enumerate(samples):
            ids[row, :len(sample.tokens)] = torch.from_numpy(to_model_ids(sample.tokens, self.specials))
        if self.task == "clm":
            lengths = lengths - 1
            ids, labels = ids[:, :-1], ids[:, 1:].clone()
        attention = torch.arange(ids.size(1))[None, :] < lengths[:, None]
        if self.task == "clm":
            labels = labels.masked_fill(~attention, IGNORE)
            return {"input_ids": ids, "attention_mask": attention.long(), "labels": labels}
        inputs, labels = [], []
        for row, sample in enumerate(samples):
            seed = int(np.random.SeedSequence([self.seed, sample.epoch, sample.index]).generate_state(1)[0])
            masked, target = mask_tokens(ids[row:row + 1], ~attention[row:row + 1], mask_id=self.specials.mask,
                                         vocab_size=self.vocab_size, prob=self.mask_prob, special_ids=self.special_ids,
                                         generator=torch.Generator().manual_seed(seed))
            inputs.append(masked)
            labels.append(target)
        return {"input_ids": torch.cat(inputs), "attention_mask": attention.long(), "labels": torch.cat(labels)}
