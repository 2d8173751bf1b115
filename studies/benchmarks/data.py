"""Speed and memory of the data stage (fairseq_headless.data.prepare), and what they mean for OpenWebText2.

On a generated multi-file corpus of OWT2-like jsonl records (or ``--corpus``): the tokenizer's own speed,
one thread, alone and as two processes at once (this machine's 1 -> 2 ceiling); the whole preparation at
1 and 2 workers for an 8k sentencepiece and a 50k byte-level BPE, and for the corpus as one .jsonl.zst,
interleaved so that a drift of the machine hits every cell alike; peak PSS of a fresh process tree at two
corpus sizes 10x apart, fairseq's index subtracted; reading alone; and the projected wall time for OWT2
on a 32-core node (longest serial stage + parallel work / 32). Nothing is downloaded.

    python -m studies.benchmarks.data --quick --output bench-data/
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from fairseq_headless.files import atomic_path, proc_fields

logger = logging.getLogger("studies.benchmarks.data")  # also when run as __main__
REPO = Path(__file__).resolve().parents[2]
OWT2_TEXT_MB = 63 * 2 ** 30 / 1e6  # OpenWebText2: 63 GiB of text, 17B tokens
OWT2_TOKENS = 17e9
NODE_CORES = 32
PRESETS = {
    "smoke": dict(corpus_mb=0.3, files=3, memory_mb=(0.1, 1.0), repeats=1, spm_vocab=300, bpe_vocab=1000,
                  train_mb=0.3),
    "quick": dict(corpus_mb=12, files=12, memory_mb=(4, 40), repeats=1, spm_vocab=8000, bpe_vocab=50000,
                  train_mb=6),
    "full": dict(corpus_mb=100, files=50, memory_mb=(20, 200), repeats=3, spm_vocab=8000, bpe_vocab=50000,
                 train_mb=30),
}


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


def write_corpus(folder: Path, total_mb: float, files: int, seed: int = 0) -> None:
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
        (folder / f"part{f:03d}.jsonl").write_text("".join(out), encoding="utf-8")


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


def train_tokenizers(corpus: Path, cache: Path, spm_vocab: int, bpe_vocab: int, train_mb: float) -> dict:
    """An 8k sentencepiece BPE and a 50k byte-level BPE tokenizer.json, trained on the corpus once
    (reused from `cache` when there)."""
    cache.mkdir(parents=True, exist_ok=True)
    spm_path, bpe_path = cache / f"spm{spm_vocab}.model", cache / f"bpe{bpe_vocab}.json"
    lines = None
    if not spm_path.exists():
        import sentencepiece as spm

        lines = lines or corpus_lines(corpus, train_mb)
        logger.info(f"training a {spm_vocab} sentencepiece BPE on {len(lines):,} lines")
        spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(cache / f"spm{spm_vocab}"),
                                       vocab_size=spm_vocab, model_type="bpe", hard_vocab_limit=False,
                                       byte_fallback=spm_vocab >= 1000, minloglevel=2)
    if not bpe_path.exists():
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        lines = lines or corpus_lines(corpus, train_mb)
        logger.info(f"training a {bpe_vocab} byte-level BPE tokenizer.json on {len(lines):,} lines")
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(lines, trainers.BpeTrainer(
            vocab_size=bpe_vocab, show_progress=False, special_tokens=["<|endoftext|>", "<|padding|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        with atomic_path(bpe_path) as tmp:
            tok.save(str(tmp))
    return {"sentencepiece": {"mode": "spm", "path": str(spm_path), "requested_vocab": spm_vocab},
            "bpe": {"mode": "hf", "path": str(bpe_path), "requested_vocab": bpe_vocab}}


_ENCODE_SPEED = r"""
import json, os, sys, time
os.environ["RAYON_NUM_THREADS"] = "1"; os.environ["TOKENIZERS_PARALLELISM"] = "false"
from studies.benchmarks.data import corpus_lines
from fairseq_headless.data.tokenizer import load_tokenizer
kind, path, corpus = sys.argv[1:4]
tok = load_tokenizer("sentencepiece" if kind == "sentencepiece" else "hf", path, "benchmark")
lines = corpus_lines(corpus)
size = sum(len(line.encode()) + 1 for line in lines)
print("ready", flush=True)
sys.stdin.readline()  # start the clocks of several copies together, after each has loaded
started = time.perf_counter()
tokens = sum(sum(map(len, tok.encode_batch(lines[i:i + 10000]))) for i in range(0, len(lines), 10000))
seconds = time.perf_counter() - started
print(json.dumps({"bytes": size, "seconds": seconds, "tokens": tokens, "vocab_size": tok.vocab_size,
                  "mb_per_s": size / 1e6 / seconds}))
