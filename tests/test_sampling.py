"""fairseq_headless.data.sampling: the tokenizer's reservoir sample and XLM's multilingual resampling, exact.
"""
from __future__ import annotations

import json
import lzma
import random

import pytest
import zstandard

from fairseq_headless.data import cli as prepare_data, prepare, sampling
from helpers.data_prep import (  # noqa: F401 (fixtures among them)
    block_starts, EN, FR, DE, make_documents, documents_text, jsonl_text, run_ok, text_records, jsonl_records, heldout,
    expected_splits, load_binarized, entry_lines, spm_decoder, folder_bytes, corpus, bpe_run, small_units,
    cut_corpus, cut_records)


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
