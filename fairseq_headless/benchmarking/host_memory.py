"""Host memory of training at OpenWebText2 scale: what one rank holds in RAM for
its training split, per block, from ``task.load_dataset`` to its first batch.

fairseq does not shard a split between ranks: every rank builds the index of the *whole* split and
only then takes every n-th batch (``EpochBatchIterator`` over a ``ShardedIterator``). With the
paper's 128-token encoder blocks, OpenWebText2 (~17B tokens) is ~134M blocks per rank, 8 times on
a node. What a rank holds, by fairseq's code (``itemize`` lists it from the live objects):

* ``TokenBlockDataset``: ``_slice_indices`` (2 per block) and ``_block_to_dataset_index``
  (3 per block), uint32 while the split has fewer than 4,294,967,295 tokens, int64 from there on
  (``best_fitting_int_dtype`` of the token count), and ``_sizes`` (uint16): 22 or 42 bytes a block;
* masked_lm: ``PrependTokenDataset._sizes`` (a uint16 copy, +1 for <s>), the task's shuffle
  permutation (int64, kept in ``SortDataset.sort_order``); language_modeling: nothing more;
* ``get_batch_iterator``: the ordered indices (int64, 8 bytes a block), of which every batch is a
  view (a ~120-byte ndarray object a batch), kept as a tuple (``frozen_batches``); ``next_epoch_itr``
  copies that tuple into a shuffled list and keeps this rank's share;
* while they are built: an int64 copy of the per-line sizes (8 bytes a *line*), int64 slice indices
  before their cast, the lexsort of the ordering, the filter's masks: the build peak is well above
  what stays (measured 43.6 held, 73.7 at the peak for hmlm_base: BENCHMARKS.md).

The ``.idx`` (``sizes`` int32 and ``pointers`` int64 per line) and ``.bin`` are memory-mapped: pages
that are read count in a rank's ``RssFile`` but are the page cache, shared by the node's ranks and
reclaimable; only ``RssAnon`` is each rank's own. Both are reported; the peaks are heap peaks
(``VmHWM`` less the file pages mapped by the end of the measured block).

Measurement: a synthetic split is written straight into fairseq's mmap format in chunks
(:func:`write_synthetic_split`, never the whole split in RAM), each config's task is built in a
forked child exactly as the trainer does for rank 0 of ``ranks``, ``/proc/self/status`` is read
after each stage, and the per-block slope between two split sizes removes the fixed overhead.
``scripts/measure_train_memory.py`` is the command line.
"""
from __future__ import annotations

import math
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Tuple

import numpy as np

from .machine import PeakMemory, describe, run_isolated

REPO = Path(__file__).resolve().parents[2]
UINT32_TOKENS = 4_294_967_295  # best_fitting_int_dtype: a split of at least this many tokens indexes in int64
EOS = 2  # fairseq's </s>
FIRST_WORD = 4  # after <s> <pad> </s> <unk>
STATUS_KEYS = ("VmRSS", "RssAnon", "RssFile", "VmHWM")


# -- writing a split -----------------------------------------------------------------------------

def token_dtype(vocab_size: int):
    """The .bin dtype fairseq's mmap builder picks for a dictionary of this size."""
    from fairseq.data.indexed_dataset import best_fitting_int_dtype

    return best_fitting_int_dtype(vocab_size)


def write_mmap_split(prefix: Path, chunks: Iterable[Tuple[np.ndarray, np.ndarray]], vocab_size: int) -> dict:
    """Write ``prefix.bin`` / ``prefix.idx`` in fairseq's mmap format from ``(line sizes, tokens)``
    chunks, holding one chunk at a time: what ``MMapIndexedDatasetBuilder`` writes for the same lines.

    The builder itself keeps a Python int per line and its index writer a Python list of pointers
    (~60 bytes a line): fine for a corpus, not for a multi-GB test split on a 24 GB machine. The
    header comes from fairseq's own index writer; sizes go to a side file and are copied behind the
    line count once it is known, followed by the pointers (cumulative byte offsets)."""
    from ..data.binarize import write_index

    prefix = Path(prefix)
    dtype = token_dtype(vocab_size)
    itemsize = np.dtype(dtype).itemsize
    sizes_path = prefix.with_suffix(".sizes.tmp")
    lines = tokens = 0
    try:
        with open(f"{prefix}.bin", "wb") as data, open(sizes_path, "wb") as side:
            for sizes, chunk_tokens in chunks:
                assert int(sizes.sum()) == len(chunk_tokens)
                data.write(np.asarray(chunk_tokens, dtype=dtype).tobytes())
                side.write(np.asarray(sizes, dtype=np.int32).tobytes())
                lines += len(sizes)
                tokens += len(chunk_tokens)
        write_index(Path(f"{prefix}.idx"), dtype, sizes_path, lines)  # the data stage's index writer
    finally:
        sizes_path.unlink(missing_ok=True)
    return {"lines": lines, "tokens": tokens, "bin_bytes": tokens * itemsize}