"""


def tokenizer_speed(kind: str, path: str, corpus: Path, processes: int = 1) -> dict:
    """The tokenizer's own encode_batch on the corpus's lines in ``processes`` one-thread processes at once.
    With 2, their summed MB/s over one alone is the ceiling of any 1 -> 2 worker speed-up on this machine."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    procs = [subprocess.Popen([sys.executable, "-c", _ENCODE_SPEED, kind, path, str(corpus)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env) for _ in range(processes)]
    try:
        if any(p.stdout.readline().strip() != "ready" for p in procs):
            raise RuntimeError(f"the {kind} tokenizer run did not start")
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        each = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    finally:
        for p in procs:
            p.kill()
    return each[0] if processes == 1 else {"processes": processes, "each": each,
                                           "mb_per_s": sum(r["mb_per_s"] for r in each)}


def _tree_memory(root: int) -> tuple[int, int]:
    """(PSS summed over `root` and its descendants, the largest RSS among them), bytes. PSS shares each page
    among the processes that map it: forked workers share the parent's libraries, which RSS counts each time."""
    parent = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            ppid = proc_fields(f"/proc/{entry.name}/status", ["PPid"]).get("PPid")
            if ppid:
                parent[int(entry.name)] = int(ppid)
    tree, frontier = {root}, {root}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier and p not in tree}
        tree |= frontier
    memory = [proc_fields(f"/proc/{pid}/smaps_rollup", ["Pss", "Rss"]) for pid in tree]
    kib = [(int(m.get("Pss", "0 kB").split()[0]), int(m.get("Rss", "0 kB").split()[0])) for m in memory]
    return sum(k[0] for k in kib) * 1024, max(k[1] for k in kib) * 1024


def _prepare(options, connection=None):
    from fairseq_headless.data.prepare import prepare_data

    summary = prepare_data(options)
    return summary if connection is None else connection.send(summary)


def prepare_run(corpus: Path, out: Path, tokenizer: dict, workers: int, label: str,
                sample_memory: bool = False, text_bytes: int | None = None) -> dict:
    """One preparation: its wall time and the passes' own times from its summary. ``sample_memory``: in a fresh
    process (spawned), its tree's peak PSS sampled every 50 ms; speed runs are not sampled (reading smaps of
    processes that mapped torch takes CPU from the workers being timed). ``text_bytes``: the input's size
    for a compressed one."""
    from fairseq_headless.data.prepare import Options

    shutil.rmtree(out, ignore_errors=True)
    options = Options(inputs=[(None, str(corpus))], output=out, tokenizer_mode=tokenizer["mode"],
                      tokenizer_file=Path(tokenizer["path"]), workers=workers, padding_factor=128)
    peak = [0, 0]
    started = time.perf_counter()
    if sample_memory:
        context = multiprocessing.get_context("spawn")
        receive, send = context.Pipe(duplex=False)
        process = context.Process(target=_prepare, args=(options, send))
        process.start()
        send.close()

        def sample():
            while process.is_alive():
                pss, rss = _tree_memory(process.pid)
                peak[:] = max(peak[0], pss), max(peak[1], rss)
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            summary = receive.recv()
        finally:
            process.join()
            sampler.join()
    else:
        summary = _prepare(options)
    seconds = time.perf_counter() - started
    scan, encode = summary["passes"]["scan"], summary["passes"]["encode"]
    record = {"label": label, "workers": workers, "wall_s": seconds,
              "peak_pss_mb": peak[0] / 1e6 if sample_memory else None,
              "peak_process_rss_mb": peak[1] / 1e6 if sample_memory else None,
              "scan_s": scan["seconds"], "scan_mb": scan["bytes_read"] / 1e6, "lines": scan["lines"],
              "encode_s": encode["seconds"], "encode_mb": encode["bytes_read"] / 1e6, "tokens": encode["tokens"],
              "ids_mb": encode["ids_bytes"] / 1e6, "join_s": encode["join_seconds"],
              "entries": sum(s["lines"] + s["documents"] - 1 for s in summary["manifest"]["splits"].values()),
              "input_mb": (text_bytes or scan["bytes_read"]) / 1e6}
    # the passes against the start-up, which a 63 GiB run does not notice but a 12 MB one does
    record["passes_s"] = record["scan_s"] + record["encode_s"] + record["join_s"]
    record["startup_s"] = seconds - record["passes_s"]
    record["mb_per_s"] = record["input_mb"] / record["passes_s"]
    record["mb_per_s_per_worker"] = record["mb_per_s"] / workers
    shutil.rmtree(out, ignore_errors=True)
    return record


