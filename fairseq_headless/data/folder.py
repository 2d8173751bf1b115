"""A data folder as training reads it, for every script that needs its dictionary or tokenizer.

``task.data`` is one folder or a colon list of shards (``OUT/shard0:OUT/shard1:...``); fairseq reads the
first one's dictionary, where prepare_data.py keeps ``dict.txt``, ``manifest.json`` and ``tokenizer/``. A
``fairseq-preprocess`` folder has no manifest: its tokenizer files are given (``tokenizer=``)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

from .binarize import FAIRSEQ_SPECIALS, ID_OFFSET
from ..cli import InputError


@dataclasses.dataclass(frozen=True)
class DataFolder:
    shards: tuple[Path, ...]  # every folder of task.data, in order
    manifest: dict | None  # shard0's manifest.json; None for plain fairseq-preprocess output
    tokenizer: tuple[Path, ...]  # the tokenizer's file(s); () if none was needed or found
    tokenizer_type: str | None  # "sentencepiece" | "hf" | "gpt2" (encoder.json + vocab.bpe)

    @property
    def path(self) -> Path:
        return self.shards[0]

    @property
    def dictionary(self) -> Path:
        """dict.txt (readers that need it check that it is there: ``require_dictionary``)."""
        return self.path / "dict.txt"

    def require_dictionary(self, where: str) -> Path:
        return require_dictionary(self.path, where)

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    def load_tokenizer(self):
        """The preprocessing path's tokenizer (tokenizer.py): encode_batch, decode, vocab_size."""
        from .tokenizer import load_tokenizer
        if not self.tokenizer:
            raise InputError(f"{self.path}: no tokenizer known for this data folder")
        files = self.tokenizer if self.tokenizer_type == "gpt2" else self.tokenizer[0]
        return load_tokenizer(self.tokenizer_type, files, "the data folder's tokenizer")

    offset = ID_OFFSET  # fairseq id = tokenizer id + 4, in both kinds of folder

    def fairseq_encoder(self) -> "FairseqEncoder":
        """text -> the fairseq ids training saw for it: what LAMBADA and the embedding analyses tokenize with."""
        tokenizer = self.load_tokenizer()
        return FairseqEncoder(tokenizer, frozenset(i + ID_OFFSET for i in tokenizer.special_ids()))


@dataclasses.dataclass(frozen=True)
class FairseqEncoder:
    """A data folder's tokenizer with fairseq's ids: tokenizer id + 4, no special token added (fairseq's
    binarization appends ``</s>`` per line itself)."""

    tokenizer: object  # tokenizer.Tokenizer
    special_ids: frozenset  # fairseq ids of the tokenizer's unknown/control/special tokens (no text)

    def __call__(self, text: str) -> list[int]:
        return [i + ID_OFFSET for i in self.tokenizer.encode_batch([text])[0]]


def split_data_path(data) -> list[Path]:
    """fairseq's task.data: one folder or ``a:b:c``."""
    return [Path(p) for p in str(data).split(":") if p]


def require_dictionary(folder: Path, where: str) -> Path:
    """``folder``'s dict.txt, or an error naming the folder and the fix (a folder of shards: the colon list)."""
    if (folder / "dict.txt").is_file():
        return folder / "dict.txt"
    if not folder.is_dir():
        raise InputError(f"{where}: folder {folder} not found; give a folder written by scripts/prepare_data.py "
                        f"or fairseq-preprocess")
    if (folder / "shard0" / "dict.txt").is_file():  # prepare_data.py --shards K: the parent of the shards
        shards = ":".join(str(folder / f"shard{i}") for i in range(2))
        raise InputError(f"{where}: {folder} holds shards, not a data folder: give them as a colon list, "
                        f"{where}={shards}:... (every shard, in order)")
    raise InputError(f"{where}: no dict.txt in {folder}; give a folder written by scripts/prepare_data.py "
                    f"or fairseq-preprocess")


