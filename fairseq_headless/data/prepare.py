"""Raw text -> a fairseq data folder for headless pretraining (paper Sec. 4-6), streaming, parallel and sharded.

A scan, a sample for sentencepiece, and one encoding pass per shard, each parallel over work units; the
output is the same for any --workers and a stopped run resumes. :func:`prepare_data` is the entry;
docs/data.md describes the output and how the passes work."""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import json
import logging
import multiprocessing
import multiprocessing.pool
import os
import queue
import re
import shlex
import shutil
import socket
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ..cli import InputError
from ..files import missing_parents, publish_folder, remove_empty, write_json_atomic, write_text_atomic as write_atomic
from . import binarize, sampling, splits
from .interrupt import interruptible, pause_for_tests
from ..progress import INTERVAL_SECONDS, Progress
from ..stages import Stage, StageSettingsError
from .sources import Source, Unit, is_streamed, make_units, read_unit, resolve_inputs, stream_blocks
from .tokenizer import (BYTE_FALLBACK_AUTO_MIN_VOCAB, Tokenizer, load_tokenizer, single_threaded,
                        train_sentencepiece, training_pieces)

FORMAT_VERSION = 1
DEFAULT_VOCAB_SIZE = 8000
DEFAULT_PADDING_FACTOR = 8
DEFAULT_ALPHA = 0.3
DEFAULT_SPM_SAMPLE_LINES = 300_000
# sentencepiece holds several times its sample while it trains; 300,000 sentence-long lines are
# about this much text, and paragraph-long lines must not make the sample grow with the corpus.
DEFAULT_SPM_SAMPLE_BYTES = 32_000_000
DEFAULT_CHARACTER_COVERAGE = 0.9995
LICENCE_UNKNOWN = "unknown"
# One tokenizer call: large enough that the call overhead vanishes, small enough that a worker
# holds a few MB of text and ids.
BATCH_BYTES = 1 << 20
BATCH_LINES = 10_000
SPLITS = ("train", "valid", "test")
POOL_STOP_SECONDS = 10

logger = logging.getLogger(__name__)


def default_workers() -> int:
    """The cores this process may use (a Slurm allocation, not the whole node)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@dataclasses.dataclass
class Options:
    """What to prepare: scripts/prepare_data.py's options (``cli.parse_options``), or built in code; fields
    left out take the command line's defaults, and bad values raise an InputError naming the option."""

    inputs: list[tuple[str | None, str]]  # (language or None, path or hf: spec); languages: multilingual
    output: Path
    tokenizer_mode: str = "train"  # "train" | "spm" (tokenizer_file: a .model) | "hf" (a tokenizer.json)
    tokenizer_file: Path | None = None
    vocab_size: int | None = None  # training: DEFAULT_VOCAB_SIZE
    model_type: str | None = None  # training: "bpe"
    character_coverage: float = DEFAULT_CHARACTER_COVERAGE
    byte_fallback: bool | None = None  # None: on when training at least BYTE_FALLBACK_AUTO_MIN_VOCAB pieces
    spm_sample_lines: int = DEFAULT_SPM_SAMPLE_LINES
    spm_sample_bytes: int = DEFAULT_SPM_SAMPLE_BYTES
    alpha: float | None = None  # multilingual: DEFAULT_ALPHA
    valid_lines: int | None = None
    test_lines: int | None = None
    padding_factor: int = DEFAULT_PADDING_FACTOR
    workers: int | None = None  # default_workers()
    seed: int = 1
    field: str = "text"
    licence: str = LICENCE_UNKNOWN
    shards: int = 1
    shard_index: int | None = None
    force: bool = False

    def __post_init__(self):
        self.output = Path(os.path.abspath(self.output))
        self.tokenizer_file = None if self.tokenizer_file is None else Path(self.tokenizer_file)
        if not self.inputs:
            raise InputError("give at least one input (--input or --lang-input)")
        if self.multilingual:
            self.alpha = DEFAULT_ALPHA if self.alpha is None else self.alpha
            if not 0.0 <= self.alpha <= 1.0:
                raise InputError(f"--alpha must be between 0 and 1, got {self.alpha}")
        elif self.alpha is not None:
            raise InputError("--alpha only applies to multilingual --lang-input")
        if self.tokenizer_mode == "train":
            self.vocab_size = DEFAULT_VOCAB_SIZE if self.vocab_size is None else self.vocab_size
            self.model_type = self.model_type or "bpe"
            if self.vocab_size < 2:
                raise InputError(f"--vocab-size must be at least 2, got {self.vocab_size}")
            if self.byte_fallback is None:
                self.byte_fallback = self.vocab_size >= BYTE_FALLBACK_AUTO_MIN_VOCAB
        elif self.tokenizer_mode in ("spm", "hf"):
            if self.tokenizer_file is None:
                raise InputError(f"tokenizer_mode {self.tokenizer_mode} needs a tokenizer_file")
            self.byte_fallback = bool(self.byte_fallback)
        else:
            raise InputError(f"tokenizer_mode must be train, spm or hf, got {self.tokenizer_mode!r}")
        if not 0.0 < self.character_coverage <= 1.0:
            raise InputError(f"--character-coverage must be in (0, 1], got {self.character_coverage}")
        self.workers = default_workers() if self.workers is None else self.workers
        for name, value in (("--valid-lines", self.valid_lines), ("--test-lines", self.test_lines),
                            ("--padding-factor", self.padding_factor), ("--workers", self.workers),
                            ("--spm-sample-lines", self.spm_sample_lines),
                            ("--spm-sample-bytes", self.spm_sample_bytes), ("--shards", self.shards)):
            if value is not None and value < 1:
                raise InputError(f"{name} must be at least 1, got {value}")
        if not self.field:
            raise InputError("--jsonl-field must not be empty")
        if self.shard_index is not None and not 0 <= self.shard_index < self.shards:
            raise InputError(f"--shard-index must be between 0 and --shards - 1 = {self.shards - 1}, "
                             f"got {self.shard_index}")

    @property
    def multilingual(self) -> bool:
        return any(language is not None for language, _ in self.inputs)

    def settings(self) -> dict:
        """What decides the output (not --workers, --force, --shard-index): a resumed run must have the same."""
        keep = ("inputs", "alpha", "tokenizer_mode", "vocab_size", "model_type", "tokenizer_file",
                "character_coverage", "byte_fallback", "spm_sample_lines", "spm_sample_bytes", "valid_lines",
                "test_lines", "padding_factor", "seed", "field", "licence", "shards")
        return json.loads(json.dumps({k: getattr(self, k) for k in keep}, default=str))

    def command(self) -> str:
        """The scripts/prepare_data.py command line that prepares the same folder (the manifest records it)."""
        if self.multilingual:
            words = ["--lang-input", *(f"{language}={path}" for language, path in self.inputs), "--alpha", self.alpha]
        else:
            words = ["--input", *(path for _, path in self.inputs)]
        words += ["--output", self.output]
        if self.tokenizer_mode == "train":
            words += ["--vocab-size", self.vocab_size, "--model-type", self.model_type, "--byte-fallback",
                      "on" if self.byte_fallback else "off", "--character-coverage", self.character_coverage,
                      "--spm-sample-lines", self.spm_sample_lines, "--spm-sample-bytes", self.spm_sample_bytes]
        else:
            words += ["--spm-model" if self.tokenizer_mode == "spm" else "--hf-tokenizer", self.tokenizer_file]
        for option, value in (("--valid-lines", self.valid_lines), ("--test-lines", self.test_lines),
                              ("--shard-index", self.shard_index)):
            if value is not None:
                words += [option, value]
        words += ["--padding-factor", self.padding_factor, "--workers", self.workers, "--seed", self.seed,
                  "--jsonl-field", self.field, "--licence", self.licence, "--shards", self.shards]
        return shlex.join(["prepare_data.py", *map(str, words), *(["--force"] if self.force else [])])


