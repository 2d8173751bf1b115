"""Contrastive Weight Tying (CWT), the loss of headless language models (paper §3.2, App. G).

For K selected positions with outputs o_i and the input embeddings e_i of their true tokens,

    loss = sum_i [ logsumexp_j (o_i . n_j / t) - o_i . e_i / t ]

where the negatives n_j are the target embeddings of the same micro-batch. It is returned as a sum
with K, so that fairseq's trainer normalises it like its own criterions. A pure function of tensors
(no fairseq import): any training loop can call it, and tests check it against a float64 reference.
Negatives, chunking and numerics: docs/design.md#cwtpy."""

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

NEGATIVE_MODES = ("batch", "unique")

# (local tensor) -> (every rank's tensor in rank order, this rank's index); differentiable.
Gather = Callable[[Tensor], Tuple[List[Tensor], int]]


@dataclass
class CWTOutput:
    """What one call of :func:`cwt_loss` returns."""

    loss: Tensor  # scalar, fp32, summed over positions
    correct: Tensor  # scalar long: positions whose own target id scores highest
    num_positions: int  # K
    num_negatives: int  # columns of the denominator (K for `batch`, U for `unique`)


def cwt_loss(outputs: Tensor, target_ids: Tensor, target_embeddings: Optional[Tensor] = None, *,
             embedding_matrix: Optional[Tensor] = None, negatives: str = "batch", temperature: float = 1.0,
             chunk_size: int = 0, gather: Optional[Gather] = None, sparse_gradient: bool = False) -> CWTOutput:
    """CWT loss of ``outputs`` (K x D) against the embeddings of ``target_ids`` (K).

    Args:
        outputs: final hidden states o at the K selected positions.
        target_ids: the true token id at each position (deduplicates negatives; accuracy counts by token).
        target_embeddings: e(target_ids), K x D. Give this *or* ``embedding_matrix``.
        embedding_matrix: the V x D input embedding table; rows are gathered here
            (only the U distinct rows in ``unique`` mode).
        negatives: the denominator's columns. ``batch`` (the paper): all K targets, repeated tokens
            included (K x K); ``unique``: each distinct target id once (K x U, U <= K).
        temperature: t; logits are o.e / t (the paper uses t = 1).
        chunk_size: if > 0, the logits are computed ``chunk_size`` rows at a time: O(chunk x K)
            extra memory instead of O(K x K), with the gradients computed in the same pass
            (fp16: recomputed in backward).
        gather: if given, the negatives are the targets of every data-parallel rank (beyond the
            paper), e.g. :func:`fairseq_headless.all_gather.all_gather_with_grad`. Every rank must
            call, even with no selected position.
        sparse_gradient: gather the rows of ``embedding_matrix`` with ``F.embedding(sparse=True)``,
            so that its gradient is row-sparse; the values are the same.

    Dot products are in the inputs' dtype, the normaliser in fp32 through logsumexp."""
    if negatives not in NEGATIVE_MODES:
        raise ValueError(f"negatives must be one of {NEGATIVE_MODES}, got {negatives!r}")
    if (target_embeddings is None) == (embedding_matrix is None):
        raise ValueError("give exactly one of target_embeddings or embedding_matrix")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    num_positions = outputs.size(0)
    # With no position, the (empty) rows still go through the graph: the table gets a zero gradient, which
    # DDP needs from every parameter it owns (a separate target matrix has no other use).
    if target_embeddings is None and (gather is not None or negatives == "batch" or num_positions == 0):
        target_embeddings = _rows(embedding_matrix, target_ids, sparse_gradient)
        embedding_matrix = None
    if gather is not None:  # collective: before any early return
        target_ids, target_embeddings, first_row = _gather_targets(target_ids, target_embeddings, gather)
    else:
        first_row = 0
    if num_positions == 0:
        zero = (outputs.sum() + (target_embeddings.sum() if target_embeddings is not None else 0)).float() * 0.0
        return CWTOutput(zero, target_ids.new_zeros(()), 0, 0)

    negative_ids, negative_embeddings, positive_index = build_negatives(target_ids, target_embeddings,
                                                                        embedding_matrix, negatives, sparse_gradient)
    # Rows of this rank's own positions (all rows when nothing was gathered).
    positive_index = positive_index[first_row : first_row + num_positions]
    target_ids = target_ids[first_row : first_row + num_positions]
    needs_grad = torch.is_grad_enabled() and (outputs.requires_grad or negative_embeddings.requires_grad)
    if chunk_size and needs_grad and outputs.dtype != torch.float16:
        # Loss and gradients in one pass, no recomputation (see _FusedChunkedContrastive).
        loss, prediction = _FusedChunkedContrastive.apply(outputs, negative_embeddings, positive_index, temperature,
                                                          min(chunk_size, num_positions))
    elif chunk_size and chunk_size < num_positions:
        loss, prediction = _ChunkedContrastive.apply(outputs, negative_embeddings, positive_index, temperature,
                                                     chunk_size)
    else:
        logits = (outputs @ negative_embeddings.t()).float() / temperature
        loss = (torch.logsumexp(logits, dim=-1) - logits.gather(1, positive_index[:, None]).squeeze(1)).sum()
        prediction = logits.detach().argmax(dim=-1)
    correct = (negative_ids[prediction] == target_ids).sum()
    return CWTOutput(loss, correct, num_positions, negative_ids.numel())