def check_training_folders(data, where: str, train_subset: str = "train") -> None:
    """What fairseq reads of ``task.data`` when training starts or enters a new epoch: the first folder's
    dict.txt, and the training split of every folder (epoch e trains on folder (e-1) mod K), as fairseq's
    mmap or raw datasets name it."""
    shards = split_data_path(data)
    if not shards:
        raise InputError(f"{where}: no data folder given")
    require_dictionary(shards[0], where)
    for shard in shards:
        if not shard.is_dir():
            raise InputError(f"{where}: folder {shard} not found; every entry of the colon list must be a folder "
                            f"written by scripts/prepare_data.py")
        if not ((shard / f"{train_subset}.idx").is_file() or (shard / train_subset).is_file()):
            raise InputError(f"{where}: no {train_subset}.idx/.bin in {shard} (the training split); give a folder "
                            f"written by scripts/prepare_data.py, or its shards in a colon list")


def tokenizer_type_of(files: Sequence[Path]) -> str:
    names = [Path(f).name for f in files]
    if len(files) == 2 and sorted(Path(f).suffix for f in files) == [".bpe", ".json"]:
        return "gpt2"
    if len(files) == 1 and names[0].endswith(".model"):
        return "sentencepiece"
    if len(files) == 1 and names[0].endswith(".json"):
        return "hf"
    raise InputError(f"tokenizer files {', '.join(map(str, files))}: give a sentencepiece .model, a tokenizer.json, "
                    f"or GPT-2's encoder.json and vocab.bpe")


def open_data_folder(data, where: str, tokenizer: Sequence[Path] = (), need_tokenizer: bool = True) -> DataFolder:
    """Resolve ``data`` (a folder or colon list) to its first shard's manifest, dict.txt and
    tokenizer; ``where`` starts every error message (the option or config key at fault)."""
    shards = tuple(split_data_path(data))
    if not shards:
        raise InputError(f"{where}: no data folder given")
    first = shards[0]
    manifest_path = first / "manifest.json"
    tokenizer = tuple(Path(t) for t in tokenizer)
    if tokenizer:
        for f in tokenizer:
            if not f.is_file():
                raise InputError(f"{where}: tokenizer file {f} not found")
        kind = tokenizer_type_of(tokenizer)
        if kind == "gpt2":
            tokenizer = tuple(sorted(tokenizer, key=lambda f: f.suffix != ".json"))  # encoder.json, vocab.bpe
        manifest = _read_manifest(manifest_path) if manifest_path.is_file() else None
    elif manifest_path.is_file():
        manifest = _read_manifest(manifest_path)
        try:
            kind = manifest["tokenizer"]["type"]
            tokenizer = (first / manifest["tokenizer"]["path"],)
        except (KeyError, TypeError) as e:
            raise InputError(f"{manifest_path}: not a valid manifest ({e}); re-run scripts/prepare_data.py") from None
        if need_tokenizer and not tokenizer[0].is_file():
            raise InputError(f"{where}: tokenizer file {tokenizer[0]} (manifest tokenizer.path) is missing")
    elif need_tokenizer:
        raise InputError(f"{where}: no manifest.json in {first} (the data folder moved, or was not made by "
                        f"scripts/prepare_data.py); pass the folder prepare_data.py wrote, or the tokenizer "
                        f"files of a folder binarized by fairseq-preprocess")
    else:
        manifest, kind = None, None
    if kind not in (None, "sentencepiece", "hf", "gpt2"):
        raise InputError(f"{manifest_path}: tokenizer type {kind!r} is none of 'sentencepiece', 'hf', 'gpt2'")
    return DataFolder(shards, manifest, tokenizer, kind)


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        mapping = manifest["id_mapping"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: not a valid manifest ({e}); re-run scripts/prepare_data.py") from None
    if mapping.get("offset") != ID_OFFSET or mapping.get("fairseq_specials", FAIRSEQ_SPECIALS) != FAIRSEQ_SPECIALS:
        raise InputError(f"{path}: id_mapping is not `tokenizer id + {ID_OFFSET}` after {list(FAIRSEQ_SPECIALS)}")
    return manifest
