"""The loss alone: CWT against full-vocabulary cross-entropy and against their floors (paper §3.4).

On the same K x D outputs, one forward and backward of ``cross_entropy`` (the vanilla head's loss over the
V x D tied matrix, fairseq's fp32 log-softmax: O(KDV) time, K x V memory); ``cwt`` (``cwt_loss`` in one
block, the paper's setting); ``cwt_chunked`` (``chunk_size`` rows at a time); ``cwt_chunked_recompute``
(logits recomputed in backward, the fp16 path); and the floors: the three bare matrix products each loss
must do (logits and its two gradients), which no implementation can beat. Peak memory is the extra
memory of one call (:mod:`.machine`); a point that would not fit is skipped, with the reason.
"""
import logging
import statistics
import time

import torch
from fairseq.modules import cross_entropy as fairseq_cross_entropy

from fairseq_headless.cwt import _ChunkedContrastive, cwt_loss
from .machine import PeakMemory, available_memory_mb, run_isolated, synchronize

logger = logging.getLogger(__name__)

IMPLEMENTATIONS = ("cross_entropy", "cross_entropy_floor", "cwt", "cwt_chunked", "cwt_chunked_recompute", "cwt_floor")


def make_inputs(num_positions, dim, vocab, device, dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    outputs = torch.randn(num_positions, dim, generator=generator) / dim**0.25
    matrix = torch.randn(vocab, dim, generator=generator) / dim**0.25
    ids = torch.randint(0, vocab, (num_positions,), generator=generator)
    return outputs.to(device, dtype), matrix.to(device, dtype), ids.to(device)


def loss_and_grads(name, outputs, matrix, ids, chunk_size):
    """One forward and backward of a loss; returns (loss, gradient w.r.t. the outputs, of the targets/matrix)."""
    outputs = outputs.detach().requires_grad_(True)
    if name == "cross_entropy":
        table = matrix.detach().requires_grad_(True)
        logits = torch.nn.functional.linear(outputs, table)
        loss = fairseq_cross_entropy(logits, ids, reduction="sum")
    else:
        # The CWT loss on its own: targets are a K x D leaf (their gather from the table is
        # the model's business, and costs the same for every implementation).
        table = matrix[ids].detach().requires_grad_(True)
        if name == "cwt_chunked_recompute":
            positives = torch.arange(len(ids), device=ids.device)
            loss = _ChunkedContrastive.apply(outputs, table, positives, 1.0, min(chunk_size, len(ids)))[0]
        else:
            loss = cwt_loss(outputs, ids, table, chunk_size=chunk_size if name == "cwt_chunked" else 0).loss
    loss.backward()
    return loss.detach(), outputs.grad, table.grad


def floor(name, outputs, matrix, ids):
    """The three matrix products of a loss, with nothing around them."""
    columns = matrix if name == "cross_entropy_floor" else matrix[ids]
    logits = outputs @ columns.t()
    grad_logits = logits  # any K x N matrix of the right shape and dtype does
    grad_outputs = grad_logits @ columns
    grad_columns = grad_logits.t() @ outputs
    return logits, grad_outputs, grad_columns


def estimated_mb(name, k, dim, vocab, chunk_size, element_size):
    """A generous estimate of the peak extra memory, to skip what cannot fit before trying it."""
    size = {"cross_entropy": 16 * k * vocab + vocab * dim * element_size,
            "cross_entropy_floor": (2 * k + dim) * vocab * element_size,
            "cwt": 24 * k * k, "cwt_floor": 2 * k * k * element_size}.get(name, 20 * min(chunk_size, k) * k)
    return size / 2**20


def measure_point(name, num_positions, dim, vocab, chunk_size, repeats, device, dtype):
    """Time (median of ``repeats`` after a warm-up call; 0: none) and peak extra memory of one loss at one K."""
    device = torch.device(device)
    outputs, matrix, ids = make_inputs(num_positions, dim, vocab, device, dtype)

    def call():
        if name.endswith("_floor"):
            return floor(name, outputs, matrix, ids)
        return loss_and_grads(name, outputs, matrix, ids, chunk_size)

    with PeakMemory(device) as meter:  # also the warm-up call
        result = call()
        synchronize(device)
    loss = float(result[0]) if not name.endswith("_floor") else None
    del result
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        result = call()
        synchronize(device)
        times.append(time.perf_counter() - start)
        del result
        logger.info(f"loss {name} K={num_positions}: call {i + 1}/{repeats} {times[-1]:.2f} s")
    return {"time_s": statistics.median(times) if times else None, "times_s": times, "peak_extra_mb": meter.extra_mb,
            "loss": loss}


def run(sizes, dim, vocab, chunk_size, repeats, device, dtype, implementations=IMPLEMENTATIONS,
        cross_entropy_max_k=None, one_block_time_max_k=None, on_point=None):
    """Every implementation at every K; a list of records (skipped points say why).

    ``cross_entropy_max_k``: time cross-entropy only up to this K (a short run's choice: at K=16k it
    alone takes longer than all of CWT). ``one_block_time_max_k``: beyond this K, call the one-block
    CWT once, for its peak memory only (what the chunked loss's memory is compared with).
    """
    records = []
    for num_positions in sizes:
        for name in implementations:
            record = {"implementation": name, "num_positions": num_positions, "dim": dim, "vocab_size": vocab,
                      "chunk_size": chunk_size if name.startswith("cwt_chunked") else 0, "dtype": str(dtype).replace("torch.", ""),
                      "time_s": None, "peak_extra_mb": None, "loss": None, "skipped": None, "note": None}
            memory_only = name == "cwt" and one_block_time_max_k and num_positions > one_block_time_max_k
            needed = estimated_mb(name, num_positions, dim, vocab, chunk_size, torch.finfo(dtype).bits // 8)
            available = available_memory_mb(device)
            if name.startswith("cross_entropy") and cross_entropy_max_k and num_positions > cross_entropy_max_k:
                record["skipped"] = f"not timed in this run (cross-entropy up to K={cross_entropy_max_k:,})"
            elif needed > 0.8 * available:
                record["skipped"] = f"needs ~{needed / 1024:.1f} GiB, {available / 1024:.1f} GiB available"
            else:
                kind, payload = run_isolated(
                    measure_point,
                    dict(name=name, num_positions=num_positions, dim=dim, vocab=vocab, chunk_size=chunk_size,
                         repeats=0 if memory_only else repeats(num_positions), device=device, dtype=dtype),
                    device)
                if kind == "result":
                    record.update(payload)
                    if memory_only:
                        record["note"] = f"peak memory only (timed up to K={one_block_time_max_k:,} in this run)"
                elif kind == "skipped":
                    record["skipped"] = payload
                else:
                    raise RuntimeError(f"loss benchmark {name} K={num_positions} failed:\n{payload}")
            records.append(record)
            if on_point:
                on_point()
    return records
