"""scripts/measure_train_memory.py and fairseq_headless.benchmarking.host_memory: the synthetic split is
what fairseq's own builder writes, and the JSON's slopes and shard rule follow from its measured points."""

import json
import math

import numpy as np
import pytest
import torch

from fairseq_headless import cli
from fairseq_headless.benchmarking import host_memory


def test_streamed_split_is_byte_identical_to_fairseqs_builder(tmp_path):
    from fairseq.data import indexed_dataset

    chunks = list(host_memory.synthetic_chunks(25_000, vocab_size=300, mean_line_tokens=40, lines_per_document=5,
                                               seed=3, chunk_lines=97))
    written = host_memory.write_mmap_split(tmp_path / "ours", chunks, vocab_size=300)
    builder = indexed_dataset.make_builder(str(tmp_path / "theirs.bin"), "mmap", vocab_size=300)
    for sizes, tokens in chunks:
        for line in np.split(tokens, np.cumsum(sizes)[:-1]):
            builder.add_item(torch.from_numpy(line))
    builder.finalize(str(tmp_path / "theirs.idx"))
    for suffix in ("bin", "idx"):
        assert (tmp_path / f"ours.{suffix}").read_bytes() == (tmp_path / f"theirs.{suffix}").read_bytes()

    dataset = indexed_dataset.MMapIndexedDataset(str(tmp_path / "ours"))
    sizes = np.concatenate([s for s, _ in chunks])
    assert written == {"lines": len(sizes), "tokens": 25_000, "bin_bytes": 50_000}  # 300 ids: uint16
    assert dataset.sizes.tolist() == sizes.tolist() and int(dataset.sizes.sum()) == 25_000
    # prepare_data's layout: every entry ends in </s>, a lone </s> after every 5 lines (the last line cut short)
    assert all(int(dataset[i][-1]) == host_memory.EOS for i in range(len(dataset) - 1))
    assert (sizes[5::6] == 1).all() and (sizes[np.arange(len(sizes)) % 6 != 5][:-1] > 1).all()


def test_tokens_parse():
    assert [host_memory.parse_tokens(t) for t in ("256M", "4.5G", "20k", "1234")] == [
        256_000_000, 4_500_000_000, 20_000, 1234]


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    out = tmp_path_factory.mktemp("host_memory")
    assert cli.run(host_memory.main, ["--tokens", "70k", "200k", "--configs", "hmlm_tiny", "hlm_tiny", "--node-memory-gb", "0.01",
                        "--workdir", str(out), "--output", str(out / "result")]) == 0
    return out, json.loads((out / "result" / "host_memory.json").read_text())


def test_json_has_every_point_and_figures_follow_from_them(measured):
    out, result = measured
    assert not result["errors"] and (out / "result" / "host_memory.md").read_text().count("| hmlm_tiny |") >= 3
    assert [s["tokens"] for s in result["splits"]] == [70_000, 200_000]
    assert not list(out.glob("host-memory-*/split-*"))  # the splits are deleted
    points = {(p["config"], p["split_tokens"]): p for p in result["points"]}
    assert set(points) == {(c, t) for c in ("hmlm_tiny", "hlm_tiny") for t in (70_000, 200_000)}
    for (config, tokens), p in points.items():
        encoder = config == "hmlm_tiny"
        assert p["block_tokens"] == (127 if encoder else 128) and p["blocks"] == math.ceil(tokens / p["block_tokens"])
        assert list(p["stages_kib"]) == ["before", "load_dataset", "get_batch_iterator", "next_epoch_itr",
                                         "first_batch", "second_shard"]
        assert p["batches_all_ranks"] == math.ceil(p["blocks"] / 16) and p["batches_this_rank"] == math.ceil(
            p["batches_all_ranks"] / 8)  # every block in a batch, rank 0 of 8 takes every 8th
        assert 15 * 128 < p["first_batch_ntokens"] <= 16 * 128  # 16 blocks of 128 (masked_lm: 127 + <s>)
        # the index fairseq built, seen in the live objects: uint32 block columns (3 + 2) and uint16 sizes
        shapes = {(item["dtype"], tuple(item["shape"])) for item in p["itemized"]}
        assert {("uint32", (p["blocks"], 3)), ("uint32", (p["blocks"], 2))} <= shapes
        assert any(item["path"] == "Index._sizes" and item["backing"] == "mmap" for item in p["itemized"])

    for config in ("hmlm_tiny", "hlm_tiny"):
        a, b = points[(config, 70_000)], points[(config, 200_000)]
        slope = result["slopes"][config]["uint32"]
        blocks = b["blocks"] - a["blocks"]
        held = lambda p, key="RssAnon": p["stages_kib"]["first_batch"][key] - p["stages_kib"]["before"][key]  # noqa
        assert slope["held_anon_bytes_per_block"] == pytest.approx(1024 * (held(b) - held(a)) / blocks)
        assert slope["held_file_bytes_per_block"] == pytest.approx(1024 * (held(b, "RssFile") - held(a, "RssFile")) / blocks)
        assert slope["peak_bytes_per_block"] == pytest.approx(
            1024 * (b["peak_kib_over_before"] - a["peak_kib_over_before"]) / blocks)
        assert slope["shard_switch_extra_peak_bytes_per_block"] == pytest.approx(
            1024 * (b["shard_switch_peak_kib_over_one_shard"] - a["shard_switch_peak_kib_over_one_shard"]) / blocks)

        projected = result["projection"][config]
        worst = max(slope["peak_bytes_per_block"],
                    slope["held_anon_bytes_per_block"] + slope["shard_switch_extra_peak_bytes_per_block"])
        rule = projected["shard_rule"]
        assert rule["worst_bytes_per_block_per_rank"] == pytest.approx(worst)
        if worst > 0:  # tiny splits are noise-dominated; the arithmetic is what is checked
            expected = min(0.01e9 / 8 / worst * a["block_tokens"], host_memory.UINT32_TOKENS - 1)
            assert rule["max_tokens_per_shard"] == int(expected)
            assert rule["shards_for_corpus"] == math.ceil(17e9 / expected)
        whole = projected["whole_corpus_one_split"]  # 17B tokens: int64 columns, estimated from the uint32 slope
        assert whole["index_dtype"] == "int64" and whole["estimated"] is True
        held_int64 = slope["held_anon_bytes_per_block"] + host_memory.INT64_EXTRA_BYTES_PER_BLOCK
        assert whole["held_node_gb"] == pytest.approx(8 * held_int64 * projected["corpus_blocks"] / 1e9)


def test_refuses_a_split_over_half_the_free_disk(tmp_path, capsys):
    assert cli.run(host_memory.main, ["--tokens", "100000G", "--configs", "hmlm_tiny", "--workdir", str(tmp_path),
                        "--output", str(tmp_path / "out")]) == 2
    assert "more than half" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
