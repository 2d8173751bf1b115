"""The all-reduce of a row-sparse gradient under DDP, on any backend: a communication hook.

Beyond the paper (``model.sparse_embedding_update``, :mod:`fairseq_headless.sparse_embedding`).
PyTorch's DDP all-reduces every gradient it owns. A sparse one (the input embedding table's) goes
to the process group's sparse all-reduce, which gloo has and NCCL has not ("NCCL does not support
all_reduce with sparse tensors"): a multi-GPU run with the sparse update would die at its first
backward. :func:`sparse_all_reduce_hook`, registered on the DDP module
(``DistributedDataParallel.register_comm_hook``), replaces that collective, on every backend alike,
so that gloo on CPUs runs the code that NCCL runs on GPUs:

* a dense bucket: DDP's own all-reduce (``allreduce_hook``: divide by W, sum), unchanged;
* the sparse bucket (DDP gives each sparse gradient a bucket of its own): the gradient is
  coalesced (each touched row once) and every rank's row count is all-gathered; then, the same
  choice on every rank since all know all the counts, the cheaper of

  - ``gather``: every rank's row indices and values are all-gathered (padded to the largest
    count); the gradient is their concatenation divided by W, an uncoalesced sparse tensor
    whose duplicate rows fairseq's clipping and lazy Adam sum;
  - ``dense``: the gradient is densified, all-reduced as a V x D tensor (divided by W), and
    made sparse again on the union of the touched rows (itself all-reduced as a V-long mask), so
    that lazy Adam updates exactly the rows it updates after ``gather``.

Both give every rank the same gradient: the sum over ranks divided by W, as DDP's own all-reduce,
which fairseq then scales by W / sample_size.

Why both, chosen per step. With W ranks, n_r distinct touched rows on rank r (the input tokens and
the CWT targets of its micro-batch), a V x D table and b bytes per value, each rank receives

* ``gather``: W x max_r n_r x (D b + 8) bytes (values and int64 indices, padded to the largest n);
* ``dense``: a ring all-reduce of V x D values and of the V-byte mask, 2 (W-1)/W x V x (D b + 1) bytes.

``gather`` is cheaper while W x max n < 2 (W-1)/W x V (for D b >> 8), i.e. while the ranks together
touch fewer rows than about twice the vocabulary. For one micro-batch of the paper configs (n
estimated for Zipf-distributed tokens, p(k) ~ 1/k: the expected number of distinct ids among the
batch's tokens, sum_k 1 - (1 - p(k))^N; docs/distributed.md), in fp16:

* ``hlm_pythia70m``: V = 50,304, D = 512, 8 x 2048 = 16,384 tokens, n ~ 5.7k: ``gather`` W x 5.9 MB,
  ``dense`` 2 (W-1)/W x 51.6 MB; W = 8: 47 against 90 MB; ``gather`` is cheaper up to W = 16;
* ``hmlm_small`` at RESULTS.md's 8k vocabulary: V = 8,000, D = 512, 64 x 128 = 8,192 tokens,
  n ~ 2.3k: ``gather`` W x 2.4 MB, ``dense`` 2 (W-1)/W x 8.2 MB; W = 2: 4.8 against 8.2 MB; ``dense``
  is cheaper from W = 6 (W = 8: 19.2 against 14.3 MB);
* a 50k vocabulary at 8,192 tokens (n ~ 3.4k): ``gather`` 6.9 against 51.5 MB at W = 2 (D = 512).

Neither is cheaper everywhere, so the hook picks, per step, by that formula (``mode="auto"``; a
mode can be forced for tests). What it measured is logged (calls 1, 2, 4, 8, ... of each DDP
module) and kept in the :class:`SparseAllReduceState` registered with the hook.

The sizes are gathered with a blocking collective (their maximum sets the padding), then the
rest runs synchronously too and the hook returns a completed future: the embedding table's
gradient is the last to be ready in the backward pass (its first use is the model's first
layer), so there is little left to overlap with.
"""

import logging
import math
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

logger = logging.getLogger(__name__)
MODES = ("auto", "gather", "dense")


@dataclass
class SparseAllReduceState:
    """The hook's process group, its mode, and what it did (read by the tests and the GPU checks)."""

    process_group: Optional[object] = None
    mode: str = "auto"
    calls: int = 0  # sparse buckets all-reduced
    dense_buckets: int = 0  # dense buckets handed to DDP's own all-reduce
    paths: dict = field(default_factory=lambda: {"gather": 0, "dense": 0})
    last: dict = field(default_factory=dict)  # the last call's rows per rank, path and byte counts


