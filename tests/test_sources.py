"""fairseq_headless.data.sources: records named by their byte position, compressed files cut into blocks.
"""
from __future__ import annotations

import bz2
import gzip
import os
import time

import pytest
import zstandard

from fairseq_headless.data import cli as prepare_data, prepare, sources
from helpers.data_prep import (  # noqa: F401 (fixtures among them)
    block_starts, EN, make_documents, documents_text, jsonl_text, run_ok, text_records, jsonl_records, expected_splits,
    spm_decoder, check_dataset, folder_bytes, bpe_run, small_units, corpus)


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
