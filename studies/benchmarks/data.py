"""Speed and memory of the data stage (scripts/prepare_data.py), and what they mean for OpenWebText2.

The paper's English recipe pretrains on OpenWebText2 (about 17B tokens, 63 GiB of text in monthly
``.jsonl.zst`` files). This benchmark measures on a generated multi-file corpus (or ``--corpus``):

- the tokenizer's own batch-encode speed, one thread, on the corpus's text: the limit a worker
  can reach (``tokenizer_speed``);
- the whole preparation (scan + encode + join, a fresh ``prepare_data.py`` process) at 1 and 2
  workers, for an 8k sentencepiece and a 50k byte-level BPE ``tokenizer.json``, runs interleaved
  (tokenizer x workers, repeated) so that a drift of the machine hits every cell alike
  (``runs``); its MB/s per worker against the limit, and the speed-up from 1 to 2 workers;
- the same corpus as one ``.jsonl.zst`` file, sentencepiece, 1 and 2 workers, interleaved with the
  runs above (``one_file_runs``): the main process decompresses it and hands blocks of its text to
  the workers, so its speed-up from 1 to 2 workers is measured against the same ceiling;
- peak memory of the whole process tree (PSS, sampled from /proc every 50 ms) at two corpus sizes
  10x apart, with fairseq's own index of entry sizes (measured here, bytes per entry) subtracted
  (``memory``);
- reading alone (JSON parsing of the corpus as ``.jsonl`` and as ``.jsonl.zst``, one process; the
  main process cutting the ``.jsonl.zst`` into blocks), and the join of the units' ids;
- the projected wall time for OWT2 on a 32-core node: the longest serial stage (the main process
  decompressing the corpus into blocks in both passes; the join of 17B tokens; the dictionary)
  plus the parallel work (scan and encode of .zst input, one worker's seconds per MB) divided by
  32 (``owt2_projection``).

The corpus is synthetic text (Zipf-distributed pseudo-words in sentences and paragraphs, jsonl
records of OWT2's size): nothing is downloaded, and the tokenizers are trained on it once and cached.
Timings are those of the machine at the time: ``machine`` records its load.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from fairseq_headless.files import atomic_path, save_figure_atomic

REPO = Path(__file__).resolve().parents[2]
# OpenWebText2 as the issue gives it.
OWT2_TEXT_MB = 63 * 2 ** 30 / 1e6
OWT2_TOKENS = 17e9
NODE_CORES = 32
TARGETS = {"fraction_of_tokenizer_speed": 0.5, "speedup_1_to_2": 1.6, "rss_growth_10x": 1.2, "owt2_hours": 3.0}

PRESETS = {
    # corpus MB, files, memory sizes (MB), repeats, tokenizer vocabularies, training sample MB
    "smoke": dict(corpus_mb=0.3, files=3, memory_mb=(0.1, 1.0), repeats=1, spm_vocab=300, bpe_vocab=1000,
                  train_mb=0.3),
    "quick": dict(corpus_mb=12, files=12, memory_mb=(4, 40), repeats=1, spm_vocab=8000, bpe_vocab=50000,
                  train_mb=6),
    "full": dict(corpus_mb=100, files=50, memory_mb=(20, 200), repeats=3, spm_vocab=8000, bpe_vocab=50000,
                 train_mb=30),
}


# --------------------------------------------------------------------------
# corpus and tokenizers
# --------------------------------------------------------------------------


def _words(n: int, rng) -> list[str]:
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    weights = [12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4, 2.2, 2.0, 2.0, 1.9,
               1.5, 1.0, 0.8, 0.2, 0.2, 0.1, 0.1]
    words, seen = [], set()
    while len(words) < n:
        w = "".join(rng.choices(letters, weights, k=max(1, int(rng.expovariate(0.25)) + 1)))
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


def write_corpus(folder: Path, total_mb: float, files: int, seed: int = 0) -> dict:
    """`files` .jsonl files of `total_mb` MB: records of paragraphs (OWT2-like, ~4 KB each) of
    sentences over a Zipf vocabulary of 60,000 pseudo-words."""
    import random

    import numpy as np

    rng = random.Random(seed)
    vocab = np.array(_words(60_000, rng))
    zipf = 1.0 / np.arange(1, len(vocab) + 1)
    zipf /= zipf.sum()
    generator = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    per_file = total_mb * 1e6 / files
    lines = 0
    for f in range(files):
        out, size = [], 0
        while size < per_file:
            paragraphs = []
            for _ in range(generator.integers(2, 9)):
                words = vocab[generator.choice(len(vocab), size=generator.integers(20, 120), p=zipf)]
                cut = np.cumsum(generator.integers(6, 25, size=len(words))) < len(words)
                sentence_ends = set(np.flatnonzero(cut).tolist())
                text = " ".join(w + ("." if i in sentence_ends else "") for i, w in enumerate(words.tolist()))
                paragraphs.append(text[:1].upper() + text[1:] + ".")
            record = json.dumps({"text": "\n\n".join(paragraphs)}) + "\n"
            out.append(record)
            size += len(record)
            lines += len(paragraphs)
        (folder / f"part{f:03d}.jsonl").write_text("".join(out), encoding="utf-8")
    return {"path": str(folder), "files": files, "bytes": sum(p.stat().st_size for p in folder.glob("*.jsonl")),
            "lines": lines}


def one_file_corpus(corpus: Path, path: Path) -> int:
    """The corpus's .jsonl files as one .jsonl.zst (zstd level 3, as OWT2 ships); its text bytes."""
    import zstandard

    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as out, zstandard.ZstdCompressor(level=3).stream_writer(out) as z:
            for part in sorted(Path(corpus).glob("*.jsonl")):
                z.write(part.read_bytes())
    return sum(part.stat().st_size for part in Path(corpus).glob("*.jsonl"))