def _gather_targets(target_ids, target_embeddings, gather):
    """All ranks' targets concatenated in rank order, and where this rank's rows start."""
    id_shards, rank = gather(target_ids)
    embedding_shards, _ = gather(target_embeddings)
    first_row = sum(shard.numel() for shard in id_shards[:rank])
    return torch.cat(id_shards), torch.cat(embedding_shards), first_row


def _rows(matrix, ids, sparse_gradient):
    return F.embedding(ids, matrix, sparse=True) if sparse_gradient else matrix[ids]


def build_negatives(target_ids, target_embeddings, embedding_matrix, negatives, sparse_gradient=False):
    """The denominator's columns: (ids N, embeddings N x D, column of each row's target K)."""
    if negatives == "batch":
        positive_index = torch.arange(target_ids.numel(), device=target_ids.device)
        if target_embeddings is None:
            target_embeddings = _rows(embedding_matrix, target_ids, sparse_gradient)
        return target_ids, target_embeddings, positive_index

    unique_ids, positive_index = torch.unique(target_ids, return_inverse=True)
    if embedding_matrix is not None:
        return unique_ids, _rows(embedding_matrix, unique_ids, sparse_gradient), positive_index
    # All rows with the same id are the same embedding lookup, so any one of them
    # represents the id; the gradient reaching the embedding table is identical.
    positions = torch.arange(target_ids.numel(), device=target_ids.device)
    first = torch.full_like(unique_ids, target_ids.numel()).scatter_reduce(0, positive_index, positions, reduce="amin")
    return unique_ids, target_embeddings[first], positive_index


class _ChunkedContrastive(torch.autograd.Function):
    """Summed contrastive loss computed ``chunk`` rows at a time, logits recomputed in backward."""

    @staticmethod
    def forward(ctx, outputs, negatives, positive_index, temperature, chunk):
        num_positions = outputs.size(0)
        lse = torch.empty(num_positions, dtype=torch.float32, device=outputs.device)
        positive_logit = torch.empty_like(lse)
        prediction = torch.empty(num_positions, dtype=torch.long, device=outputs.device)
        for start in range(0, num_positions, chunk):
            rows = slice(start, start + chunk)
            logits = (outputs[rows] @ negatives.t()).float() / temperature
            lse[rows] = torch.logsumexp(logits, dim=-1)
            positive_logit[rows] = logits.gather(1, positive_index[rows, None]).squeeze(1)
            prediction[rows] = logits.argmax(dim=-1)
        ctx.save_for_backward(outputs, negatives, positive_index, lse)
        ctx.temperature, ctx.chunk = temperature, chunk
        ctx.mark_non_differentiable(prediction)
        return (lse - positive_logit).sum(), prediction

    @staticmethod
    def backward(ctx, grad_loss, _grad_prediction):
        outputs, negatives, positive_index, lse = ctx.saved_tensors
        temperature, chunk = ctx.temperature, ctx.chunk
        scale = grad_loss.float() / temperature
        grad_outputs = torch.empty_like(outputs)
        grad_negatives = torch.zeros(negatives.shape, dtype=torch.float32, device=negatives.device)
        for start in range(0, outputs.size(0), chunk):
            rows = slice(start, start + chunk)
            logits = (outputs[rows] @ negatives.t()).float() / temperature
            # d loss / d logits = softmax - onehot(positive)
            grad_logits = torch.exp(logits - lse[rows, None])
            grad_logits[torch.arange(grad_logits.size(0)), positive_index[rows]] -= 1.0
            # Same casts as autograd through the unchunked path: matmuls in the inputs' dtype.
            grad_logits = (grad_logits * scale).to(outputs.dtype)
            grad_outputs[rows] = grad_logits @ negatives
            grad_negatives += (grad_logits.t() @ outputs[rows]).float()
        return grad_outputs, grad_negatives.to(negatives.dtype), None, None, None