# -- what the workers share (inherited through fork, set again for each pass) --


@dataclasses.dataclass
class Job:
    sources: list[Source]
    units: list[Unit]
    field: str
    shards: int = 1
    seed: int = 1
    budgets: dict = dataclasses.field(default_factory=dict)  # group -> (valid, test) line budgets
    plans: dict = dataclasses.field(default_factory=dict)  # group -> SplitPlan
    resampling: dict | None = None  # unit -> (copies, extra lines, training lines)
    cutoff: int = sampling.PRIORITY_RANGE
    tokenizer: tuple | None = None  # (kind, path, option, trained)
    dict_size: int = 0
    vocab_size: int = 0
    workdir: Path | None = None
    queue: object = None


_JOB: Job | None = None
_TOKENIZER: Tokenizer | None = None


def _worker_start(load_tok: bool) -> None:
    global _TOKENIZER
    if load_tok:
        single_threaded()
        kind, path, option, trained = _JOB.tokenizer
        _TOKENIZER = load_tokenizer(kind, path, option, trained)


class _Reporter:
    """Progress from a worker: bytes read and tokens written, sent at most once a second."""

    def __init__(self, direct: Callable | None):
        self.direct, self.bytes, self.tokens, self.sent = direct, 0, 0, time.monotonic()

    def __call__(self, nbytes: int, tokens: int = 0) -> None:
        if self.direct is not None:
            self.direct(nbytes, tokens)
            return
        self.bytes += nbytes
        self.tokens += tokens
        if time.monotonic() - self.sent >= 1.0:
            self.flush()

    def flush(self) -> None:
        if self.direct is None and (self.bytes or self.tokens):
            _JOB.queue.put((self.bytes, self.tokens))
            self.bytes = self.tokens = 0
            self.sent = time.monotonic()


_DIRECT_REPORT: Callable | None = None  # in-process (--workers 1): straight to the Progress


def _task(args):
    stage, unit, extra = args
    report = _Reporter(_DIRECT_REPORT)
    try:
        return {"scan": _scan, "sample": _sample, "encode": _encode}[stage](unit, extra, report)
    finally:
        report.flush()


# -- the three passes, per unit --


def _scan(unit: Unit, _, report) -> dict:
    source = _JOB.sources[unit.source]
    hasher = splits.RecordHasher(source.name)
    candidates = splits.SplitCandidates(*_JOB.budgets[source.language])
    lines = records = documents = text_bytes = 0
    for record in read_unit(_JOB.sources, unit, _JOB.field, lambda n: report(n)):
        n = len(record.lines)
        lines += n
        records += 1
        documents += not record.continues
        text_bytes += sum(_text_bytes(line) for line in record.lines)
        candidates.add(hasher(record.position)[0], n, (unit.index, unit.start))
    return {"unit": unit.index, "block": (unit.start, unit.end, unit.disk), "lines": lines, "records": records,
            "documents": documents, "text_bytes": text_bytes, "candidates": candidates.state()}


def _text_bytes(line: str) -> int:
    """What a line counts as text in the logs: its UTF-8 bytes and a newline, whatever the file's compression."""
    return len(line.encode("utf-8")) + 1


def _lines(unit: Unit, shard: int | None, heldout: bool, report) -> Iterator[tuple]:
    """(split, line, key, copy, record position, line in record) in the order they are written; ``shard``
    None: the training lines of every shard. Consecutive keys (same copy and document, next line) are one text."""
    source = _JOB.sources[unit.source]
    hasher = splits.RecordHasher(source.name)
    plan = _JOB.plans[source.language]
    copies, extra, train_lines = (_JOB.resampling or {}).get(unit.index, (1, 0, 0))
    k = _JOB.shards

    def place(position):
        rank, shard_hash = hasher(position)
        return plan.split_of(rank), shard is None or shard_hash % k == shard

    def wanted(position):  # jsonl records of other shards are skipped unparsed
        split, mine = place(position)
        return (heldout and split != "train") or (split == "train" and mine)

    # A resampled unit reads everything: its draw counts every training line.
    want = wanted if _JOB.resampling is None and shard is not None else None

    for copy in range(copies + (extra > 0)):
        # The last pass of an up- or downsampled language keeps `extra` of its training lines,
        # drawn over all of them (every shard), so the draw does not depend on the shard.
        sampler = (sampling.SelectionSampler(extra, train_lines, sampling.unit_rng(
            _JOB.seed, source.language, source.name, unit.start)) if copy == copies else None)
        seq, doc = 0, None
        for record in read_unit(_JOB.sources, unit, _JOB.field, lambda n: report(n), want):
            split, mine = place(record.position)
            if not record.continues:
                doc = record.position
            for j, line in enumerate(record.lines):
                seq += 1
                if split == "train":
                    if (sampler is not None and not sampler.take()) or not mine:
                        continue
                elif not (heldout and copy == 0):
                    continue
                yield split, line, (copy, doc, seq), copy, record.position, j