def exchange_bytes(world_size: int, rows: int, vocab: int, dim: int, value_bytes: int) -> dict:
    """Bytes each rank receives for one sparse gradient: ``gather`` (``rows`` = the largest count) or ``dense``."""
    return {"gather": world_size * rows * (dim * value_bytes + 8),
            "dense": 2 * (world_size - 1) * vocab * (dim * value_bytes + 1) // world_size}


def choose_path(mode: str, world_size: int, rows: int, vocab: int, dim: int, value_bytes: int) -> str:
    if mode != "auto":
        return mode
    volume = exchange_bytes(world_size, rows, vocab, dim, value_bytes)
    return "gather" if volume["gather"] <= volume["dense"] else "dense"


def _all_gather(tensor, group, world_size):
    shards = [torch.empty_like(tensor) for _ in range(world_size)]
    dist.all_gather(shards, tensor.contiguous(), group=group)
    return shards


def all_reduce_sparse(grad: torch.Tensor, state: SparseAllReduceState) -> torch.Tensor:
    """The sum over ranks of a row-sparse ``grad`` (V x D, sparse COO), divided by the world size."""
    group = state.process_group
    world_size = dist.get_world_size(group=group)
    grad = grad.coalesce()
    rows, values = grad.indices()[0], grad.values()
    # A dummy batch (fairseq's replay, loss x 0) leaves explicit all-zero rows: dropped, so that it moves
    # no row through lazy Adam's momentum and weight decay (an exactly zero real row is no update either).
    nonzero = values.reshape(values.size(0), -1).ne(0).any(dim=1)
    if not bool(nonzero.all()):
        rows, values = rows[nonzero], values[nonzero]
    count = torch.tensor([rows.numel()], dtype=torch.long, device=rows.device)
    counts = [int(c) for c in _all_gather(count, group, world_size)]
    vocab, dim = grad.size(0), math.prod(grad.shape[1:])
    path = choose_path(state.mode, world_size, max(counts), vocab, dim, values.element_size())
    state.calls += 1
    state.paths[path] += 1
    state.last = {"rows_per_rank": counts, "path": path, "vocab": vocab, "dim": dim,
                  **{f"{k}_bytes": v for k, v in
                     exchange_bytes(world_size, max(counts), vocab, dim, values.element_size()).items()}}
    if state.calls & (state.calls - 1) == 0:  # calls 1, 2, 4, 8, ...
        logger.info(f"sparse all-reduce hook: call {state.calls}, path {path}, rows per rank {counts}, "
                    f"V x D = {vocab} x {dim}, bytes received: gather {state.last['gather_bytes']:,}, "
                    f"dense {state.last['dense_bytes']:,}")
    if max(counts) == 0:
        return torch.sparse_coo_tensor(rows[None], values, grad.shape, check_invariants=False)
    if path == "gather":
        padding = max(counts) - rows.numel()
        row_shards = _all_gather(F.pad(rows, (0, padding)), group, world_size)
        value_shards = _all_gather(F.pad(values, (0, 0) * (values.dim() - 1) + (0, padding)), group, world_size)
        rows = torch.cat([shard[:n] for shard, n in zip(row_shards, counts)])
        values = torch.cat([shard[:n] for shard, n in zip(value_shards, counts)])
        return torch.sparse_coo_tensor(rows[None], values.div_(world_size), grad.shape, check_invariants=False)
    dense = grad.to_dense().div_(world_size)  # divided first, as DDP does (no fp16 overflow in the sum)
    touched = torch.zeros(vocab, dtype=torch.uint8, device=rows.device)
    touched[rows] = 1
    dist.all_reduce(dense, group=group)
    dist.all_reduce(touched, op=dist.ReduceOp.MAX, group=group)
    union = touched.nonzero().squeeze(1)
    return torch.sparse_coo_tensor(union[None], dense[union], grad.shape, is_coalesced=True, check_invariants=False)


def sparse_all_reduce_hook(state: SparseAllReduceState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP communication hook: :func:`all_reduce_sparse` for a sparse bucket, DDP's all-reduce otherwise."""
    buffer = bucket.buffer()
    if not buffer.is_sparse:
        state.dense_buckets += 1
        return allreduce_hook(state.process_group, bucket)
    # On a GPU the future records an event on the current stream, which DDP's reads of the result wait for.
    future = torch.futures.Future(devices=[buffer.device] if buffer.is_cuda else None)
    future.set_result(all_reduce_sparse(buffer, state))
    return future


def register_sparse_all_reduce(ddp: torch.nn.parallel.DistributedDataParallel, process_group=None,
                               mode: str = "auto") -> SparseAllReduceState:
    """Register the hook on ``ddp`` (before its first backward); the state is also ``ddp.sparse_all_reduce``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    state = SparseAllReduceState(process_group=process_group, mode=mode)
    ddp.register_comm_hook(state, sparse_all_reduce_hook)
    ddp.sparse_all_reduce = state
    logger.info("row-sparse gradients: DDP all-reduces them through the sparse all-reduce hook "
                "(fairseq_headless.sparse_all_reduce)")
    return state
