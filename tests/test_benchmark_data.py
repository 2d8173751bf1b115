"""studies/benchmarks/data.py --smoke: the data benchmark's JSON has every figure BENCHMARKS.md reports,
and the figures agree with each other and with the raw runs. Not a timing test: the speeds of a
tiny corpus on a shared machine mean nothing, their arithmetic does."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from conftest import REPO

from studies.benchmarks import data as bench


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_data")
    proc = subprocess.run([sys.executable, "-m", "studies.benchmarks.data", "--smoke", "--output", out],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return out, json.loads((out / "benchmark_data.json").read_text()), proc


def test_the_json_holds_every_figure(smoke):
    out, result, proc = smoke
    assert {"preset", "settings", "machine", "corpus", "tokenizers", "tokenizer_speed", "tokenizer_two_processes",
            "runs", "memory_runs",
            "reading", "summary", "command", "seconds"} <= set(result)
    assert result["preset"] == "smoke" and result["command"].endswith("--smoke --output " + str(out))
    assert set(result["tokenizers"]) == {"sentencepiece", "bpe"}
    # interleaved: every tokenizer at 1 and 2 workers, in order, each repeat
    assert [(r["label"], r["workers"]) for r in result["runs"]] == [
        ("sentencepiece", 1), ("sentencepiece", 2), ("bpe", 1), ("bpe", 2)] * result["settings"]["repeats"]
    assert (out / "benchmark_data.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "benchmark_data.md").read_text()
    assert re.search(r"^\| sentencepiece +\| +[\d,]+ \|", md, re.M) and re.search(r"^\| bpe +\|", md, re.M) and "OWT2" in md
    assert md in proc.stdout


def test_runs_are_consistent(smoke):
    _, result, _ = smoke
    corpus_mb = sum(p.stat().st_size for p in (REPO / result["corpus"]).glob("*.jsonl")) / 1e6
    for r in result["runs"]:
        assert r["input_mb"] == pytest.approx(corpus_mb, rel=1e-6)
        assert r["passes_s"] == pytest.approx(r["scan_s"] + r["encode_s"] + r["join_s"])
        assert r["startup_s"] == pytest.approx(r["wall_s"] - r["passes_s"]) and r["startup_s"] > 0
        assert r["mb_per_s"] == pytest.approx(r["input_mb"] / r["passes_s"])
        assert r["mb_per_s_per_worker"] == pytest.approx(r["mb_per_s"] / r["workers"])
        assert r["scan_mb"] == pytest.approx(r["input_mb"], abs=0.05) and r["tokens"] > 0 < r["entries"]
        # speed runs are not sampled for memory (the sampler's /proc reads would take CPU from the workers)
        assert r["peak_process_rss_mb"] is None and r["peak_pss_mb"] is None
    for r in result["memory_runs"]:
        assert 0 < r["peak_process_rss_mb"] and 0 < r["peak_pss_mb"]
    for kind, limit in result["tokenizer_speed"].items():
        assert limit["mb_per_s"] == pytest.approx(limit["bytes"] / 1e6 / limit["seconds"])
        assert limit["vocab_size"] == result["tokenizers"][kind]["vocab_size"] > 0
    # the same text, the same tokenizer: as many tokens alone as through the pipeline's three splits
    for kind in result["tokenizers"]:
        tokens = {r["tokens"] for r in result["runs"] if r["label"] == kind}
        assert tokens == {result["tokenizer_speed"][kind]["tokens"]}


def test_summary_follows_from_the_runs(smoke):
    _, result, _ = smoke
    s = result["summary"]
    for kind, t in s["tokenizers"].items():
        runs = {w: [r for r in result["runs"] if r["label"] == kind and r["workers"] == w] for w in (1, 2)}
        speed = {w: sorted(r["mb_per_s"] for r in runs[w])[len(runs[w]) // 2] for w in (1, 2)}
        assert t["end_to_end_mb_per_s"] == {str(w): pytest.approx(speed[w]) for w in (1, 2)}
        assert t["speedup_1_to_2"] == pytest.approx(speed[2] / speed[1])
        # the machine's ceiling: two bare tokenizer processes started together, against one alone
        both = result["tokenizer_two_processes"][kind]
        assert both["processes"] == 2 and len(both["each"]) == 2
        assert {r["tokens"] for r in both["each"]} == {result["tokenizer_speed"][kind]["tokens"]}
        assert both["mb_per_s"] == pytest.approx(sum(r["bytes"] / 1e6 / r["seconds"] for r in both["each"]))
        assert t["machine_speedup_ceiling"] == pytest.approx(both["mb_per_s"] / result["tokenizer_speed"][kind]["mb_per_s"])
        assert t["speedup_1_to_2_of_ceiling"] == pytest.approx(t["speedup_1_to_2"] / t["machine_speedup_ceiling"])
        limit = result["tokenizer_speed"][kind]["mb_per_s"]
        assert t["tokenizer_mb_per_s"] == limit
        for w in ("1", "2"):
            assert t["fraction_of_tokenizer_speed"][w] == pytest.approx(t["end_to_end_mb_per_s_per_worker"][w] / limit)
        p = s["owt2_projection"][kind]
        per_mb = t["scan_s_per_mb_one_worker"] + t["encode_s_per_mb_one_worker"]  # decompression: serial_s
        assert p["parallel_s"] == pytest.approx(bench.OWT2_TEXT_MB * per_mb / 32)
        assert p["longest_serial_stage"] == max(p["serial_s"], key=p["serial_s"].get)
        assert p["hours"] == pytest.approx((p["serial_s"][p["longest_serial_stage"]] + p["parallel_s"]) / 3600)
    m = s["memory"]
    assert 8 < m["input_mb"][1] / m["input_mb"][0] < 12  # two corpus sizes 10x apart
    assert m["entries"][1] > 5 * m["entries"][0] and 20 < m["index_bytes_per_entry"] < 200
    adjusted = [pss - m["index_bytes_per_entry"] * n / 1e6 for pss, n in zip(m["peak_pss_mb"], m["entries"])]
    assert m["peak_pss_mb_without_index"] == pytest.approx(adjusted)
    assert m["growth_10x"] == pytest.approx(adjusted[1] / adjusted[0])


def test_one_compressed_file_against_the_same_ceiling(smoke):
    """The corpus as one .jsonl.zst: the same text and tokens as the plain files, at 1 and 2 workers
    interleaved with them, its speed-up over the sentencepiece runs' ceiling."""
    import zstandard

    out, result, _ = smoke
    corpus = REPO / result["corpus"]
    one_file = corpus.parent / "one_file" / "corpus.jsonl.zst"
    text = zstandard.ZstdDecompressor().stream_reader(one_file.open("rb")).read()
    assert text == b"".join(p.read_bytes() for p in sorted(corpus.glob("*.jsonl")))
    runs = result["one_file_runs"]
    assert [r["workers"] for r in runs] == [1, 2] * result["settings"]["repeats"]
    for r in runs:
        assert r["input_mb"] == pytest.approx(len(text) / 1e6, rel=1e-9)
        assert r["mb_per_s"] == pytest.approx(r["input_mb"] / r["passes_s"])
        assert r["tokens"] == result["tokenizer_speed"]["sentencepiece"]["tokens"]
    one = result["summary"]["one_file_zst"]
    speed = {w: sorted(r["mb_per_s"] for r in runs if r["workers"] == w) for w in (1, 2)}
    assert one["end_to_end_mb_per_s"] == {str(w): pytest.approx(v[len(v) // 2]) for w, v in speed.items()}
    assert one["speedup_1_to_2"] == pytest.approx(one["end_to_end_mb_per_s"]["2"] / one["end_to_end_mb_per_s"]["1"])
    assert one["machine_speedup_ceiling"] == result["summary"]["tokenizers"]["sentencepiece"]["machine_speedup_ceiling"]
    assert one["speedup_1_to_2_of_ceiling"] == pytest.approx(one["speedup_1_to_2"] / one["machine_speedup_ceiling"])
    assert "| one .jsonl.zst file, sentencepiece |" in (out / "benchmark_data.md").read_text()
    blocks = result["reading"]["zst_blocks"]
    assert blocks["mb_per_s"] == pytest.approx(result["reading"]["bytes"] / 1e6 / blocks["seconds"])


def test_an_earlier_result_needs_force(smoke):
    out, _, _ = smoke
    proc = subprocess.run([sys.executable, "-m", "studies.benchmarks.data", "--smoke", "--output", out],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--force" in proc.stderr