def _sample(unit: Unit, bounds, report) -> dict:
    source = _JOB.sources[unit.source]
    priority = sampling.Priorities(_JOB.seed, source.name)
    kept, pieces = sampling.Reservoir(*bounds), 0  # what the unit can add to the sample, no more
    for _, line, _, copy, position, j in _lines(unit, None, False, report):
        for p, piece in enumerate(training_pieces(line)):
            pieces += 1
            value = priority(position, j, p, copy)
            if value < _JOB.cutoff:
                kept.offer(value, piece)
    return {"unit": unit.index, "kept": kept.pairs(), "cut": kept.cut, "pieces": pieces}


def _encode(unit: Unit, shard: int, report) -> dict:
    tok = _TOKENIZER
    counts = np.zeros(_JOB.vocab_size, dtype=np.int64)
    writers: dict[str, binarize.SplitWriter] = {}
    pending: list[tuple[str, str, bool]] = []
    size = text_bytes = 0
    last: dict[str, tuple] = {}

    def flush():
        if not pending:
            return
        encoded = tok.encode_batch([line for _, line, _ in pending])
        tokens = 0
        for split in SPLITS:
            rows = [i for i, (s, _, _) in enumerate(pending) if s == split]
            if not rows:
                continue
            if split not in writers:
                writers[split] = binarize.SplitWriter(
                    _JOB.workdir / f"{split}-{unit.index:07d}", _JOB.dict_size, tok.vocab_size, tok.option,
                    counts if split == "train" else None)
            writers[split].add([encoded[i] for i in rows], [pending[i][2] for i in rows])
            tokens += sum(len(encoded[i]) for i in rows)
        report(0, tokens)
        pending.clear()

    for split, line, key, *_ in _lines(unit, shard, shard == 0, report):
        copy, doc, seq = key
        pending.append((split, line, last.get(split) != (copy, doc, seq - 1)))
        last[split] = key
        size += len(line)
        text_bytes += _text_bytes(line)
        if size >= BATCH_BYTES or len(pending) >= BATCH_LINES:
            flush()
            size = 0
    flush()
    return {"unit": unit.index, "parts": {s: w.finish() for s, w in writers.items()}, "counts": counts,
            "text_bytes": text_bytes}


# -- running a pass --


def _blocks(job: Job, units: Sequence[Unit], progress: _PassProgress) -> Iterator[Unit]:
    """The units of compressed files, each with its text, decompressed in this process file after
    file. A file not yet cut (one unit, ``end`` None: the scan) is cut into blocks here."""
    by_source: dict[int, list[Unit]] = {}
    for u in units:
        by_source.setdefault(u.source, []).append(u)
    for source, known in by_source.items():
        known.sort(key=lambda u: u.start)
        found = known[0].end is None
        ends = None if found else [u.end for u in known]
        blocks = stream_blocks(job.sources[source], progress.add, ends)
        for i, (start, end, disk, data) in enumerate(blocks):
            unit = Unit(known[0].index, source, start, end, disk) if found else known[i]
            yield dataclasses.replace(unit, data=data)


def run_pass(job: Job, stage: str, units: Sequence[Unit], workers: int, progress: _PassProgress,
             extra=None, load_tok: bool = False) -> Iterator[dict]:
    """Run ``stage`` over ``units``; yields each unit's result as it finishes (in any order). This process
    decompresses each compressed file once and hands out its blocks, at most ``workers + 2`` ahead."""
    global _JOB, _DIRECT_REPORT
    streamed = [u for u in units if is_streamed(job.sources, u)]
    # Longest first, so that the last unit to start is a short one.
    order = sorted((u for u in units if not is_streamed(job.sources, u)), key=lambda u: -u.disk_bytes(job.sources))
    tasks = [(stage, u, extra) for u in order]
    _JOB = job
    if workers == 1 or (len(tasks) == 1 and not streamed):
        saved = {k: os.environ.get(k) for k in ("RAYON_NUM_THREADS", "TOKENIZERS_PARALLELISM")}
        _DIRECT_REPORT = progress.add
        try:
            _worker_start(load_tok)
            for t in tasks:
                yield _task(t)
            for block in _blocks(job, streamed, progress):
                yield _task((stage, block, extra))
        finally:
            _DIRECT_REPORT = None
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        return
    # fork: the workers inherit the job and the imported libraries (fairseq, tokenizers) instead
    # of importing them again, and no worker has run a tokenizer thread before it forks.
    context = multiprocessing.get_context("fork")
    job.queue = context.SimpleQueue()
    # Frozen objects are never scanned: the workers' garbage collector would otherwise copy the parent's
    # copy-on-write heap page by page, and memory would grow with the corpus (BENCHMARKS.md).
    gc.freeze()
    others = set(multiprocessing.active_children())
    try:
        pool = context.Pool(workers if streamed else min(workers, len(tasks)), initializer=_worker_start,
                            initargs=(load_tok,))
    finally:
        gc.unfreeze()
    pool_workers = set(multiprocessing.active_children()) - others
    finished: queue.SimpleQueue = queue.SimpleQueue()  # (is a block, result or the worker's exception)

    def submit(task, block: bool):
        pool.apply_async(_task, (task,), callback=lambda r: finished.put((block, r)),
                         error_callback=lambda e: finished.put((block, e)))

    try:
        for t in tasks:
            submit(t, False)
        pending, ahead, blocks = len(tasks), 0, _blocks(job, streamed, progress)
        while pending or blocks is not None:
            while blocks is not None and ahead < workers + 2:
                block = next(blocks, None)
                if block is None:
                    blocks = None
                else:
                    submit((stage, block, extra), True)
                    pending, ahead = pending + 1, ahead + 1
                    del block
            try:
                block, result = finished.get(timeout=0.5)
            except queue.Empty:
                result = None
            while not job.queue.empty():
                progress.add(*job.queue.get())
            progress.add(0)  # a line every interval, whether or not a worker reported
            if result is not None:
                pending, ahead = pending - 1, ahead - block
                if isinstance(result, BaseException):
                    raise result
                yield result
        while not job.queue.empty():
            progress.add(*job.queue.get())
        pool.close()
        pool.join()
    except BaseException:
        _stop_pool(pool, pool_workers)
        raise
    finally:
        pool.terminate()
        job.queue = None