def read_speed(corpus: Path, work: Path) -> dict:
    """Reading alone, one process, as a worker reads before tokenizing: the corpus as .jsonl and as .jsonl.zst;
    and the main process cutting the .jsonl.zst into blocks for the workers."""
    import zstandard

    from fairseq_headless.data import sources

    work.mkdir(parents=True, exist_ok=True)
    plain = b"".join(p.read_bytes() for p in sorted(Path(corpus).glob("*.jsonl")))
    result = {"bytes": len(plain)}
    for name, data in (("jsonl", plain), ("jsonl_zst", zstandard.ZstdCompressor(level=3).compress(plain))):
        path = work / ("corpus." + name.replace("_", "."))
        path.write_bytes(data)
        found = sources.resolve_inputs([(None, str(path))])
        started = time.perf_counter()
        lines = sum(len(r.lines) for u in sources.make_units(found) for r in sources.read_unit(found, u, "text"))
        result[name] = {"seconds": time.perf_counter() - started, "lines": lines}
        if name == "jsonl_zst":
            started = time.perf_counter()
            cut = sum(end - start for start, end, _, _ in sources.stream_blocks(found[0], lambda n: None))
            result["zst_blocks"] = {"seconds": time.perf_counter() - started}
            assert cut == len(plain)
        path.unlink()
    for timed in ("jsonl", "jsonl_zst", "zst_blocks"):
        result[timed]["mb_per_s"] = len(plain) / 1e6 / result[timed]["seconds"]
    return result


def index_bytes_per_entry(entries: int = 200_000) -> float:
    """What fairseq's builder holds per entry while it joins and writes an index (its Python lists of sizes
    and pointers), traced: the part of the main process's memory that grows with the corpus."""
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


def _speeds(runs, ceiling):
    speed = {w: statistics.median(r["mb_per_s"] for r in runs if r["workers"] == w) for w in (1, 2)}
    return {"end_to_end_mb_per_s": speed, "speedup_1_to_2": speed[2] / speed[1], "machine_speedup_ceiling": ceiling,
            "speedup_1_to_2_of_ceiling": speed[2] / speed[1] / ceiling}