def synthetic_chunks(tokens: int, vocab_size: int, mean_line_tokens: float, lines_per_document: int,
                     seed: int = 0, chunk_lines: int = 1 << 20) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Paragraph-per-line text as ``prepare_data`` binarizes it: lines of geometric length (mean
    ``mean_line_tokens`` ids, then </s>), a lone </s> after every ``lines_per_document`` lines, random
    ids; exactly ``tokens`` tokens (the last line cut short)."""
    rng = np.random.default_rng(seed)
    left, done = tokens, 0
    while left > 0:
        sizes = rng.geometric(1.0 / mean_line_tokens, chunk_lines) + 1  # ids + </s>
        sizes[(done + np.arange(chunk_lines)) % (lines_per_document + 1) == lines_per_document] = 1  # documents
        done += chunk_lines
        ends = np.cumsum(sizes)
        if ends[-1] >= left:
            keep = int(np.searchsorted(ends, left)) + 1
            sizes = sizes[:keep]
            sizes[-1] -= int(ends[keep - 1]) - left
            ends = np.cumsum(sizes)
        chunk = rng.integers(FIRST_WORD, vocab_size, int(ends[-1]), dtype=np.int64)
        chunk[ends - 1] = EOS
        left -= len(chunk)
        yield sizes, chunk


def write_dictionary(folder: Path, vocab_size: int) -> None:
    """dict.txt of ``vocab_size`` rows with fairseq's 4 specials (masked_lm adds <mask>)."""
    with open(Path(folder) / "dict.txt", "w") as handle:
        handle.writelines(f"w{i} 1\n" for i in range(vocab_size - FIRST_WORD))


def write_synthetic_split(folder: Path, tokens: int, vocab_size: int = 50304, mean_line_tokens: float = 60.0,
                          lines_per_document: int = 16, seed: int = 0) -> dict:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_dictionary(folder, vocab_size)
    written = write_mmap_split(folder / "train",
                               synthetic_chunks(tokens, vocab_size, mean_line_tokens, lines_per_document, seed),
                               vocab_size)
    return {**written, "vocab_size": vocab_size, "mean_line_tokens": mean_line_tokens,
            "lines_per_document": lines_per_document}


# -- measuring one config ------------------------------------------------------------------------

def status_kib() -> dict:
    values = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key = line.split(":", 1)[0]
            if key in STATUS_KEYS:
                values[key] = int(line.split()[1])
    return values


def _owner(array: np.ndarray):
    """(the ndarray that owns the bytes, or None for a mapped file; 'heap' | 'mmap')."""
    import mmap

    base = array
    while isinstance(base, np.ndarray):
        if isinstance(base, np.memmap):
            return None, "mmap"
        if base.base is None:
            return base, "heap"
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    return (None, "mmap") if isinstance(base, (mmap.mmap, np.memmap)) else (None, "heap")