def _stop_pool(pool, workers) -> None:
    """End a pool on an error or a signal without waiting forever: a worker killed holding a queue lock would
    hang ``Pool.terminate()``, so the workers are killed, their locks freed, and ``terminate()`` gets a few seconds."""
    pool._worker_handler._state = multiprocessing.pool.TERMINATE  # no new workers for those killed here
    for worker in workers:
        worker.kill()
    for worker in workers:
        worker.join(POOL_STOP_SECONDS)
    for lock in (pool._inqueue._rlock, pool._outqueue._wlock):  # whoever held them is dead now
        if lock is not None:
            lock.acquire(False)
            lock.release()
    stopper = threading.Thread(target=pool.terminate, name="pool-terminate", daemon=True)
    stopper.start()
    stopper.join(POOL_STOP_SECONDS)


# -- the corpus after the scan --


@dataclasses.dataclass
class Scan:
    sources: list[dict]  # manifest entries (path, lines, documents, bytes, language, licence)
    unit_lines: list[int]
    groups: dict  # group -> {"plan": [valid_below, test_below], "lines": {...}, "unit_heldout": {...}}
    multilingual: dict | None
    resampling: dict | None  # str(unit) -> [copies, extra, training lines]
    train_lines: int  # training lines written (after resampling), all shards
    # The units of the passes after the scan, [source, start, end, disk]: the compressed files cut
    # into the blocks the scan found.
    units: list

    def work_units(self) -> list[Unit]:
        return [Unit(i, *u) for i, u in enumerate(self.units)]

    def plans(self) -> dict:
        return {_group_key(g): splits.SplitPlan(*v["plan"]) for g, v in self.groups.items()}

    def resampling_by_unit(self) -> dict | None:
        return None if self.resampling is None else {int(u): tuple(v) for u, v in self.resampling.items()}


def _text_rate(text: int, seconds: float, read: int) -> str:
    """A pass's summary: its text (uncompressed) and rate, then what it read from disk (compressed, for
    compressed input), which is what the progress lines count."""
    return (f"{text / 1e6:,.1f} MB of text ({text:,} bytes) in {seconds:.1f} s "
            f"({text / 1e6 / max(seconds, 1e-9):.2f} MB/s of text; {read / 1e6:,.1f} MB read)")


def _group_name(group) -> str:
    return "all" if group is None else group


def _group_key(name: str):
    return None if name == "all" else name


class _PassProgress(Progress):
    """A pass's progress: bytes read, and the tokens written so far as its status."""

    tokens = 0

    def add(self, nbytes: int, tokens: int = 0) -> None:
        if tokens:
            self.tokens += tokens
            self.status = f"{self.tokens:,} tokens written"
        self.update(nbytes)