def corpus_lines(folder: Path, limit_mb: float | None = None) -> list[str]:
    """The text lines prepare_data tokenizes (paragraphs of the records), up to limit_mb."""
    lines, size = [], 0
    for path in sorted(Path(folder).rglob("*.jsonl")):
        for row in path.read_text(encoding="utf-8").splitlines():
            if row.strip():
                for line in json.loads(row)["text"].split("\n"):
                    if line.strip():
                        lines.append(line.strip())
                        size += len(line) + 1
            if limit_mb is not None and size >= limit_mb * 1e6:
                return lines
    return lines


def train_tokenizers(corpus: Path, cache: Path, spm_vocab: int, bpe_vocab: int, train_mb: float,
                     log=print) -> dict:
    """An 8k sentencepiece BPE and a 50k byte-level BPE tokenizer.json, trained on the corpus once
    (reused from `cache` when there)."""
    cache.mkdir(parents=True, exist_ok=True)
    spm_path, bpe_path = cache / f"spm{spm_vocab}.model", cache / f"bpe{bpe_vocab}.json"
    lines = None
    if not spm_path.exists():
        import sentencepiece as spm

        lines = lines or corpus_lines(corpus, train_mb)
        log(f"training a {spm_vocab} sentencepiece BPE on {len(lines):,} lines")
        spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(cache / f"spm{spm_vocab}"),
                                       vocab_size=spm_vocab, model_type="bpe", hard_vocab_limit=False,
                                       byte_fallback=spm_vocab >= 1000, minloglevel=2)
    if not bpe_path.exists():
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        lines = lines or corpus_lines(corpus, train_mb)
        log(f"training a {bpe_vocab} byte-level BPE tokenizer.json on {len(lines):,} lines")
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(lines, trainers.BpeTrainer(
            vocab_size=bpe_vocab, show_progress=False, special_tokens=["<|endoftext|>", "<|padding|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        with atomic_path(bpe_path) as tmp:
            tok.save(str(tmp))
    return {"sentencepiece": {"option": "--spm-model", "path": str(spm_path), "requested_vocab": spm_vocab},
            "bpe": {"option": "--hf-tokenizer", "path": str(bpe_path), "requested_vocab": bpe_vocab}}


# --------------------------------------------------------------------------
# measurements (each in a fresh process: one thread, its own memory)
# --------------------------------------------------------------------------

_ENCODE_SPEED = r"""
import json, os, sys, time
os.environ["RAYON_NUM_THREADS"] = "1"; os.environ["TOKENIZERS_PARALLELISM"] = "false"
from studies.benchmarks.data import corpus_lines
from fairseq_headless.data.tokenizer import load_tokenizer
kind, path, corpus, barrier = sys.argv[1:5]
tok = load_tokenizer("sentencepiece" if kind == "sentencepiece" else "hf", path, "benchmark")
lines = corpus_lines(corpus)
size = sum(len(line.encode()) + 1 for line in lines)
if barrier == "wait":  # several copies at once: start the clock together, after every copy has loaded
    print("ready", flush=True)
    sys.stdin.readline()
started = time.perf_counter()
tokens = 0
for i in range(0, len(lines), 10000):
    tokens += sum(map(len, tok.encode_batch(lines[i:i + 10000])))
seconds = time.perf_counter() - started
print(json.dumps({"bytes": size, "seconds": seconds, "tokens": tokens, "vocab_size": tok.vocab_size}))
"""


def tokenizer_speed(kind: str, path: str, corpus: Path) -> dict:
    """The tokenizer's own encode_batch on the corpus's text lines, one thread (the text only, as
    the pipeline hands it over; batches of 10,000 lines like the pipeline's)."""
    proc = subprocess.run([sys.executable, "-c", _ENCODE_SPEED, kind, path, str(corpus), "alone"],
                          capture_output=True, text=True, env=_env(), check=True)
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    r["mb_per_s"] = r["bytes"] / 1e6 / r["seconds"]
    return r


def concurrent_tokenizer_speed(kind: str, path: str, corpus: Path, processes: int = 2) -> dict:
    """The same encode_batch in ``processes`` independent one-thread processes at once, clocks
    started together: what this machine gives two busy cores with no pipeline at all. Their summed
    MB/s over one process's alone is the ceiling of any 1 -> 2 worker speed-up here (a VM's two
    vCPUs may share a physical core, caches or memory bandwidth)."""
    procs = [subprocess.Popen([sys.executable, "-c", _ENCODE_SPEED, kind, path, str(corpus), "wait"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env())
             for _ in range(processes)]
    try:
        for p in procs:
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError(f"the concurrent {kind} tokenizer run did not start (exit {p.wait()})")
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        each = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    finally:
        for p in procs:
            p.kill() if p.poll() is None else None
    for r in each:
        r["mb_per_s"] = r["bytes"] / 1e6 / r["seconds"]
    return {"processes": processes, "each": each, "mb_per_s": sum(r["mb_per_s"] for r in each)}


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))


def _tree_memory(root: int) -> tuple[int, int]:
    """(PSS summed over `root` and its descendants, the largest RSS among them), bytes, from /proc.
    PSS shares each page among the processes that map it: forked workers share the parent's
    imported libraries, which a sum of RSS would count once per worker."""
    parent = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    parent[int(entry.name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    tree, frontier = {root}, {root}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier and p not in tree}
        tree |= frontier
    pss = rss = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if line.endswith("kB\n")}
        except OSError:
            continue
        pss += fields.get("Pss", 0)
        rss = max(rss, fields.get("Rss", 0))
    return pss, rss


# The passes' summary lines; the MB taken are those read from disk, as in every other figure here.
_LOG = {"scan": re.compile(r"^scanned .*? in ([\d.]+) s \(.*?; ([\d,.]+) MB read\): ([\d,]+) lines"),
        "encode": re.compile(r"^encoding: .*? in ([\d.]+) s \(.*?; ([\d,.]+) MB read\), ([\d,]+) tokens; joined "
                             r"([\d,.]+) MB of ids in ([\d.]+) s")}


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def prepare_run(corpus: Path, out: Path, tokenizer: dict, workers: int, label: str,
                sample_memory: bool = True, text_bytes: int | None = None) -> dict:
    """One `prepare_data.py` process: wall time, the passes' own times from its log, and (with
    ``sample_memory``) the peak PSS of the process tree. ``text_bytes``: the input's text, for a
    compressed input (the manifest has its size on disk). Speed runs do not sample: reading
    /proc/PID/smaps_rollup of processes that mapped torch costs ~20 ms of CPU (mostly kernel) per
    sample, about a fifth of a core at one sample per 50 ms, taken from the workers being timed."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, str(REPO / "scripts" / "prepare_data.py"), "--input", str(corpus), "--output", str(out),
               tokenizer["option"], tokenizer["path"], "--workers", str(workers), "--padding-factor", "128"]
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    peak = {"sum": 0, "max": 0}

    def sample():
        while proc.poll() is None:
            total, largest = _tree_memory(proc.pid)
            peak["sum"], peak["max"] = max(peak["sum"], total), max(peak["max"], largest)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    if sample_memory:
        sampler.start()
    stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - started
    if sample_memory:
        sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"prepare_data.py failed ({label}): {stderr.strip()[-2000:]}")
    record = {"label": label, "workers": workers, "wall_s": seconds,
              "peak_pss_mb": peak["sum"] / 1e6 if sample_memory else None,
              "peak_process_rss_mb": peak["max"] / 1e6 if sample_memory else None}
    for line in stderr.splitlines():  # the passes' summary lines are log messages (stderr)
        m = _LOG["scan"].match(line)
        if m:
            record.update(scan_mb=_number(m[2]), scan_s=_number(m[1]), lines=int(_number(m[3])))
        m = _LOG["encode"].match(line)
        if m:
            record.update(encode_mb=_number(m[2]), encode_s=_number(m[1]), tokens=int(_number(m[3])),
                          ids_mb=_number(m[4]), join_s=_number(m[5]))
    manifest = json.loads((out / "manifest.json").read_text())
    record["entries"] = sum(s["lines"] + s["documents"] - 1 for s in manifest["splits"].values())
    record["input_mb"] = (text_bytes if text_bytes is not None else sum(s["bytes"] for s in manifest["sources"])) / 1e6
    # The passes (scan, encode, join) against the start-up (importing torch and fairseq, a few
    # seconds that a 63 GiB run does not notice but a 12 MB one does): the speeds are the passes'.
    record["passes_s"] = record["scan_s"] + record["encode_s"] + record["join_s"]
    record["startup_s"] = seconds - record["passes_s"]
    record["wall_mb_per_s"] = record["input_mb"] / seconds
    record["mb_per_s"] = record["input_mb"] / record["passes_s"]
    record["mb_per_s_per_worker"] = record["mb_per_s"] / workers
    shutil.rmtree(out, ignore_errors=True)
    return record


def read_speed(corpus: Path, work: Path) -> dict:
    """Reading alone, one process, as each worker reads before tokenizing (sources.read_unit): the
    corpus as .jsonl and as .jsonl.zst (decompression and JSON parsing)."""
    import zstandard

    from fairseq_headless.data import sources

    work.mkdir(parents=True, exist_ok=True)
    plain = b"".join(p.read_bytes() for p in sorted(Path(corpus).glob("*.jsonl")))
    result = {"bytes": len(plain)}
    for name, data in (("corpus.jsonl", plain), ("corpus.jsonl.zst", zstandard.ZstdCompressor(level=3).compress(plain))):
        (work / name).write_bytes(data)
        found = sources.resolve_inputs([(None, str(work / name))])
        started = time.perf_counter()
        lines = sum(len(r.lines) for u in sources.make_units(found) for r in sources.read_unit(found, u, "text"))
        seconds = time.perf_counter() - started
        result[name.replace("corpus.", "").replace(".", "_")] = {"seconds": seconds, "lines": lines,
                                                                "mb_per_s": len(plain) / 1e6 / seconds}
        if name.endswith(".zst"):  # what the main process does alone for every worker: decompress, cut blocks
            started = time.perf_counter()
            cut = sum(end - start for start, end, _, _ in sources.stream_blocks(found[0], lambda n: None))
            seconds = time.perf_counter() - started
            assert cut == len(plain)
            result["zst_blocks"] = {"seconds": seconds, "mb_per_s": len(plain) / 1e6 / seconds}
        (work / name).unlink()
    return result


def index_bytes_per_entry(entries: int = 200_000) -> float:
    """What fairseq's builder holds per entry while it joins and writes an index (its Python list of
    sizes and pointers), traced: the part of the parent's memory that grows with the corpus."""
    import tempfile
    import tracemalloc

    import torch
    from fairseq.data import indexed_dataset

    with tempfile.TemporaryDirectory() as tmp:
        part = indexed_dataset.make_builder(f"{tmp}/p.bin", "mmap", vocab_size=50_000)
        item = torch.tensor([5, 6, 2])
        for _ in range(entries):
            part.add_item(item)
        part.finalize(f"{tmp}/p.idx")
        tracemalloc.start()
        whole = indexed_dataset.make_builder(f"{tmp}/w.bin", "mmap", vocab_size=50_000)
        saved, indexed_dataset._warmup_mmap_file = indexed_dataset._warmup_mmap_file, lambda path: None
        try:
            whole.merge_file_(f"{tmp}/p")
            whole.finalize(f"{tmp}/w.idx")
        finally:
            indexed_dataset._warmup_mmap_file = saved
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    return peak / entries


# --------------------------------------------------------------------------
# the whole benchmark
# --------------------------------------------------------------------------


def summarize(runs: list[dict], limits: dict, memory: list[dict], reading: dict, per_entry: float,
              concurrent: dict, one_file_runs: list[dict]) -> dict:
    """The figures the issue asks for, from the raw records (see the module docstring)."""
    out = {"tokenizers": {}}
    speed = {w: statistics.median(r["mb_per_s"] for r in one_file_runs if r["workers"] == w) for w in (1, 2)}
    ceiling = concurrent["sentencepiece"]["mb_per_s"] / limits["sentencepiece"]["mb_per_s"]
    out["one_file_zst"] = {"tokenizer": "sentencepiece", "end_to_end_mb_per_s": speed,
                           "speedup_1_to_2": speed[2] / speed[1], "machine_speedup_ceiling": ceiling,
                           "speedup_1_to_2_of_ceiling": speed[2] / speed[1] / ceiling}
    for kind, limit in limits.items():
        # the machine's own 1 -> 2 ceiling: two bare tokenizer processes against one
        ceiling = concurrent[kind]["mb_per_s"] / limit["mb_per_s"]
        cell = {w: [r for r in runs if r["label"] == kind and r["workers"] == w] for w in (1, 2)}
        per_worker = {w: statistics.median(r["mb_per_s_per_worker"] for r in cell[w]) for w in (1, 2)}
        speed = {w: statistics.median(r["mb_per_s"] for r in cell[w]) for w in (1, 2)}
        out["tokenizers"][kind] = {
            "tokenizer_mb_per_s": limit["mb_per_s"],
            "end_to_end_mb_per_s": speed, "end_to_end_mb_per_s_per_worker": per_worker,
            "fraction_of_tokenizer_speed": {w: per_worker[w] / limit["mb_per_s"] for w in (1, 2)},
            "speedup_1_to_2": speed[2] / speed[1],
            "tokenizer_two_processes_mb_per_s": concurrent[kind]["mb_per_s"],
            "machine_speedup_ceiling": ceiling,
            "speedup_1_to_2_of_ceiling": speed[2] / speed[1] / ceiling,
            "encode_s_per_mb_one_worker": statistics.median(r["encode_s"] / r["encode_mb"] for r in cell[1]),
            "scan_s_per_mb_one_worker": statistics.median(r["scan_s"] / r["scan_mb"] for r in cell[1]),
            "join_mb_per_s": statistics.median(r["ids_mb"] / max(r["join_s"], 1e-3) for r in cell[1] + cell[2]),
            "tokens_per_input_byte": statistics.median(r["tokens"] / (r["input_mb"] * 1e6) for r in cell[1]),
            "entries_per_input_byte": statistics.median(r["entries"] / (r["input_mb"] * 1e6) for r in cell[1]),
        }
    adjusted = [m["peak_pss_mb"] - per_entry * m["entries"] / 1e6 for m in memory]
    out["memory"] = {
        "input_mb": [m["input_mb"] for m in memory], "peak_pss_mb": [m["peak_pss_mb"] for m in memory],
        "peak_process_rss_mb": [m["peak_process_rss_mb"] for m in memory],
        "entries": [m["entries"] for m in memory], "index_bytes_per_entry": per_entry,
        "peak_pss_mb_without_index": adjusted, "growth_10x": adjusted[1] / adjusted[0],
    }
    out["reading_mb_per_s"] = {"jsonl": reading["jsonl"]["mb_per_s"], "jsonl_zst": reading["jsonl_zst"]["mb_per_s"],
                               "zst_blocks": reading["zst_blocks"]["mb_per_s"]}
    out["owt2_projection"] = {kind: owt2_projection(t, reading["zst_blocks"]["mb_per_s"])
                              for kind, t in out["tokenizers"].items()}
    return out


def owt2_projection(t: dict, blocks_mb_per_s: float, cores: int = NODE_CORES) -> dict:
    """Longest serial stage + parallel work / cores, in hours. Parallel: the scan and the encoding
    pass of decompressed blocks (one worker's seconds per MB of .jsonl). Serial: the main process
    decompressing the corpus into blocks for the workers (both passes), the join of the ids (its
    MB/s measured), the dictionary."""
    per_mb = t["scan_s_per_mb_one_worker"] + t["encode_s_per_mb_one_worker"]
    parallel_s = OWT2_TEXT_MB * per_mb / cores
    entries = OWT2_TEXT_MB * 1e6 * t["entries_per_input_byte"]
    ids_mb = (2 * (OWT2_TOKENS + entries) + 12 * entries) / 1e6  # uint16 ids and </s>; the index: int32 + int64
    serial = {"reading_s": 2 * OWT2_TEXT_MB / blocks_mb_per_s,
              "join_s": ids_mb / t["join_mb_per_s"], "dictionary_s": 1.0}
    longest = max(serial, key=serial.get)
    return {"parallel_s": parallel_s, "serial_s": serial, "longest_serial_stage": longest,
            "hours": (serial[longest] + parallel_s) / 3600, "cores": cores}


def run(output: Path, preset: str, corpus: Path | None = None, log=print) -> dict:
    import torch

    from .machine import describe

    settings = dict(PRESETS[preset])
    work = output / "work"
    machine = describe(torch.device("cpu"))
    started = time.time()
    if corpus is None:
        corpus = work / "corpus"
        if not corpus.exists():
            log(f"writing a {settings['corpus_mb']} MB corpus of {settings['files']} files")
            write_corpus(corpus, settings["corpus_mb"], settings["files"])
    tokenizers = train_tokenizers(corpus, output / "cache", settings["spm_vocab"], settings["bpe_vocab"],
                                  settings["train_mb"], log)
    limits = {}
    for kind, tok in tokenizers.items():
        limits[kind] = tokenizer_speed(kind, tok["path"], corpus)
        tok["vocab_size"] = limits[kind]["vocab_size"]
        log(f"{kind}: the tokenizer alone, one thread: {limits[kind]['mb_per_s']:.2f} MB/s")
    concurrent = {}
    for kind, tok in tokenizers.items():
        concurrent[kind] = concurrent_tokenizer_speed(kind, tok["path"], corpus)
        log(f"{kind}: two tokenizer processes at once: {concurrent[kind]['mb_per_s']:.2f} MB/s in all "
            f"({concurrent[kind]['mb_per_s'] / limits[kind]['mb_per_s']:.2f}x one alone)")
    one_file = work / "one_file" / "corpus.jsonl.zst"
    one_file_bytes = one_file_corpus(corpus, one_file)
    runs, one_file_runs = [], []
    for repeat in range(settings["repeats"]):
        cells = [(kind, tok, corpus, runs) for kind, tok in tokenizers.items()]
        cells.append(("one .jsonl.zst, sentencepiece", tokenizers["sentencepiece"], one_file, one_file_runs))
        for kind, tok, path, into in cells:  # interleaved: every cell sees the machine's drift alike
            for workers in (1, 2):
                r = prepare_run(path, work / "out", tok, workers, kind, sample_memory=False,
                                text_bytes=one_file_bytes if path == one_file else None)
                r["repeat"] = repeat
                into.append(r)
                log(f"{kind}, {workers} worker{'s' * (workers > 1)}: {r['mb_per_s']:.2f} MB/s "
                    f"({r['mb_per_s_per_worker']:.2f} per worker; {r['startup_s']:.1f} s start-up)")
    memory = []
    for i, mb in enumerate(settings["memory_mb"]):
        folder = work / f"memory{i}"
        if not folder.exists():
            write_corpus(folder, mb, max(1, int(settings["files"] * mb / settings["memory_mb"][0])), seed=10 + i)
        memory.append(prepare_run(folder, work / "out", tokenizers["sentencepiece"], 2, f"memory {mb} MB"))
        log(f"memory at {memory[-1]['input_mb']:.1f} MB: peak PSS {memory[-1]['peak_pss_mb']:.0f} MB")
    reading = read_speed(corpus, work / "reading")
    per_entry = index_bytes_per_entry()
    summary = summarize(runs, limits, memory, reading, per_entry, concurrent, one_file_runs)
    machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return {"preset": preset, "settings": settings, "machine": machine, "corpus": str(corpus),
            "tokenizers": tokenizers, "tokenizer_speed": limits, "tokenizer_two_processes": concurrent, "runs": runs,
            "one_file_runs": one_file_runs, "memory_runs": memory,
            "reading": reading, "summary": summary, "targets": check_targets(summary),
            "seconds": time.time() - started}


def check_targets(summary: dict) -> list[dict]:
    checks = []
    for kind, t in summary["tokenizers"].items():
        for w in (1, 2):
            checks.append({"what": f"{kind}: end to end per worker / tokenizer alone ({w} worker{'s' * (w > 1)})",
                           "value": t["fraction_of_tokenizer_speed"][w], "target": f">= {TARGETS['fraction_of_tokenizer_speed']}",
                           "met": t["fraction_of_tokenizer_speed"][w] >= TARGETS["fraction_of_tokenizer_speed"]})
        checks.append({"what": f"{kind}: speed-up from 1 to 2 workers", "value": t["speedup_1_to_2"],
                       "target": f">= {TARGETS['speedup_1_to_2']}", "met": t["speedup_1_to_2"] >= TARGETS["speedup_1_to_2"]})
        hours = summary["owt2_projection"][kind]["hours"]
        checks.append({"what": f"{kind}: OWT2 on {NODE_CORES} cores, hours", "value": hours,
                       "target": f"< {TARGETS['owt2_hours']}", "met": hours < TARGETS["owt2_hours"]})
    speedup = summary["one_file_zst"]["speedup_1_to_2"]
    checks.append({"what": "sentencepiece, one .jsonl.zst file: speed-up from 1 to 2 workers", "value": speedup,
                   "target": f">= {TARGETS['speedup_1_to_2']}", "met": speedup >= TARGETS["speedup_1_to_2"]})
    growth = summary["memory"]["growth_10x"]
    checks.append({"what": "peak memory (PSS) at 10x / at 1x, fairseq's index subtracted", "value": growth,
                   "target": f"<= {TARGETS['rss_growth_10x']}", "met": growth <= TARGETS["rss_growth_10x"]})
    return checks


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------


def markdown(result: dict, command: str) -> str:
    s = result["summary"]
    m = result["machine"]
    lines = [f"# Data preparation benchmark ({result['preset']})", "", f"`{command}`, {result['seconds'] / 60:.1f} min",
             "", f"- CPU: {m['cpu_model']}, {m['logical_cpus']} logical CPUs, {m['memory_gb']} GB; load average at "
             f"start {m['load_average_at_start']}, at end {m.get('load_average_at_end')}",
             f"- corpus: `{result['corpus']}`", "",
             "| tokenizer | V | alone, 1 thread MB/s | 1 worker MB/s | 2 workers MB/s | per worker / alone (1, 2) | "
             "speed-up 1->2 | two bare tokenizers / one (ceiling) | OWT2 on 32 cores |",
             "|---|---|---|---|---|---|---|---|---|"]
    for kind, t in s["tokenizers"].items():
        f = t["fraction_of_tokenizer_speed"]
        lines.append(f"| {kind} | {result['tokenizers'][kind]['vocab_size']:,} | {t['tokenizer_mb_per_s']:.2f} | "
                     f"{t['end_to_end_mb_per_s'][1]:.2f} | {t['end_to_end_mb_per_s'][2]:.2f} | {f[1]:.2f}, {f[2]:.2f} | "
                     f"{t['speedup_1_to_2']:.2f}x | {t['machine_speedup_ceiling']:.2f}x | "
                     f"{s['owt2_projection'][kind]['hours']:.2f} h |")
    one = s["one_file_zst"]
    lines.append(f"| one .jsonl.zst file, sentencepiece | | | {one['end_to_end_mb_per_s'][1]:.2f} | "
                 f"{one['end_to_end_mb_per_s'][2]:.2f} | | {one['speedup_1_to_2']:.2f}x | "
                 f"{one['machine_speedup_ceiling']:.2f}x | |")
    mem = s["memory"]
    lines += ["", "Speeds are the passes' (scan, encode, join: the prepare_data.py log), without the start-up "
              "(imports) of each process; speed runs are not sampled for memory (its /proc reads take CPU "
              "from the workers), memory runs are not timed.", "",
              f"Peak memory (PSS of the process tree, 2 workers, sentencepiece): {mem['peak_pss_mb'][0]:.0f} MB at "
              f"{mem['input_mb'][0]:.1f} MB of input, {mem['peak_pss_mb'][1]:.0f} MB at {mem['input_mb'][1]:.1f} MB "
              f"(largest single process RSS {mem['peak_process_rss_mb'][0]:.0f} / {mem['peak_process_rss_mb'][1]:.0f} MB); "
              f"without fairseq's index ({mem['index_bytes_per_entry']:.0f} bytes x {mem['entries'][0]:,} / "
              f"{mem['entries'][1]:,} entries): {mem['growth_10x']:.3f}x.",
              f"Reading alone, one process: .jsonl {s['reading_mb_per_s']['jsonl']:.1f} MB/s, .jsonl.zst "
              f"{s['reading_mb_per_s']['jsonl_zst']:.1f} MB/s; the .jsonl.zst cut into blocks for the workers "
              f"{s['reading_mb_per_s']['zst_blocks']:.1f} MB/s.", "",
              "OWT2 projection (63 GiB, 17B tokens, 32 cores): longest serial stage + parallel / 32:", ""]
    for kind, p in s["owt2_projection"].items():
        serial = ", ".join(f"{k} {v:,.0f} s" for k, v in p["serial_s"].items())
        lines.append(f"- {kind}: parallel {p['parallel_s']:,.0f} s; serial {serial} (longest: "
                     f"{p['longest_serial_stage']}) -> {p['hours']:.2f} h")
    lines += ["", "| target | value | wanted | met |", "|---|---|---|---|"]
    lines += [f"| {c['what']} | {c['value']:.3f} | {c['target']} | {'yes' if c['met'] else '**no**'} |"
              for c in result["targets"]]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result["summary"]
    kinds = list(s["tokenizers"])
    fig, (speed, memory) = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.25
    for i, (label, values) in enumerate((
            ("tokenizer alone, 1 thread", [s["tokenizers"][k]["tokenizer_mb_per_s"] for k in kinds]),
            ("1 worker", [s["tokenizers"][k]["end_to_end_mb_per_s_per_worker"][1] for k in kinds]),
            ("2 workers (per worker)", [s["tokenizers"][k]["end_to_end_mb_per_s_per_worker"][2] for k in kinds]))):
        speed.bar([x + (i - 1) * width for x in range(len(kinds))], values, width, label=label)
    speed.set_xticks(range(len(kinds)), kinds)
    speed.set_ylabel("MB of text per second")
    speed.set_title("preparation speed per worker")
    speed.legend(fontsize="small")
    mem = s["memory"]
    memory.plot(mem["input_mb"], mem["peak_pss_mb"], "o-", label="peak PSS, process tree")
    memory.plot(mem["input_mb"], mem["peak_pss_mb_without_index"], "s--", label="without fairseq's index")
    memory.set_xscale("log")
    memory.set_xlabel("input MB")
    memory.set_ylabel("MB")
    memory.set_ylim(bottom=0)
    memory.set_title("peak memory, 2 workers")
    memory.legend(fontsize="small")
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=110)