def itemize(roots: dict, min_bytes: int = 4096) -> List[dict]:
    """The numpy memory reachable from fairseq's data objects (datasets, iterators, torch's DataLoader),
    as ``[{path, dtype, shape, bytes, backing}]`` with ``path`` = holder class.attribute. Heap bytes
    count once per owning buffer, listed under the first holder found (a view's owner under the view's
    holder); a mapped file's views (the .idx's ``_sizes``, ``_pointers``) are listed as ``mmap``, the
    whole-file ``np.memmap`` is not. A list or tuple of many arrays (the batches, views of one index
    array) is one entry: its container, each array object (~112 bytes) and the owners not yet counted."""
    seen_objects, counted, items = set(), set(), []

    def new_bytes(array):
        owner, backing = _owner(array)
        if owner is None:
            key = ("mmap", array.__array_interface__["data"][0], array.nbytes)
            size = array.nbytes
        else:
            key, size = id(owner), owner.nbytes
        if key in counted:
            return 0, backing
        counted.add(key)
        return size, backing

    def visit(obj, path):
        if id(obj) in seen_objects:
            return
        seen_objects.add(id(obj))
        if isinstance(obj, np.memmap):
            return
        if isinstance(obj, np.ndarray):
            size, backing = new_bytes(obj)
            if size >= min_bytes:
                items.append({"path": path, "dtype": str(obj.dtype), "shape": list(obj.shape),
                              "bytes": int(size), "backing": backing})
            return
        if isinstance(obj, (list, tuple)):
            arrays = [x for x in obj if isinstance(x, np.ndarray)]
            if len(arrays) > 256:  # batches: summarised, not one entry each
                fresh = [a for a in arrays if id(a) not in seen_objects]
                seen_objects.update(id(a) for a in fresh)
                total = sys.getsizeof(obj) + sum(sys.getsizeof(a) - (a.nbytes if a.base is None else 0) for a in fresh)
                total += sum(new_bytes(a)[0] for a in fresh)
                items.append({"path": path, "dtype": f"{type(obj).__name__} of {len(arrays)} arrays",
                              "shape": [len(obj)], "bytes": int(total), "backing": "heap"})
                return
            for i, x in enumerate(obj):
                visit(x, f"{path}[{i}]")
            return
        if isinstance(obj, dict):
            for key, value in obj.items():
                visit(value, f"{path}[{key!r}]")
            return
        module = type(obj).__module__ or ""
        if module.startswith(("fairseq.data", "torch.utils.data")) and hasattr(obj, "__dict__"):
            for name, value in vars(obj).items():
                if name not in ("vocab", "tgt_vocab", "dictionary", "src_dict", "collate_fn"):
                    visit(value, f"{type(obj).__name__}.{name}")

    for name, root in roots.items():
        visit(root, name)
    return sorted(items, key=lambda item: -item["bytes"])