def summarize(runs, limits, memory, reading, per_entry, concurrent, one_file_runs) -> dict:
    """The figures of BENCHMARKS.md, from the raw records (see the module docstring)."""
    ceiling = {kind: concurrent[kind]["mb_per_s"] / limit["mb_per_s"] for kind, limit in limits.items()}
    out = {"tokenizers": {}, "one_file_zst": dict(tokenizer="sentencepiece",
                                                  **_speeds(one_file_runs, ceiling["sentencepiece"]))}
    for kind, limit in limits.items():
        cell = [r for r in runs if r["label"] == kind]
        one = [r for r in cell if r["workers"] == 1]
        t = out["tokenizers"][kind] = dict(tokenizer_mb_per_s=limit["mb_per_s"], **_speeds(cell, ceiling[kind]))
        t["end_to_end_mb_per_s_per_worker"] = {w: v / w for w, v in t["end_to_end_mb_per_s"].items()}
        t["fraction_of_tokenizer_speed"] = {w: v / limit["mb_per_s"] for w, v in t["end_to_end_mb_per_s_per_worker"].items()}
        t["tokenizer_two_processes_mb_per_s"] = concurrent[kind]["mb_per_s"]
        t["encode_s_per_mb_one_worker"] = statistics.median(r["encode_s"] / r["encode_mb"] for r in one)
        t["scan_s_per_mb_one_worker"] = statistics.median(r["scan_s"] / r["scan_mb"] for r in one)
        t["join_mb_per_s"] = statistics.median(r["ids_mb"] / max(r["join_s"], 1e-3) for r in cell)
        t["entries_per_input_byte"] = statistics.median(r["entries"] / (r["input_mb"] * 1e6) for r in one)
    adjusted = [m["peak_pss_mb"] - per_entry * m["entries"] / 1e6 for m in memory]
    out["memory"] = {key: [m[key] for m in memory] for key in ("input_mb", "peak_pss_mb", "peak_process_rss_mb", "entries")}
    out["memory"].update(index_bytes_per_entry=per_entry, peak_pss_mb_without_index=adjusted,
                         growth_10x=adjusted[1] / adjusted[0])
    out["reading_mb_per_s"] = {k: reading[k]["mb_per_s"] for k in ("jsonl", "jsonl_zst", "zst_blocks")}
    out["owt2_projection"] = {kind: owt2_projection(t, reading["zst_blocks"]["mb_per_s"])
                              for kind, t in out["tokenizers"].items()}
    return out


def owt2_projection(t: dict, blocks_mb_per_s: float, cores: int = NODE_CORES) -> dict:
    """Longest serial stage + parallel work / cores, in hours. Parallel: the scan and encoding of decompressed
    blocks (one worker's seconds per MB). Serial: the main process decompressing the corpus into blocks (both
    passes), the join of the ids (its MB/s measured), the dictionary."""
    parallel_s = OWT2_TEXT_MB * (t["scan_s_per_mb_one_worker"] + t["encode_s_per_mb_one_worker"]) / cores
    entries = OWT2_TEXT_MB * 1e6 * t["entries_per_input_byte"]
    ids_mb = (2 * (OWT2_TOKENS + entries) + 12 * entries) / 1e6  # uint16 ids and </s>; the index: int32 + int64
    serial = {"reading_s": 2 * OWT2_TEXT_MB / blocks_mb_per_s, "join_s": ids_mb / t["join_mb_per_s"], "dictionary_s": 1.0}
    longest = max(serial, key=serial.get)
    return {"parallel_s": parallel_s, "serial_s": serial, "longest_serial_stage": longest,
            "hours": (serial[longest] + parallel_s) / 3600, "cores": cores}