class Preparation:
    def __init__(self, opts: Options, progress_seconds: float = INTERVAL_SECONDS):
        self.opts, self.progress_seconds, self.workers = opts, progress_seconds, opts.workers
        self.passes: dict[str, dict] = {}  # what this run did: the summary of prepare_data

    # -- passes --------------------------------------------------------------

    def _progress(self, what: str, total: int) -> _PassProgress:
        return _PassProgress(what, total, interval=self.progress_seconds, transient=True)

    def scan(self, sources: list[Source], units: list[Unit]) -> Scan:
        opts = self.opts
        groups = list(dict.fromkeys(lang for lang, _ in opts.inputs)) if opts.multilingual else [None]
        limit = splits.MAX_DEFAULT_SPLIT_LINES
        budgets = {g: (opts.valid_lines or limit, opts.test_lines or limit) for g in groups}
        job = Job(sources, units, opts.field, budgets=budgets)
        candidates = {g: splits.SplitCandidates(*budgets[g]) for g in groups}
        found = {}  # (unit, start) -> (lines, end, disk): a compressed file's unit comes back as its blocks
        per_source = [{"lines": 0, "documents": 0, "text_bytes": 0} for _ in sources]  # for the manifest
        progress = self._progress("scanning", sum(u.disk_bytes(sources) for u in units))
        # closing: a signal arriving here, outside the pass's own frame, still ends its pool before we go on
        with contextlib.closing(run_pass(job, "scan", units, self.workers, progress)) as results:
            for r in results:
                unit = units[r["unit"]]
                start, end, disk = r["block"]
                found[r["unit"], start] = r["lines"], end, disk
                for key, total in per_source[unit.source].items():
                    per_source[unit.source][key] = total + r[key]
                candidates[sources[unit.source].language].merge(r["candidates"])
                pause_for_tests("scan")
        seconds = progress.close()
        # The candidates name their unit (unit, start); the passes after the scan number the blocks too.
        index = {key: i for i, key in enumerate(sorted(found))}
        units = [Unit(index[u, start], units[u].source, start, end, disk)
                 for (u, start), (_, end, disk) in sorted(found.items())]
        unit_lines = [found[key][0] for key in sorted(found)]
        text = sum(st["text_bytes"] for st in per_source)
        self.passes["scan"] = {"seconds": seconds, "bytes_read": progress.done, "text_bytes": text,
                               "lines": sum(unit_lines)}
        logger.info(f"scanned {_text_rate(text, seconds, progress.done)}: {sum(unit_lines):,} lines in "
                 f"{len(sources)} source{'s' * (len(sources) != 1)}")

        manifest_sources = [
            {"path": s.path, "lines": st["lines"], "documents": st["documents"],
             "bytes": st["text_bytes"] if s.kind == "hf" else s.size, "language": s.language,
             "licence": opts.licence} for s, st in zip(sources, per_source)]
        result_groups = {}
        for g in groups:
            total = sum(n for u, n in zip(units, unit_lines) if sources[u.source].language == g)
            if total == 0:
                if g is None:
                    shown = ", ".join(path for _, path in opts.inputs)
                    raise InputError(f"input is empty: no non-empty lines in {shown} (--input)")
                paths = ", ".join(p for lang, p in opts.inputs if lang == g)
                raise InputError(f"input is empty: no non-empty lines for language {g} in {paths} (--lang-input)")
            n_valid = splits.default_split_lines(total) if opts.valid_lines is None else opts.valid_lines
            n_test = splits.default_split_lines(total) if opts.test_lines is None else opts.test_lines
            what = "the input" if g is None else f"language {g}"
            split = splits.plan_split(candidates[g], total, n_valid, n_test, what)
            result_groups[_group_name(g)] = {
                "plan": [split.plan.valid_below, split.plan.test_below], "lines": split.lines,
                "unit_heldout": {str(index[u]): v["valid"] + v["test"] for u, v in split.unit_lines.items()}}

        multilingual = resampling = None
        train_lines = sum(g["lines"]["train"] for g in result_groups.values())
        if opts.multilingual:
            multilingual, resampling = self._resampling(units, sources, unit_lines, result_groups)
        return Scan(manifest_sources, unit_lines, result_groups, multilingual, resampling, train_lines,
                    [[u.source, u.start, u.end, u.disk] for u in units])

    def _resampling(self, units, sources, unit_lines, groups) -> tuple[dict, dict]:
        opts = self.opts
        counts = {_group_key(g): v["lines"]["train"] for g, v in groups.items()}
        q = sampling.sampling_probabilities(counts, opts.alpha)
        targets = sampling.sampled_line_counts(counts, opts.alpha)
        total = sum(counts.values())
        section = {"alpha": opts.alpha, "languages": {}}
        resampling = {}
        for lang, n in counts.items():
            g = groups[_group_name(lang)]
            train_of = {u.index: unit_lines[u.index] - g["unit_heldout"].get(str(u.index), 0)
                        for u in units if sources[u.source].language == lang}
            copies, extra = divmod(targets[lang], n)
            shares = sampling.allocate(extra, train_of)
            for u, lines in train_of.items():
                resampling[str(u)] = [copies, shares[u], lines]
            section["languages"][lang] = {
                "original_train_lines": n, "sampled_train_lines": targets[lang], "original_share": n / total,
                "sampling_probability": q[lang], "valid_lines": g["lines"]["valid"],
                "test_lines": g["lines"]["test"]}
        return section, resampling

    def training_sample(self, sources, units, scan: Scan, k: int, max_bytes: int | None = None) -> list[str]:
        """Training lines (pieces of at most 4,000 bytes) drawn uniformly, at most k of them and
        max_bytes in all: the priority reservoir."""
        opts = self.opts
        units = scan.work_units()
        job = Job(sources, units, opts.field, shards=opts.shards, seed=opts.seed, plans=scan.plans(),
                  resampling=scan.resampling_by_unit())
        job.cutoff = sampling.reservoir_cutoff(k, scan.train_lines)
        while True:
            reservoir, pieces, cut = sampling.Reservoir(k, max_bytes), 0, sampling.PRIORITY_RANGE
            progress = self._progress("sampling for sentencepiece", self._pass_bytes(units, sources, scan))
            with contextlib.closing(run_pass(job, "sample", units, self.workers, progress,
                                             extra=(k, max_bytes))) as results:  # as the scan's
                for r in results:
                    reservoir.merge(r["kept"])
                    pieces, cut = pieces + r["pieces"], min(cut, r["cut"])
            seconds = progress.close()
            done = self.passes.setdefault("sample", {"seconds": 0.0, "bytes_read": 0})
            done["seconds"], done["bytes_read"] = done["seconds"] + seconds, done["bytes_read"] + progress.done
            # Exact once a bound (a unit's or the whole sample's) let go of a line below the cut-off: no
            # line above that one can be in the sample, and every line below it was offered.
            if (min(cut, reservoir.cut) < job.cutoff or len(reservoir) in (k, pieces)
                    or job.cutoff >= sampling.PRIORITY_RANGE):
                break
            job.cutoff = min(sampling.PRIORITY_RANGE, job.cutoff * 4)  # far below the odds, see reservoir_cutoff
        return reservoir.items()

    def train_tokenizer(self, sources, units, scan: Scan, folder: Path) -> Tokenizer:
        opts = self.opts
        sample = self.training_sample(sources, units, scan, opts.spm_sample_lines, opts.spm_sample_bytes)
        logger.info(f"training a sentencepiece {opts.model_type} model, vocab size {opts.vocab_size}, byte fallback "
                 f"{'on' if opts.byte_fallback else 'off'}, on {len(sample)} lines "
                 f"({sum(len(line.encode('utf-8')) for line in sample) / 1e6:,.1f} MB)")

        def train() -> Tokenizer:
            pause_for_tests("tokenizer")  # where the native training runs: a test's signal must get through
            return train_sentencepiece(sample, folder, opts.vocab_size, opts.model_type, opts.character_coverage,
                                       opts.byte_fallback, threads=self.workers)

        return interruptible(train)

    @staticmethod
    def _pass_bytes(units, sources, scan: Scan) -> int:
        """Bytes read by a pass: a resampled unit is read once per copy."""
        resampling = scan.resampling_by_unit() or {}
        return sum(u.disk_bytes(sources) * (lambda c, e, _: c + (e > 0))(*resampling.get(u.index, (1, 0, 0)))
                   for u in units)

    def encode_shard(self, shard: int, sources, units, scan: Scan, tok: Tokenizer, dest: Path) -> dict:
        """Write shard ``shard``'s splits into ``dest``; returns its counts."""
        opts = self.opts
        units = scan.work_units()
        work = dest / ".units"
        work.mkdir(parents=True, exist_ok=True)
        dict_size = binarize.dictionary_size(tok.vocab_size, opts.padding_factor)
        job = Job(sources, units, opts.field, shards=opts.shards, seed=opts.seed, plans=scan.plans(),
                  resampling=scan.resampling_by_unit(), tokenizer=(tok.kind, tok.path, tok.option, tok.trained),
                  dict_size=dict_size, vocab_size=tok.vocab_size, workdir=work)
        what = "encoding" if opts.shards == 1 else f"encoding shard {shard}"
        binarize.preload()  # before the workers fork (and before the pass's clock starts)
        progress = self._progress(what, self._pass_bytes(units, sources, scan))
        parts: dict[str, dict[int, dict]] = {s: {} for s in SPLITS}
        counts = np.zeros(tok.vocab_size, dtype=np.int64)
        text = 0
        with contextlib.closing(run_pass(job, "encode", units, self.workers, progress, extra=shard,
                                         load_tok=True)) as results:
            for r in results:
                counts += r["counts"]
                text += r["text_bytes"]
                for split, part in r["parts"].items():
                    parts[split][r["unit"]] = part
                pause_for_tests(f"encode{shard}")
        seconds = progress.close()
        stats = {}
        joining = time.monotonic()
        for split in SPLITS if shard == 0 else ("train",):
            ordered = [parts[split][u] for u in sorted(parts[split])]
            binarize.join(dest / split, ordered, dict_size)
            s = {k: sum(p[k] for p in ordered) for k in ("lines", "documents", "tokens", "dropped_lines")}
            if s["dropped_lines"]:
                logger.warning(f"{split}: {s['dropped_lines']} non-empty lines encoded to no tokens and were dropped")
            else:
                del s["dropped_lines"]
            if s["lines"] == 0:
                where = f"the {split} split" + (f" of shard {shard}" if opts.shards > 1 else "")
                fix = "; use fewer --shards" if opts.shards > 1 and split == "train" else \
                    "; check the input text and the tokenizer"
                raise InputError(f"{where} has no tokens after tokenization{fix}")
            stats[split] = s
        shutil.rmtree(work)
        joined = time.monotonic() - joining
        size = sum((dest / f"{s}.bin").stat().st_size for s in stats)
        self.passes[what.replace("encoding", "encode")] = {
            "seconds": seconds, "bytes_read": progress.done, "text_bytes": text, "tokens": progress.tokens,
            "ids_bytes": size, "join_seconds": joined}
        logger.info(f"{what}: {_text_rate(text, seconds, progress.done)}, {progress.tokens:,} tokens; "
                 f"joined {size / 1e6:,.1f} MB of ids in {joined:.2f} s")
        return {"shard": shard, "splits": stats, "counts": counts.tolist(), "workers": self.workers,
                "seconds": round(seconds, 3)}

    # -- the output ----------------------------------------------------------

    def manifest(self, tok: Tokenizer, scan: Scan, shard_results: list[dict]) -> dict:
        opts = self.opts
        madeup = binarize.madeupwords(tok.vocab_size, opts.padding_factor)
        dict_size = binarize.dictionary_size(tok.vocab_size, opts.padding_factor)
        first = shard_results[0]["splits"]
        train = {k: sum(r["splits"]["train"].get(k, 0) for r in shard_results)
                 for k in ("lines", "documents", "tokens", "dropped_lines")}
        if not train["dropped_lines"]:
            del train["dropped_lines"]
        manifest = {
            "format_version": FORMAT_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "tokenizer": {"type": tok.kind, "path": f"tokenizer/{tok.filename}", "model_type": tok.model_type,
                          "trained": tok.trained, "vocab_size": tok.vocab_size},
            "id_mapping": {
                "fairseq_id": "tokenizer_id + offset", "offset": binarize.ID_OFFSET,
                "fairseq_specials": dict(binarize.FAIRSEQ_SPECIALS), "padding_factor": opts.padding_factor,
                "dictionary_size": dict_size, "madeupwords": madeup, "mask_appended_by_masked_lm_task": True,
                "masked_lm_embedding_rows": dict_size + 1},
            "splits": {"train": train, "valid": first["valid"], "test": first["test"]},
            "split_method": splits.METHOD + (", per language before sampling" if opts.multilingual else ""),
            "split_thresholds": {g: {"valid_below": v["plan"][0], "test_below": v["plan"][1]}
                                 for g, v in scan.groups.items()},
            "seed": opts.seed,
            "workers": self.workers,
            "shards": {"count": opts.shards,
                       "paths": [f"shard{r['shard']}" for r in shard_results] if opts.shards > 1 else ["."],
                       "train": [r["splits"]["train"] for r in shard_results]},
            "sources": scan.sources,
            "multilingual": scan.multilingual,
            "command": opts.command(),
        }
        if tok.trained:
            manifest["tokenizer"].update(requested_vocab_size=opts.vocab_size,
                                         character_coverage=opts.character_coverage, byte_fallback=opts.byte_fallback)
        return manifest

    def write_dictionary_and_manifest(self, folder: Path, tok: Tokenizer, scan: Scan, shard_results: list[dict]):
        counts = np.sum([np.asarray(r["counts"], dtype=np.int64) for r in shard_results], axis=0)
        body, _ = binarize.dictionary_text(counts, self.opts.padding_factor)
        write_atomic(folder / "dict.txt", body)
        manifest = self.manifest(tok, scan, shard_results)
        write_json_atomic(folder / "manifest.json", manifest)  # last: a complete folder has it
        return manifest

    # -- whole runs ----------------------------------------------------------

    def _given_tokenizer(self) -> Tokenizer | None:
        """The given tokenizer, loaded before any text is read so a bad file fails fast."""
        opts = self.opts
        if opts.tokenizer_mode == "train":
            return None
        kind = "sentencepiece" if opts.tokenizer_mode == "spm" else "hf"
        return load_tokenizer(kind, opts.tokenizer_file, "--spm-model" if kind == "sentencepiece" else "--hf-tokenizer")

    def _sources(self, excluded: Sequence[Path]):
        sources = resolve_inputs(self.opts.inputs, exclude=excluded)
        return sources, make_units(sources)

    def run(self) -> dict | None:
        return self._run_single() if self.opts.shards == 1 else self._run_sharded()

    def _run_single(self) -> dict:
        """One folder, prepared as a single shard in ``OUT.partial`` (so that a stopped run resumes as a sharded
        one does: the scan, the tokenizer and a finished encoding are kept), then renamed onto OUT whole."""
        opts = self.opts
        out = opts.output
        if (out.exists() or out.is_symlink()) and not opts.force:
            raise InputError(f"output folder {out} already exists; pass --force to replace it or choose another "
                             "--output")
        if (out.exists() or out.is_symlink()) and not out.is_dir():
            raise InputError(f"--output {out} exists and is not a folder; remove it first")
        given = self._given_tokenizer()
        work = out.with_name(f"{out.name}.partial")  # beside OUT: the same command finds it again
        sources, units = self._sources([out, work])
        # All that the kept work depends on; anything else starts it over.
        state = {"settings": opts.settings(), "inputs": _described(sources),
                 "tokenizer_sha256": None if given is None else hashlib.sha256(given.path.read_bytes()).hexdigest(),
                 "note": f"scripts/prepare_data.py: the unfinished preparation of {out.name}; the same command "
                         f"resumes it"}
        if work.exists() or work.is_symlink():
            if _read_json(work / MARKER) == state:
                logger.info(f"resuming the unfinished preparation in {work}")
            else:
                logger.info(f"{work} holds an unfinished preparation with other options or inputs: starting over")
                _remove(work)
        created = missing_parents(work)
        try:
            results, scan, tok = self._prepare_shards(work, state, given, sources, units, [0])
            folder = work / "shard0"
            manifest = self.write_dictionary_and_manifest(folder, tok, scan, results)
            (folder / SHARD_DONE).unlink()
            try:
                publish_folder(folder, out, opts.force)
            except FileExistsError:
                raise InputError(f"output folder {out} appeared during the run; pass --force to replace it or "
                                f"choose another --output") from None
        except InputError as e:  # bad input: nothing worth keeping. A signal or a crash keeps the work for the rerun.
            if not isinstance(e, Busy):  # the work is another live run's
                _remove(work)
                remove_empty(created)
            raise
        _remove(work)
        return manifest

    def _run_sharded(self) -> dict | None:
        opts = self.opts
        out, k = opts.output, opts.shards
        settings = opts.settings()
        old = None
        # An empty folder, or one holding only the atomic writer's temporaries (``.name.*.tmp*``), is what another
        # task of the same array has just created (its prepare.json is being written): not someone else's folder.
        only_temporaries = out.is_dir() and all(p.name.startswith(".") and ".tmp" in p.name for p in out.iterdir())
        if (out.exists() or out.is_symlink()) and not only_temporaries:
            previous = _read_json(out / MARKER) if out.is_dir() else None
            if previous is not None and previous.get("settings") == settings and not opts.force:
                pass  # resume
            elif not opts.force:
                why = ("was prepared with other options" if previous is not None
                       else "already exists and is not a sharded preparation")
                raise InputError(f"output folder {out} {why}; pass --force to replace it or choose another --output")
            elif opts.shard_index is not None:
                raise InputError("--force with --shard-index would let every task of an array delete the others' "
                                "shards; remove the output folder once before the array starts")
            elif not out.is_dir():
                raise InputError(f"--output {out} exists and is not a folder; remove it first")
            else:
                old = out.with_name(f"{out.name}.old-{os.getpid()}")
        given = self._given_tokenizer()
        if given is None and opts.shard_index not in (None, 0) and not (out / "shard0" / "tokenizer").is_dir():
            raise InputError(f"no tokenizer in {out}/shard0/tokenizer yet: train it first with the same command and "
                            f"--shard-index 0 (it trains the tokenizer, then prepares shard 0), or give one with "
                            f"--spm-model / --hf-tokenizer")
        sources, units = self._sources([out] + ([old] if old else []))
        if old is not None:
            out.rename(old)  # deleted once the new folder is complete
        # A run that created the folder removes it if it fails before finishing anything; never a
        # task of an array (--shard-index), whose siblings may be working in it.
        fresh = not out.exists() and opts.shard_index is None
        created = missing_parents(out)
        todo = [opts.shard_index] if opts.shard_index is not None else list(range(k))
        marker = {"settings": settings, "note": "scripts/prepare_data.py --shards: the options of this preparation; "
                                                "a run with the same options resumes it"}
        try:
            results, scan, tok = self._prepare_shards(out, marker, given, sources, units, todo)
            if any(r is None for r in results):
                missing = [i for i, r in enumerate(results) if r is None]
                logger.info(f"shards still to prepare: {', '.join(map(str, missing))}; the run that finishes the "
                         f"last one writes {out}/shard0/dict.txt and manifest.json")
                return None
            manifest = self.write_dictionary_and_manifest(out / "shard0", tok, scan, results)
        except BaseException as e:
            finished = any((out / f"shard{i}" / SHARD_DONE).exists() for i in range(k))
            # A signal keeps the work for the same command to resume, unless it replaces an old folder
            # (--force, which a rerun starts over): that one comes back.
            if fresh and not finished and (old is not None or not isinstance(e, KeyboardInterrupt)):
                _remove(out)
                remove_empty(created)
                if old is not None:
                    old.rename(out)
                    old = None
            raise
        # Complete: another machine's temporary still here is a dead run's.
        _remove_stale_temporaries(out, shared=True, finished=True)
        if old is not None:
            shutil.rmtree(old)
        return manifest

    def _prepare_shards(self, base: Path, marker: dict, given: Tokenizer | None, sources, units,
                        todo: list[int]) -> tuple[list[dict | None], Scan, Tokenizer]:
        """The resumable work, in ``base``: the scan, the tokenizer and the shards of ``todo``; returns every
        shard's result (None for one not finished yet), the scan and the tokenizer."""
        base.mkdir(parents=True, exist_ok=True)
        write_json_atomic(base / MARKER, marker)
        shared = self.opts.shards > 1  # a sharded folder may be shared by the tasks of an array
        _remove_stale_temporaries(base, shared)
        scan = self._cached_scan(base, sources, units)
        tok = self._sharded_tokenizer(base, given, sources, units, scan)
        for i in todo:
            done = base / f"shard{i}" / SHARD_DONE
            if done.exists():
                logger.info(f"{f'shard {i}' if shared else 'encoding'}: finished before ({done}), skipped")
                continue
            _claim(base, f"shard{i}")
            tmp = _temporary(base, f"shard{i}")
            tmp.mkdir()
            try:
                result = self.encode_shard(i, sources, units, scan, tok, tmp)
                final = base / f"shard{i}"
                final.mkdir(exist_ok=True)
                for f in tmp.iterdir():
                    os.replace(f, final / f.name)
                Stage(done, {"shard": i}).finish(result)  # last: the shard is complete
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        results = [Stage(base / f"shard{i}" / SHARD_DONE, {"shard": i}).result() for i in range(self.opts.shards)]
        return results, scan, tok

    def _cached_scan(self, out: Path, sources, units) -> Scan:
        stage = Stage(out / "scan.json", {"inputs": _described(sources)})
        try:
            cached = stage.result()
        except StageSettingsError:
            raise InputError(f"the input files changed since {out} was started ({stage.marker} lists others); "
                             f"pass --force to start over") from None
        if cached is not None:
            logger.info(f"reusing the scan of {stage.marker}")
            return Scan(**cached)
        stage.start()
        scan = self.scan(sources, units)
        stage.finish(dataclasses.asdict(scan))
        return scan

    def _sharded_tokenizer(self, out: Path, given: Tokenizer | None, sources, units, scan) -> Tokenizer:
        folder = out / "shard0" / "tokenizer"
        if not folder.exists():
            tmp = _temporary(out, "tokenizer")
            (tmp / "tokenizer").mkdir(parents=True)
            try:
                tok = given or self.train_tokenizer(sources, units, scan, tmp)
                tok.save(tmp / "tokenizer")
                (out / "shard0").mkdir(exist_ok=True)
                try:
                    os.replace(tmp / "tokenizer", folder)
                except OSError:
                    if not folder.is_dir():  # else another task of the array put the same one there first
                        raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        else:
            logger.info(f"reusing the tokenizer of {folder}")
        if given is not None:
            kept = folder / given.filename
            if not kept.is_file() or kept.read_bytes() != given.path.read_bytes():
                raise InputError(f"{kept} is not the given tokenizer; pass --force to start over")
            return load_tokenizer(given.kind, kept, given.option)
        return load_tokenizer("sentencepiece", folder / "spm.model", "--vocab-size", trained=True)


