"""The data stage's test corpora, the documented split recomputed, and prepared folders shared by its tests.

A run that several test files inspect (bpe_run, ...) is made once per session.
"""
from __future__ import annotations

import functools
import bz2
import contextlib
import gzip
import hashlib
import io
import json
import lzma
import math
import random

import pytest
import zstandard

from fairseq_headless import cli
from fairseq_headless.data import cli as prepare_data, sources


_MADE: dict = {}


def once(fixture):
    """A session fixture made once, however many test files import it (each import registers it anew)."""
    @functools.wraps(fixture)
    def made(*args, **kwargs):
        if fixture.__name__ not in _MADE:
            _MADE[fixture.__name__] = fixture(*args, **kwargs)
        return _MADE[fixture.__name__]
    return pytest.fixture(scope="session")(made)


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
        kwargs = {} if progress_seconds is None else {"progress_seconds": progress_seconds}
        rc = cli.run(lambda args: prepare_data.main(args, **kwargs), [str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def run_ok(argv, **kwargs):
    """A run that must succeed; what it printed: its messages (stderr), then its summary line (stdout)."""
    rc, out, err = run_main(argv, **kwargs)
    assert rc == 0, f"prepare_data failed: {err}"
    return err + out


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


@once
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    docs = make_documents(EN, 60, seed=1)
    path = root / "corpus.txt"
    path.write_text(documents_text(docs), encoding="utf-8")
    return path, [("corpus.txt", text_records(path.read_bytes()))]


def total_lines(corpus_records):
    return sum(len(lines) for _, records in corpus_records for _, lines, _ in records)


@once
def bpe_run(corpus, tmp_path_factory):
    path, records = corpus
    out = tmp_path_factory.mktemp("bpe") / "data-bin"
    run_ok(["--input", path, "--output", out, "--vocab-size", 120, "--licence", "CC0"])
    return out, records


RARE = ["Naïve café — ok? (yes) “quoted” 9° [sic] Œuvre!", "V-J Day & K-12: 50% off *now*."]


@once
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


@once
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


@once
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


@once
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


@pytest.fixture
def small_units(monkeypatch):
    """2 KiB units (ranges of uncompressed files, blocks of compressed ones) and 512-byte text
    records, so that tiny files are cut the way big ones are."""
    monkeypatch.setattr(sources, "UNIT_BYTES", 2048)
    monkeypatch.setattr(sources, "BLOCK_BYTES", 2048)
    monkeypatch.setattr(sources, "RECORD_BYTES", 512)
    return {"unit_bytes": 2048, "record_bytes": 512}


@once
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


def block_starts(plain: bytes, block_bytes: int) -> list[int]:
    """Where the blocks of a compressed file start: 0 and the first line start at or after each
    multiple of block_bytes (docs/data.md)."""
    starts = [0] + [i + 1 for i in range(len(plain) - 1) if plain[i:i + 1] == b"\n"]
    return sorted({0} | {min(s for s in starts if s >= m) for m in range(block_bytes, len(plain), block_bytes)
                         if any(s >= m for s in starts)})


def assert_failed(rc, err, *mentions, out=None):
    """Exit status 2 and one ``error:`` line, the last one (messages of the run may come before it), naming
    `mentions`; with `out`, nothing of it left behind."""
    assert rc == 2
    lines = err.strip().splitlines()
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:], err
    for m in mentions:
        assert str(m) in lines[-1], (m, lines[-1])
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