def run(output: Path, preset: str, corpus: Path | None = None) -> dict:
    import torch

    from .machine import describe

    settings, work = dict(PRESETS[preset]), output / "work"
    machine, started = describe(torch.device("cpu")), time.time()
    if corpus is None:
        corpus = work / "corpus"
        if not corpus.exists():
            logger.info(f"writing a {settings['corpus_mb']} MB corpus of {settings['files']} files")
            write_corpus(corpus, settings["corpus_mb"], settings["files"])
    tokenizers = train_tokenizers(corpus, output / "cache", settings["spm_vocab"], settings["bpe_vocab"],
                                  settings["train_mb"])
    limits, concurrent = {}, {}
    for kind, tok in tokenizers.items():
        limits[kind] = tokenizer_speed(kind, tok["path"], corpus)
        concurrent[kind] = tokenizer_speed(kind, tok["path"], corpus, processes=2)
        tok["vocab_size"] = limits[kind]["vocab_size"]
        logger.info(f"{kind}: the tokenizer alone, one thread: {limits[kind]['mb_per_s']:.2f} MB/s; two at once "
                    f"{concurrent[kind]['mb_per_s'] / limits[kind]['mb_per_s']:.2f}x one alone")
    one_file = work / "one_file" / "corpus.jsonl.zst"
    one_file_bytes = one_file_corpus(corpus, one_file)
    runs, one_file_runs = [], []
    cells = [(kind, tok, corpus, runs) for kind, tok in tokenizers.items()]
    cells.append(("one .jsonl.zst, sentencepiece", tokenizers["sentencepiece"], one_file, one_file_runs))
    for repeat in range(settings["repeats"]):
        for kind, tok, path, into in cells:  # interleaved: every cell sees the machine's drift alike
            for workers in (1, 2):
                r = prepare_run(path, work / "out", tok, workers, kind,
                                text_bytes=one_file_bytes if path == one_file else None)
                into.append(dict(r, repeat=repeat))
                logger.info(f"{kind}, {workers} worker(s): {r['mb_per_s']:.2f} MB/s ({r['startup_s']:.1f} s start-up)")
    memory = []
    for i, mb in enumerate(settings["memory_mb"]):
        folder = work / f"memory{i}"
        if not folder.exists():
            write_corpus(folder, mb, max(1, int(settings["files"] * mb / settings["memory_mb"][0])), seed=10 + i)
        memory.append(prepare_run(folder, work / "out", tokenizers["sentencepiece"], 2, f"memory {mb} MB", True))
        logger.info(f"memory at {memory[-1]['input_mb']:.1f} MB: peak PSS {memory[-1]['peak_pss_mb']:.0f} MB")
    reading = read_speed(corpus, work / "reading")
    summary = summarize(runs, limits, memory, reading, index_bytes_per_entry(), concurrent, one_file_runs)
    machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return {"preset": preset, "settings": settings, "machine": machine, "corpus": str(corpus),
            "tokenizers": tokenizers, "tokenizer_speed": limits, "tokenizer_two_processes": concurrent, "runs": runs,
            "one_file_runs": one_file_runs, "memory_runs": memory, "reading": reading, "summary": summary,
            "seconds": time.time() - started}