def measure(report, config: str, data: str, ranks: int, overrides: List[str] = (), shard_switch: bool = True) -> dict:
    """Rank 0 of ``ranks`` (a forked child): RSS after each stage of building the training split's
    batches as ``Trainer.get_train_iterator`` does, and the peak. With ``shard_switch`` the split is
    then loaded again while the first is still referenced, as ``fairseq_cli/train.py`` does at an
    epoch boundary with sharded data (``task.data=shard0:shard1:...``)."""
    from fairseq import tasks, utils

    from fairseq_headless.benchmarking.steps import compose, quiet
    import torch

    quiet()
    torch.set_num_threads(1)
    cfg = compose(REPO / "configs", config, [f"task.data={data}", *overrides])
    task = tasks.setup_task(cfg.task)
    # The model is not built (its parameters are not what is measured). Its limit is at least
    # tokens_per_sample (tests/test_configs.py), so the trainer's resolved max_positions is this;
    # with `none` blocks nothing is filtered either way (tests/test_packing.py).
    max_positions = utils.resolve_max_positions(task.max_positions(), cfg.task.tokens_per_sample, cfg.dataset.max_tokens)

    def batch_iterator(dataset):
        return task.get_batch_iterator(
            dataset=dataset, max_tokens=cfg.dataset.max_tokens, max_sentences=cfg.dataset.batch_size,
            max_positions=max_positions, ignore_invalid_inputs=True,
            required_batch_size_multiple=cfg.dataset.required_batch_size_multiple, seed=cfg.common.seed,
            # no workers and no prefetch thread (the trainer's data_buffer_size: 10 batches, a few MB): a
            # thread that keeps reading batches would add heap and .bin pages to the stages after it
            num_shards=ranks, shard_id=0, num_workers=0, epoch=1, data_buffer_size=0,
            skip_remainder_batch=cfg.optimization.skip_remainder_batch,
            grouped_shuffling=cfg.dataset.grouped_shuffling,
        )

    stages = {}

    def stage(name, start):
        stages[name] = {**status_kib(), "seconds": round(time.perf_counter() - start, 2)}
        report(f"{config}: {name} ({stages[name]['seconds']} s)")

    # The peak is taken over building only: a batch's reads map .bin pages (file-backed, and as many as
    # the disk's read-ahead makes them: 8 MB a fault here), which VmHWM would count as if they were heap.
    with PeakMemory("cpu") as build:  # malloc_trim + VmHWM reset, then the peak of the block
        stage("before", time.perf_counter())
        t = time.perf_counter()
        task.load_dataset(cfg.dataset.train_subset, epoch=1, combine=True)
        dataset = task.dataset(cfg.dataset.train_subset)
        stage("load_dataset", t)
        t = time.perf_counter()
        epoch_itr = batch_iterator(dataset)
        stage("get_batch_iterator", t)
        t = time.perf_counter()
        itr = epoch_itr.next_epoch_itr(shuffle=True)
        stage("next_epoch_itr", t)
    t = time.perf_counter()
    batch = next(itr)
    stage("first_batch", t)
    items = itemize({"dataset": dataset, "epoch_itr": epoch_itr, "itr": itr})
    switch = None
    if shard_switch:
        with PeakMemory("cpu") as switch:
            t = time.perf_counter()
            task.load_dataset(cfg.dataset.train_subset, epoch=2, combine=True)
            batch_iterator(task.dataset(cfg.dataset.train_subset)).next_epoch_itr(shuffle=True)
            stage("second_shard", t)

    def anon_peak_kib(meter, start, end):
        """The block's peak heap over its start: VmHWM counts mapped file pages too (the .idx sizes the
        index is built from, 4 bytes a line), so the file pages mapped by the block's end are taken off.
        They are mapped first (TokenBlockDataset reads the sizes before it allocates), so this is the
        heap's peak."""
        if meter is None or meter.extra_mb is None:
            return None
        return round(meter.extra_mb * 1024) - (stages[end]["RssFile"] - stages[start]["RssFile"])

    def raw(meter):  # VmHWM over the block's start, file pages included
        return round(meter.extra_mb * 1024) if meter is not None and meter.extra_mb is not None else None

    block_tokens = cfg.task.tokens_per_sample - (1 if cfg.task._name == "masked_lm" else 0)
    sizes = dataset.sizes[0] if isinstance(dataset.sizes, list) else dataset.sizes
    return {
        "config": config, "task": cfg.task._name, "sample_break_mode": cfg.task.sample_break_mode,
        "tokens_per_sample": cfg.task.tokens_per_sample, "block_tokens": block_tokens,
        "batch_size": cfg.dataset.batch_size, "max_tokens": cfg.dataset.max_tokens, "ranks": ranks,
        "blocks": len(dataset), "split_tokens": int(np.asarray(sizes, dtype=np.int64).sum())
        - (len(dataset) if cfg.task._name == "masked_lm" else 0),
        "batches_all_ranks": len(epoch_itr.frozen_batches), "batches_this_rank": len(itr),
        "first_batch_ntokens": int(batch.get("ntokens", 0)),
        "stages_kib": stages, "peak_kib_over_before": anon_peak_kib(build, "before", "next_epoch_itr"),
        "peak_vmhwm_kib_over_before": raw(build),
        "shard_switch_peak_kib_over_one_shard": anon_peak_kib(switch, "first_batch", "second_shard"),
        "shard_switch_peak_vmhwm_kib_over_one_shard": raw(switch), "itemized": items,
    }


# -- a run: sizes x configs, slopes, projection ----------------------------------------------------

def delta_kib(point: dict, stage: str, key: str = "RssAnon") -> int:
    return point["stages_kib"][stage][key] - point["stages_kib"]["before"][key]


