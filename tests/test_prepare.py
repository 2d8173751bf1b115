"""fairseq_headless.data.prepare end to end: tokenizer modes, formats, workers, shards, the log, memory.

Every folder is checked with numbers: it decodes back to the source lines, the splits are docs/data.md's hash
split recomputed here, the output is the same for any --workers.
"""
from __future__ import annotations

import json
import math
import os
import re
import tracemalloc
from pathlib import Path

import zstandard

from fairseq_headless.data import prepare, sources
from helpers.data_prep import (  # noqa: F401 (fixtures among them)
    EN, make_documents, documents_text, jsonl_text, run_main, run_ok, jsonl_records, expected_splits,
    load_binarized, entry_lines, spm_decoder, hf_decoder, check_dataset, folder_bytes, corpus, total_lines,
    bpe_run, hf_tokenizer_file, unigram_run, hf_run, formats_run, small_units, cut_corpus, cut_records,
    assert_failed, small_txt)


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