# -- files and folders --

MARKER = "prepare.json"  # the options (and for one folder, the inputs) of a resumable preparation
SHARD_DONE = "shard.json"  # written last into a finished shard
_HOST = socket.gethostname()


def _temporary(base: Path, name: str) -> Path:
    """This process's temporary folder in ``base``; the machine is named too, since the tasks of an array
    share a sharded folder from several machines."""
    return base / f"{name}.tmp-{_HOST}-{os.getpid()}"


def _alive(pid: int) -> bool:
    if pid == os.getpid():  # a reused pid (containers count from 1 again): an earlier run's, not ours yet
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        pass
    return True


def _remove_stale_temporaries(folder: Path, shared: bool, finished: bool = False) -> None:
    """Remove the temporary folders (``NAME.tmp-HOST-PID``) and atomic-writer files (``.NAME.PID-HEX.tmp.SUFFIX``)
    of dead processes. In a ``shared`` folder another machine's folders go once ``finished``, its files never;
    unshared, the shard folders are checked too (a dictionary cut short by SIGKILL must not be published)."""
    shards = [] if shared else [p for p in folder.glob("shard*") if p.is_dir() and ".tmp-" not in p.name]
    for path in [*folder.iterdir(), *(p for shard in shards for p in shard.iterdir())]:
        name = path.name
        if ".tmp-" in name:
            host, _, pid = name.rpartition(".tmp-")[2].rpartition("-")
            if host == _HOST or not shared:
                stale = not pid.isdigit() or not _alive(int(pid))
            else:
                stale = finished
        elif name.startswith(".") and (written := re.search(r"\.(\d+)-[0-9a-f]+\.tmp", name)):
            stale = not shared and not _alive(int(written.group(1)))
        else:
            continue
        if stale:
            _remove(path)