def markdown(result: dict, command: str) -> str:
    from .report import machine_lines, table

    s, m, mem = result["summary"], result["machine"], result["summary"]["memory"]
    rows = [[kind, result["tokenizers"][kind]["vocab_size"], t["tokenizer_mb_per_s"], t["end_to_end_mb_per_s"][1],
             t["end_to_end_mb_per_s"][2], "{:.2f}, {:.2f}".format(*t["fraction_of_tokenizer_speed"].values()),
             f"{t['speedup_1_to_2']:.2f}x", f"{t['machine_speedup_ceiling']:.2f}x",
             f"{s['owt2_projection'][kind]['hours']:.2f} h"] for kind, t in s["tokenizers"].items()]
    one = s["one_file_zst"]
    rows.append(["one .jsonl.zst file, sentencepiece", None, None, one["end_to_end_mb_per_s"][1],
                 one["end_to_end_mb_per_s"][2], None, f"{one['speedup_1_to_2']:.2f}x",
                 f"{one['machine_speedup_ceiling']:.2f}x", None])
    lines = [
        f"# Data preparation benchmark ({result['preset']})", "", f"`{command}`, {result['seconds'] / 60:.1f} min", "",
        *machine_lines(m), f"- corpus: `{result['corpus']}`", "",
        table(rows, ["tokenizer", "V", "alone, 1 thread MB/s", "1 worker MB/s", "2 workers MB/s",
                     "per worker / alone (1, 2)", "speed-up 1->2", "two bare tokenizers / one (ceiling)",
                     "OWT2 on 32 cores"]), "",
        "Speeds are the passes' (scan, encode, join), without the start-up of each run; speed runs are not "
        "sampled for memory, memory runs (a fresh process each) are not timed.", "",
        f"Peak memory (PSS of the process tree, 2 workers, sentencepiece): {mem['peak_pss_mb'][0]:.0f} MB at "
        f"{mem['input_mb'][0]:.1f} MB of input, {mem['peak_pss_mb'][1]:.0f} MB at {mem['input_mb'][1]:.1f} MB "
        f"(largest single process RSS {mem['peak_process_rss_mb'][0]:.0f} / {mem['peak_process_rss_mb'][1]:.0f} MB); "
        f"without fairseq's index ({mem['index_bytes_per_entry']:.0f} bytes x {mem['entries'][0]:,} / "
        f"{mem['entries'][1]:,} entries): {mem['growth_10x']:.3f}x.",
        "Reading alone, one process: .jsonl {jsonl:.1f} MB/s, .jsonl.zst {jsonl_zst:.1f} MB/s; the .jsonl.zst cut "
        "into blocks for the workers {zst_blocks:.1f} MB/s.".format(**s["reading_mb_per_s"]), "",
        "OWT2 projection (63 GiB, 17B tokens, 32 cores): longest serial stage + parallel / 32:", ""]
    for kind, p in s["owt2_projection"].items():
        serial = ", ".join(f"{k} {v:,.0f} s" for k, v in p["serial_s"].items())
        lines.append(f"- {kind}: parallel {p['parallel_s']:,.0f} s; serial {serial} (longest: "
                     f"{p['longest_serial_stage']}) -> {p['hours']:.2f} h")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    from .report import plot as draw

    s = result["summary"]
    speed = {kind: ([1, 2], list(t["end_to_end_mb_per_s_per_worker"].values())) for kind, t in s["tokenizers"].items()}
    speed.update({f"{kind} alone, 1 thread": ([1, 2], [t["tokenizer_mb_per_s"]] * 2) for kind, t in s["tokenizers"].items()})
    mem = s["memory"]
    draw(path, [dict(title="preparation speed per worker", x="workers", y="MB of text per second", lines=speed),
                dict(title="peak memory, 2 workers", x="input MB", y="MB", log="x",
                     lines={"peak PSS, process tree": (mem["input_mb"], mem["peak_pss_mb"]),
                            "without fairseq's index": (mem["input_mb"], mem["peak_pss_mb_without_index"])})])


def main(argv=None) -> int:
    import shlex

    from fairseq_headless.cli import InputError, Parser
    from fairseq_headless.files import write_json_atomic, write_text_atomic
    from .report import check_output
    from .machine import quiet

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = Parser(prog="python -m studies.benchmarks.data", description="Speed and memory of the data stage, and "
                    "the OpenWebText2 projection (BENCHMARKS.md).")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a 12 MB corpus, memory at 4 and 40 MB, one repeat")
    size.add_argument("--smoke", action="store_true", help="tiny corpus and tokenizers: checks the plumbing only")
    parser.add_argument("--output", type=Path, required=True, help="folder for the JSON, markdown and PNG")
    parser.add_argument("--corpus", type=Path, help="a folder of .jsonl files to measure on (default: generated)")
    parser.add_argument("--force", action="store_true", help="overwrite an earlier result in --output")
    args = parser.parse_args(argv)
    check_output(args.output, "benchmark_data.json", args.force)
    if args.corpus is not None and not any(args.corpus.glob("*.jsonl")):
        raise InputError(f"--corpus {args.corpus}: no .jsonl files in it")
    quiet()
    args.output.mkdir(parents=True, exist_ok=True)
    result = run(args.output, "smoke" if args.smoke else "quick" if args.quick else "full", args.corpus)
    result["command"] = shlex.join(["python", "-m", "studies.benchmarks.data", *argv])
    write_text_atomic(args.output / "benchmark_data.md", markdown(result, result["command"]))
    plot(result, args.output / "benchmark_data.png")
    write_json_atomic(args.output / "benchmark_data.json", result)  # last: a finished run has it
    print((args.output / "benchmark_data.md").read_text())
    return 0


if __name__ == "__main__":
    from fairseq_headless.cli import run as run_command

    sys.exit(run_command(main))