def slopes(points: List[dict]) -> dict:
    """Per config, bytes per block between its smallest and largest split of one index dtype regime
    (fixed overhead removed): held after the first batch (anonymous and file-backed), peak, and the
    shard switch's extra peak. Also each point's own bytes per block (fixed overhead included)."""
    out = {}
    for config in sorted({p["config"] for p in points}):
        mine = sorted((p for p in points if p["config"] == config), key=lambda p: p["blocks"])
        regimes = {}
        for p in mine:
            regimes.setdefault(index_dtype(p["split_tokens"]), []).append(p)
        entry = {"per_point": [{
            "split_tokens": p["split_tokens"], "blocks": p["blocks"], "index_dtype": index_dtype(p["split_tokens"]),
            "held_anon_bytes_per_block": 1024 * delta_kib(p, "first_batch") / p["blocks"],
            "peak_bytes_per_block": 1024 * p["peak_kib_over_before"] / p["blocks"]
            if p["peak_kib_over_before"] is not None else None,
        } for p in mine]}
        for regime, group in regimes.items():
            if len(group) < 2:
                continue
            a, b = group[0], group[-1]
            blocks = b["blocks"] - a["blocks"]

            def slope(fa, fb):
                return None if fa is None or fb is None else 1024 * (fb - fa) / blocks

            entry[regime] = {
                "from_split_tokens": [a["split_tokens"], b["split_tokens"]], "from_blocks": [a["blocks"], b["blocks"]],
                "held_anon_bytes_per_block": slope(delta_kib(a, "first_batch"), delta_kib(b, "first_batch")),
                "held_file_bytes_per_block": slope(delta_kib(a, "first_batch", "RssFile"),
                                                   delta_kib(b, "first_batch", "RssFile")),
                "peak_bytes_per_block": slope(a["peak_kib_over_before"], b["peak_kib_over_before"]),
                "shard_switch_extra_peak_bytes_per_block": slope(a["shard_switch_peak_kib_over_one_shard"],
                                                                 b["shard_switch_peak_kib_over_one_shard"]),
                "stage_anon_bytes_per_block": {
                    stage: slope(delta_kib(a, stage), delta_kib(b, stage))
                    for stage in ("load_dataset", "get_batch_iterator", "next_epoch_itr", "first_batch")},
            }
        out[config] = entry
    return out


def index_dtype(split_tokens: int) -> str:
    """The dtype of TokenBlockDataset's block columns for a split of this many tokens (uint16 below 65,500:
    test-sized splits only)."""
    from fairseq.data.indexed_dataset import best_fitting_int_dtype

    return np.dtype(best_fitting_int_dtype(split_tokens)).name


# TokenBlockDataset's 5 index columns per block grow from 4 to 8 bytes past UINT32_TOKENS
INT64_EXTRA_BYTES_PER_BLOCK = 5 * 4


def per_block(slope_entry: dict, wide: bool) -> Tuple[dict, bool]:
    """The measured regime's figures, or the uint32 ones + the wider index columns (estimated)."""
    key = "int64" if wide else "uint32"
    if key in slope_entry:
        return slope_entry[key], False
    base = slope_entry["uint32"]
    extra = INT64_EXTRA_BYTES_PER_BLOCK
    return {k: (v + extra if isinstance(v, float) and k != "held_file_bytes_per_block" else v)
            for k, v in base.items()}, True


def worst_bytes_per_block(figures: dict) -> float:
    """A rank's worst moment: building its first split (the build peak), or, with sharded data, building
    the next shard while still holding the last (held + the switch's extra peak)."""
    switch = figures.get("shard_switch_extra_peak_bytes_per_block")
    held_then_switch = figures["held_anon_bytes_per_block"] + switch if switch is not None else 0.0
    return max(figures["peak_bytes_per_block"], held_then_switch)


def node_bytes(figures: dict, blocks: int, ranks: int) -> dict:
    """What a node's ``ranks`` hold for a split of ``blocks`` blocks, each rank its own copy: held while
    training, at the build peak (all ranks build at once), and at the worst moment (a shard switch)."""
    gb = lambda per_block: per_block * blocks / 1e9  # noqa: E731
    return {"held_per_rank_gb": gb(figures["held_anon_bytes_per_block"]),
            "held_node_gb": ranks * gb(figures["held_anon_bytes_per_block"]),
            "peak_per_rank_gb": gb(figures["peak_bytes_per_block"]),
            "peak_node_gb": ranks * gb(figures["peak_bytes_per_block"]),
            "worst_node_gb": ranks * gb(worst_bytes_per_block(figures))}


