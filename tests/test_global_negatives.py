"""negatives_scope=global: 2 processes give the loss and gradients of one process on the
concatenated batch (gloo, CPU)."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import assert_close_computations, rounding_bound
from fairseq_headless.all_gather import all_gather_with_grad
from fairseq_headless.cwt import cwt_loss

DIM, VOCAB = 8, 13
SIZES = (7, 4)  # ranks hold different numbers of positions


def make_batch(seed=0):
    generator = torch.Generator().manual_seed(seed)
    outputs = torch.randn(sum(SIZES), DIM, generator=generator, dtype=torch.float64)
    matrix = torch.randn(VOCAB, DIM, generator=generator, dtype=torch.float64)
    ids = torch.randint(0, VOCAB, (sum(SIZES),), generator=generator)
    return outputs, matrix, ids


def shard(rank):
    start = sum(SIZES[:rank])
    return slice(start, start + SIZES[rank])


CASES = [("batch", 0), ("unique", 0), ("batch", 3)]


def worker(rank, port, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=len(SIZES))
    try:
        for negatives, chunk_size in CASES:
            outputs, matrix, ids = make_batch()
            outputs = outputs[shard(rank)].float().requires_grad_(True)
            matrix = matrix.float().requires_grad_(True)
            result = cwt_loss(outputs, ids[shard(rank)], embedding_matrix=matrix, negatives=negatives,
                              chunk_size=chunk_size, gather=all_gather_with_grad)
            result.loss.backward()
            results[(negatives, chunk_size, rank)] = (
                result.loss.item(), outputs.grad, matrix.grad, int(result.correct), result.num_negatives
            )
        # a rank with no selected position still joins the collectives and adds nothing
        outputs = torch.randn(0 if rank == 0 else 3, DIM, requires_grad=True)
        matrix = torch.randn(VOCAB, DIM, requires_grad=True)
        result = cwt_loss(outputs, torch.arange(outputs.size(0)), embedding_matrix=matrix,
                          gather=all_gather_with_grad)
        result.loss.backward()
        results[("empty", rank)] = (result.loss.item(), result.num_positions)
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_rank_results():
    results = mp.Manager().dict()
    mp.spawn(worker, args=(free_port(), results), nprocs=len(SIZES), join=True)
    return dict(results)


@pytest.mark.parametrize("negatives,chunk_size", CASES)
def test_two_ranks_equal_one_process_on_the_concatenated_batch(negatives, chunk_size, two_rank_results):
    results = {rank: two_rank_results[(negatives, chunk_size, rank)] for rank in range(len(SIZES))}

    outputs, matrix, ids = make_batch()
    outputs, matrix = outputs.float().requires_grad_(True), matrix.float().requires_grad_(True)
    full = cwt_loss(outputs, ids, embedding_matrix=matrix, negatives=negatives)
    full.loss.backward()

    losses = [results[r][0] for r in range(len(SIZES))]
    # two ranks sum the same terms in another order: a D-term dot product, a K-column logsumexp or
    # softmax-weighted sum, the sum over K positions (plus the all-reduce's one addition)
    terms = DIM + 2 * sum(SIZES) + 4
    assert sum(losses) == pytest.approx(full.loss.item(), abs=rounding_bound(terms, full.loss.item()))
    for rank in range(len(SIZES)):
        assert_close_computations(results[rank][1], outputs.grad[shard(rank)], terms=terms)
        assert results[rank][4] == full.num_negatives
    # fairseq all-reduces (sums) the parameter gradients across ranks
    assert_close_computations(results[0][2] + results[1][2], matrix.grad, terms=terms)
    assert results[0][3] + results[1][3] == int(full.correct)


def test_a_rank_without_positions_does_not_block_the_others(two_rank_results):
    assert two_rank_results[("empty", 0)] == (0.0, 0)
    loss, positions = two_rank_results[("empty", 1)]
    assert positions == 3 and loss > 0
