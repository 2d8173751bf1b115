"""The all-reduce of a row-sparse gradient under DDP, on any backend: a communication hook (beyond the paper).

NCCL has no sparse all-reduce; :func:`sparse_all_reduce_hook` replaces it on every backend. All ranks take
whichever exchange moves fewer bytes, ``gather`` or ``dense``; either gives DDP's sum / W on every touched
row, as lazy Adam needs. docs/distributed.md."""

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
    # Rows are kept whatever their values: an exactly zero row of a real batch still moves under lazy
    # Adam (momentum, weight decay). A dummy batch's rows never get here (cwt_criterion empties them).
    rows, values = grad.indices()[0], grad.values()
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