def projection(slope_table: dict, points: List[dict], corpus_tokens: float, ranks: int, node_memory_gb: float) -> dict:
    """The whole corpus as one split, and the largest shard whose node-wide worst moment fits
    ``node_memory_gb``, kept under UINT32_TOKENS so that its index stays uint32."""
    out = {}
    for config, entry in slope_table.items():
        if "uint32" not in entry:  # the shard rule is stated for uint32-indexed shards
            continue
        point = next(p for p in points if p["config"] == config)
        block_tokens = point["block_tokens"]
        blocks = math.ceil(corpus_tokens / block_tokens)
        whole, whole_estimated = per_block(entry, corpus_tokens >= UINT32_TOKENS)
        narrow = entry["uint32"]
        worst = worst_bytes_per_block(narrow)
        shard_tokens = min(node_memory_gb * 1e9 / ranks / worst * block_tokens, UINT32_TOKENS - 1)
        out[config] = {
            "corpus_tokens": corpus_tokens, "block_tokens": block_tokens, "corpus_blocks": blocks,
            "whole_corpus_one_split": {"index_dtype": index_dtype(int(corpus_tokens)), "estimated": whole_estimated,
                                       **node_bytes(whole, blocks, ranks)},
            "shard_rule": {
                "node_memory_gb": node_memory_gb, "ranks": ranks, "worst_bytes_per_block_per_rank": worst,
                "max_tokens_per_shard": int(shard_tokens),
                "limited_by": "uint32 index" if shard_tokens == UINT32_TOKENS - 1 else "memory",
                "shards_for_corpus": math.ceil(corpus_tokens / shard_tokens),
                "at_that_size": node_bytes(narrow, math.ceil(shard_tokens / block_tokens), ranks),
            },
        }
    return out


def parse_tokens(text: str) -> int:
    """'256M', '2G', '4.5G', '300000' -> tokens (k/M/G = 1e3/1e6/1e9)."""
    scale = {"k": 1e3, "m": 1e6, "g": 1e9}.get(text[-1].lower())
    return int(float(text[:-1]) * scale) if scale else int(text)