def main(argv=None) -> int:
    """studies/benchmarks/data.py: bad options raise an :class:`InputError` (``cli.run`` prints it, exit 2)."""
    import shlex

    from fairseq_headless.cli import Parser
    from fairseq_headless.files import write_json_atomic, write_text_atomic

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = Parser(prog="benchmark_data.py", description="Speed and memory of the data stage, and the "
                    "OpenWebText2 projection (BENCHMARKS.md).")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a 12 MB corpus, memory at 4 and 40 MB, one repeat")
    size.add_argument("--smoke", action="store_true", help="tiny corpus and tokenizers: checks the plumbing only")
    parser.add_argument("--output", type=Path, required=True, help="folder for the JSON, markdown and PNG")
    parser.add_argument("--corpus", type=Path, help="a folder of .jsonl files to measure on (default: generated)")
    parser.add_argument("--force", action="store_true", help="overwrite an earlier result in --output")
    args = parser.parse_args(argv)
    if args.output.exists() and not args.output.is_dir():
        parser.error(f"--output {args.output} is a file; give a folder")
    if (args.output / "benchmark_data.json").exists() and not args.force:
        parser.error(f"--output {args.output} already holds benchmark_data.json; add --force to overwrite it")
    if args.corpus is not None and not any(args.corpus.glob("*.jsonl")):
        parser.error(f"--corpus {args.corpus}: no .jsonl files in it")

    preset = "smoke" if args.smoke else "quick" if args.quick else "full"
    args.output.mkdir(parents=True, exist_ok=True)
    result = run(args.output, preset, args.corpus, log=lambda message: print(message, flush=True))
    command = shlex.join(["python", "studies/benchmarks/data.py", *argv])
    result["command"] = command
    write_text_atomic(args.output / "benchmark_data.md", markdown(result, command))
    plot(result, args.output / "benchmark_data.png")
    write_json_atomic(args.output / "benchmark_data.json", result)  # last: a finished run has it
    print((args.output / "benchmark_data.md").read_text())
    return 0


if __name__ == "__main__":
    import sys

    from fairseq_headless.cli import run as run_command

    sys.exit(run_command(main))