class _FusedChunkedContrastive(torch.autograd.Function):
    """Summed contrastive loss and its gradients in one pass, ``chunk`` rows at a time.

    Each row block's logits are computed once into a reused fp32 buffer that becomes dL/dlogits in
    place: three matrix products, no recomputation, no autograd graph. fp16 inputs take
    :class:`_ChunkedContrastive` instead (docs/design.md#cwtpy)."""

    @staticmethod
    def forward(ctx, outputs, negatives, positive_index, temperature, chunk):
        num_positions, device, dtype = outputs.size(0), outputs.device, outputs.dtype
        accumulate = torch.promote_types(dtype, torch.float32)  # fp32 (fp64 stays fp64)
        in_place = dtype == accumulate  # fp32/fp64: products straight into the buffers
        lse = torch.empty(num_positions, dtype=accumulate, device=device)
        positive_logit = torch.empty_like(lse)
        prediction = torch.empty(num_positions, dtype=torch.long, device=device)
        grad_outputs = torch.empty(outputs.shape, dtype=accumulate, device=device)
        grad_negatives = torch.zeros(negatives.shape, dtype=accumulate, device=device)
        block = torch.empty(chunk, negatives.size(0), dtype=accumulate, device=device)
        rows_per_pass = max(1, 2**21 // max(1, negatives.size(0)))  # logsumexp's temporary: ~8 MB
        for start in range(0, num_positions, chunk):
            rows = slice(start, start + chunk)
            o, positives = outputs[rows], positive_index[rows]
            logits = block[: o.size(0)]
            if in_place:
                torch.matmul(o, negatives.t(), out=logits)
            else:  # bf16: the products in the inputs' dtype (as the plain formula), normalised in fp32
                logits.copy_(o @ negatives.t())
            if temperature != 1.0:
                logits.div_(temperature)
            positive_logit[rows] = logits.gather(1, positives[:, None]).squeeze(1)
            prediction[rows] = logits.argmax(dim=-1)
            # softmax - onehot(positive) = dL/dlogits (the 1 / t is applied in backward)
            for first in range(0, o.size(0), rows_per_pass):
                part = logits[first : first + rows_per_pass]
                part_lse = torch.logsumexp(part, dim=-1)
                lse[start + first : start + first + part.size(0)] = part_lse
                part.sub_(part_lse[:, None]).exp_()
            probs = logits
            probs[torch.arange(o.size(0), device=device), positives] -= 1.0
            if in_place:
                torch.matmul(probs, negatives, out=grad_outputs[rows])
                grad_negatives.addmm_(probs.t(), o)
            else:
                probs = probs.to(dtype)
                grad_outputs[rows] = probs @ negatives
                grad_negatives += probs.t() @ o
        ctx.save_for_backward(grad_outputs, grad_negatives)
        ctx.dtypes, ctx.temperature = (dtype, negatives.dtype), temperature
        ctx.mark_non_differentiable(prediction)
        return (lse - positive_logit).sum().float(), prediction

    @staticmethod
    def backward(ctx, grad_loss, _grad_prediction):
        grad_outputs, grad_negatives = ctx.saved_tensors
        outputs_dtype, negatives_dtype = ctx.dtypes
        grad_loss = grad_loss.to(grad_outputs.dtype) / ctx.temperature
        grads = (grad_outputs * grad_loss).to(outputs_dtype), (grad_negatives * grad_loss).to(negatives_dtype)
        return *grads, None, None, None
