"""fairseq_headless.data.cli (scripts/prepare_data.py): bad input is one error: line, exit 2, nothing left behind.
"""
from __future__ import annotations

import json
import lzma
import subprocess
import sys

import pytest
import zstandard

from conftest import REPO
from fairseq_headless.data.tokenizer import HFTokenizer
from helpers.data_prep import (  # noqa: F401 (fixtures among them)
    run_main, run_ok, hf_tokenizer_file, assert_failed, small_txt)


# ---------------------------------------------------------------- bad input


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
    for name, data, *expected in (  # named for a compression we lack; compressed or zipped under a plain name
            ("corpus.txt.zip", b"PK\x03\x04 zip archive", "unknown compression .zip", ".zst"),
            ("plain.txt", zstandard.ZstdCompressor().compress(b"looks like text\n"), ".zst-compressed", "plain.txt.zst"),
            ("other.txt", b"PK\x03\x04 zip archive", "unknown compression (zip data)", ".zst")):
        (tmp_path / name).write_bytes(data)
        rc, _, err = run_main(["--input", tmp_path / name, "--output", out])
        assert_failed(rc, err, name, *expected, out=out)
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
