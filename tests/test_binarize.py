"""fairseq_headless.data.binarize: the ids as fairseq-preprocess writes them, dict.txt, the index.
"""
from __future__ import annotations

import subprocess


from conftest import BIN
from fairseq_headless.data import binarize
from helpers.data_prep import (  # noqa: F401 (fixtures among them)
    heldout, folder_bytes, total_lines, bpe_run, corpus)


def test_binarized_files_are_what_fairseq_preprocess_writes(bpe_run, tmp_path):
    """The same ids as decimal text through the real fairseq-preprocess (2 workers): identical
    .bin/.idx. The ids come from sentencepiece directly, the lines from the documented split."""
    import sentencepiece as spm

    out, records = bpe_run
    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer" / "spm.model"))
    n_split = max(1, total_lines(records) // 100)
    where = {pos: split for (_, pos), split in heldout(records, n_split, n_split).items()}
    texts = {"train": [], "valid": [], "test": []}  # documents separated by an empty line (a lone </s>)
    for pos, lines, _ in records[0][1]:
        docs = texts[where.get(pos, "train")]
        docs.append("\n".join(" ".join(map(str, sp.encode(line))) for line in lines))
    for split, docs in texts.items():
        (tmp_path / f"{split}.ids").write_text("\n\n".join(docs) + "\n")
    dest = tmp_path / "fairseq"
    subprocess.run([str(BIN / "fairseq-preprocess"), "--only-source", "--srcdict", str(out / "dict.txt"),
                    "--trainpref", str(tmp_path / "train.ids"), "--validpref", str(tmp_path / "valid.ids"),
                    "--testpref", str(tmp_path / "test.ids"), "--destdir", str(dest), "--workers", "2",
                    "--dataset-impl", "mmap"], check=True, capture_output=True)
    ours, theirs = folder_bytes(out), folder_bytes(dest)
    assert sorted(ours) == sorted(theirs) and len(ours) == 7
    for name in ours:
        assert ours[name] == theirs[name], name


def test_pythia_sized_dictionary_padding():
    # 50,277 Pythia tokens + 4 fairseq specials -> 50,304 rows with factor 128
    text, madeup = binarize.dictionary_text([0] * 50_277, 128)
    assert madeup == 23 and 4 + len(text.splitlines()) == 50_304
    assert binarize.dictionary_text([5] * 124, 8)[1] == 0
    assert binarize.dictionary_size(50_277, 128) == 50_304


def test_the_index_offsets_do_not_wrap_past_2_gib(tmp_path):
    """An OpenWebText2 shard holds billions of tokens: the .idx byte offsets are int64 sums (fairseq's
    merge_file_ under numpy 2 kept them in int32: [0, 2**31] came back as [0, -2**31])."""
    import numpy as np
    from fairseq.data.indexed_dataset import MMapIndexedDataset

    from fairseq_headless.data.binarize import write_index

    sizes = np.array([2**30, 2**30, 2**30, 5], dtype=np.int32)  # uint16 ids: 2 GiB per entry
    (tmp_path / "sizes").write_bytes(sizes.tobytes())
    write_index(tmp_path / "train.idx", np.uint16, tmp_path / "sizes", len(sizes), chunk=3)  # a chunk boundary too
    index = MMapIndexedDataset.Index(str(tmp_path / "train.idx"))
    assert index.sizes.tolist() == sizes.tolist()
    assert [int(index[i][0]) for i in range(4)] == [0, 2**31, 2**32, 3 * 2**31]