def run(configs: List[str], token_counts: List[int], workdir: Path, ranks: int = 8, vocab_size: int = 50304,
        mean_line_tokens: float = 60.0, lines_per_document: int = 16, corpus_tokens: float = 17e9,
        node_memory_gb: float = 64.0, shard_switch: bool = True, keep_data: bool = False,
        on_progress=print) -> dict:
    """For each split size: write it (a child), measure every config on it (a child each), delete it."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    itemsize = np.dtype(token_dtype(vocab_size)).itemsize
    biggest = max(token_counts) * itemsize * (1 + 12 / mean_line_tokens)  # .bin + .idx
    free = shutil.disk_usage(workdir).free
    if biggest > free / 2:
        raise ValueError(f"the largest split needs ~{biggest / 1e9:.1f} GB, more than half of the "
                         f"{free / 1e9:.1f} GB free under {workdir}")
    result = {"machine": describe("cpu"), "settings": {
        "configs": configs, "token_counts": token_counts, "ranks": ranks, "vocab_size": vocab_size,
        "mean_line_tokens": mean_line_tokens, "lines_per_document": lines_per_document,
        "corpus_tokens": corpus_tokens, "node_memory_gb": node_memory_gb, "shard_switch": shard_switch,
        "workdir": str(workdir)}, "splits": [], "points": [], "errors": []}
    for tokens in token_counts:
        folder = workdir / f"split-{tokens}"
        t = time.perf_counter()
        kind, split = run_isolated(
            lambda report: write_synthetic_split(folder, tokens, vocab_size, mean_line_tokens, lines_per_document),
            {}, "cpu", on_progress)
        if kind != "result":
            raise RuntimeError(f"writing the {tokens}-token split: {kind}: {split}")
        split["seconds"] = round(time.perf_counter() - t, 1)
        result["splits"].append(split)
        on_progress(f"split of {tokens} tokens: {split['lines']} lines, {split['seconds']} s")
        try:
            for config in configs:
                t = time.perf_counter()
                # a shard switch only for uint32-indexed splits: the shard rule keeps shards below the limit,
                # and a corpus in one split is never reloaded
                switch = shard_switch and split["tokens"] < UINT32_TOKENS
                kind, point = run_isolated(measure, {"config": config, "data": str(folder), "ranks": ranks,
                                                     "shard_switch": switch}, "cpu", on_progress)
                if kind != "result":
                    result["errors"].append({"config": config, "tokens": tokens, "kind": kind, "detail": point})
                    continue
                point["seconds"] = round(time.perf_counter() - t, 1)
                result["points"].append(point)
        finally:
            if not keep_data:
                shutil.rmtree(folder, ignore_errors=True)
    result["slopes"] = slopes(result["points"])
    result["projection"] = projection(result["slopes"], result["points"], corpus_tokens, ranks, node_memory_gb)
    return result


# -- markdown --------------------------------------------------------------------------------------

def _num(value, digits=1):
    return "—" if value is None else f"{value:,.{digits}f}"


def markdown(result: dict, command: Optional[str] = None) -> str:
    settings, lines = result["settings"], []
    lines.append("# Host memory of training: one rank's training split, per block")
    lines.append("")
    if command:
        lines += [f"`{command}`", ""]
    m = result["machine"]
    lines.append(f"Machine: {m['cpu_model']}, {m['logical_cpus']} CPUs, {m['memory_gb']} GB; fairseq "
                 f"{m['fairseq']}; {m['time']}. Synthetic splits: vocabulary {settings['vocab_size']}, "
                 f"geometric lines of mean {settings['mean_line_tokens']} ids + </s>, a document every "
                 f"{settings['lines_per_document']} lines; rank 0 of {settings['ranks']}.")
    lines.append("")
    lines.append("| config | split tokens | lines | blocks | index | load_dataset | get_batch_iterator | next_epoch_itr "
                 "| first batch (held) | RssFile held | peak | shard switch extra peak | seconds |")
    lines.append("| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    split_lines = {s["tokens"]: s["lines"] for s in result["splits"]}
    for p in result["points"]:
        mib = lambda kib: _num(kib / 1024 if kib is not None else None)  # noqa: E731
        lines.append(
            f"| {p['config']} | {p['split_tokens']:,} | {split_lines.get(p['split_tokens'], 0):,} | {p['blocks']:,} "
            f"| {index_dtype(p['split_tokens'])} | {mib(delta_kib(p, 'load_dataset'))} "
            f"| {mib(delta_kib(p, 'get_batch_iterator'))} | {mib(delta_kib(p, 'next_epoch_itr'))} "
            f"| {mib(delta_kib(p, 'first_batch'))} | {mib(delta_kib(p, 'first_batch', 'RssFile'))} "
            f"| {mib(p['peak_kib_over_before'])} | {mib(p['shard_switch_peak_kib_over_one_shard'])} | {p['seconds']} |")
    lines += ["", "MiB over the state before `load_dataset`: RssAnon after each stage (cumulative), RssFile after "
              "the first batch (mapped .idx/.bin pages: page cache, as many as the disk's read-ahead maps); "
              "peak = heap peak of building (load_dataset to next_epoch_itr: VmHWM less the file pages mapped by its end); "
              "shard switch = the split loaded again while the first is held, heap peak over what was held.", ""]
    lines.append("## Bytes per block per rank (slope between the two sizes)")
    lines.append("")
    lines.append("| config | index | held (anon) | held (file, page cache) | peak | shard switch extra peak "
                 "| load_dataset | get_batch_iterator | next_epoch_itr |")
    lines.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for config, entry in result["slopes"].items():
        for regime in ("uint32", "int64"):
            if regime not in entry:
                continue
            s = entry[regime]
            st = s["stage_anon_bytes_per_block"]
            lines.append(f"| {config} | {regime} | {_num(s['held_anon_bytes_per_block'])} "
                         f"| {_num(s['held_file_bytes_per_block'])} | {_num(s['peak_bytes_per_block'])} "
                         f"| {_num(s['shard_switch_extra_peak_bytes_per_block'])} | {_num(st['load_dataset'])} "
                         f"| {_num(st['get_batch_iterator'] - st['load_dataset'])} "
                         f"| {_num(st['next_epoch_itr'] - st['get_batch_iterator'])} |")
    lines += ["", "Stage columns: what each stage added (anonymous).", ""]
    lines.append(f"## Projection: {settings['ranks']} ranks on one node, {settings['corpus_tokens'] / 1e9:g}B tokens")
    lines.append("")
    lines.append("| config | block | corpus blocks | index | held / rank GB | held / node GB | peak / node GB "
                 "| max tokens per shard | limited by | shards | worst / node GB at that size |")
    lines.append("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    for config, pr in result["projection"].items():
        w, r = pr["whole_corpus_one_split"], pr["shard_rule"]
        lines.append(f"| {config} | {pr['block_tokens']} | {pr['corpus_blocks']:,} | {w['index_dtype']}"
                     f"{' (est.)' if w['estimated'] else ''} | {_num(w['held_per_rank_gb'])} | {_num(w['held_node_gb'])} "
                     f"| {_num(w['peak_node_gb'])} | {r['max_tokens_per_shard']:,} | {r['limited_by']} "
                     f"| {r['shards_for_corpus']} | {_num(r['at_that_size']['worst_node_gb'])} |")
    lines += ["", f"Shard rule: the node's worst moment (the build peak, or a shard switch: held + its extra peak) "
              f"within {settings['node_memory_gb']:g} GB, and under 4,294,967,295 tokens so that the index stays "
              "uint32. Held and peak are each rank's own (anonymous) memory; the mapped .idx/.bin pages are the "
              "node's shared page cache and come on top only as cache.", ""]
    lines.append("## What the bytes are (largest point of each config)")
    for config in result["slopes"]:
        p = max((q for q in result["points"] if q["config"] == config), key=lambda q: q["blocks"])
        lines += ["", f"{config}, {p['blocks']:,} blocks:", "", "| object | dtype | shape | bytes / block | backing |",
                  "| --- | --- | --- | ---: | --- |"]
        for item in p["itemized"]:
            lines.append(f"| `{item['path']}` | {item['dtype']} | {item['shape']} | {item['bytes'] / p['blocks']:.2f} "
                         f"| {item['backing']} |")
    if result["errors"]:
        lines += ["", "## Errors", ""] + [f"- {e['config']} at {e['tokens']} tokens: {e['kind']}" for e in result["errors"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    """scripts/measure_train_memory.py: 0, or 1 when a measurement failed; bad input raises an InputError."""
    import tempfile

    from ..cli import InputError, Parser
    from ..files import write_json_atomic, write_text_atomic

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = Parser(prog="measure_train_memory.py", description="Host memory of training per block per rank, measured on "
                    "synthetic splits, to size a node's RAM for OpenWebText2 (BENCHMARKS.md).")
    parser.add_argument("--tokens", nargs="+", default=["256M", "2G"],
                        help="split sizes in tokens (k/M/G = 1e3/1e6/1e9); two per index dtype give a slope")
    parser.add_argument("--configs", nargs="+", default=["hmlm_base", "hlm_pythia70m"],
                        help="configs/ names: the OWT2 encoder and decoder by default")
    parser.add_argument("--ranks", type=int, default=8, help="data-parallel ranks on one node")
    parser.add_argument("--vocab-size", type=int, default=50304, help="dictionary rows (Pythia's padded 50,304)")
    parser.add_argument("--mean-line-tokens", type=float, default=60.0, help="mean ids per line (paragraph)")
    parser.add_argument("--lines-per-document", type=int, default=16)
    parser.add_argument("--corpus-tokens", type=float, default=17e9, help="projected corpus (OWT2: ~17B)")
    parser.add_argument("--node-memory-gb", type=float, default=64.0, help="host memory the shard rule fits in")
    parser.add_argument("--no-shard-switch", action="store_true",
                        help="skip loading the split a second time (the epoch boundary of sharded data)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the splits go (default: a temp folder)")
    parser.add_argument("--keep-data", action="store_true")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)

    json_path, md_path = args.output / "host_memory.json", args.output / "host_memory.md"
    if not args.force and (json_path.exists() or md_path.exists()):
        raise InputError(f"{json_path} exists; --force replaces it")
    try:
        tokens = [parse_tokens(t) for t in args.tokens]
    except ValueError:
        raise InputError(f"--tokens takes counts like 256M or 2G, not {args.tokens}") from None
    command = "python scripts/measure_train_memory.py " + " ".join(map(shlex.quote, argv))
    with tempfile.TemporaryDirectory(prefix="host-memory-", dir=args.workdir) as workdir:
        try:
            result = run(
                args.configs, tokens, Path(workdir), ranks=args.ranks, vocab_size=args.vocab_size,
                mean_line_tokens=args.mean_line_tokens, lines_per_document=args.lines_per_document,
                corpus_tokens=args.corpus_tokens, node_memory_gb=args.node_memory_gb,
                shard_switch=not args.no_shard_switch, keep_data=args.keep_data,
                on_progress=lambda message: print(message, flush=True))
        except ValueError as error:  # a split the disk cannot hold, a config that does not exist
            raise InputError(str(error)) from None
    result["command"] = command
    write_json_atomic(json_path, result)
    write_text_atomic(md_path, markdown(result, command))
    print(f"wrote {json_path} and {md_path}")
    return 1 if result["errors"] else 0