class Busy(InputError):
    """Another live process on this machine is preparing the same folder."""


def _claim(base: Path, name: str) -> None:
    """Remove what earlier runs left of ``name`` (``NAME.tmp-HOST-PID``); a live process on this machine still
    making it stops this run instead (:class:`Busy`: the work is the other run's and must stay)."""
    for stale in base.glob(f"{name}.tmp-*"):
        host, _, pid = stale.name.rpartition(".tmp-")[2].rpartition("-")
        if host == _HOST and pid.isdigit() and _alive(int(pid)):
            raise Busy(f"{name} is being prepared by process {pid} on this machine ({stale}); wait for it, "
                             f"or stop it and run the same command again")
        _remove(stale)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def _described(sources) -> list:
    return [[s.path, s.size] for s in sources]


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def tokenizer_sample(opts: Options, k: int) -> list[str]:
    """The sample prepare() trains sentencepiece on, for tokenizers trained elsewhere (studies/vocab_sweep.py)."""
    preparation = Preparation(opts)
    sources, units = preparation._sources([opts.output])
    return preparation.training_sample(sources, units, preparation.scan(sources, units), k, opts.spm_sample_bytes)


def prepare_data(options: Options, progress_seconds: float = INTERVAL_SECONDS) -> dict:
    """Prepare the data folder of ``options``; returns what this run did: ``output``, ``manifest`` (None while
    shards of a sharded preparation are left to other runs), ``workers`` and ``passes`` (per pass: seconds,
    bytes read, ...; a pass reused from an earlier run is absent). docs/data.md lists the fields."""
    preparation = Preparation(options, progress_seconds)
    manifest = preparation.run()
    return {"output": str(options.output), "manifest": manifest, "workers": preparation.workers,
            "passes": preparation.passes}
