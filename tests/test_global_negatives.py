"""negatives_scope=global: 2 processes give the loss and gradients of one process on the
concatenated batch (gloo, CPU), and a dummy batch (a rank out of batches) adds no negative."""

import os

import ddp_ranks
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import assert_close_computations, network_terms, rounding_bound
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


@pytest.fixture(scope="module")
def two_rank_results():
    results = mp.Manager().dict()
    mp.spawn(worker, args=(ddp_ranks.free_port(), results), nprocs=len(SIZES), join=True)
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


# Dummy batches: ranks with unequal batch counts. fairseq replays a batch (loss x 0) on the rank that ran out;
# marked by fairseq_patches, it joins the all-gather with no row, so the other rank's loss and gradients are
# those of its own batch alone.

def dummy_batch_step(rank, world_size, data):
    """Rank 0 trains on its batch while rank 1 has none left (fairseq's iterator gives it {}), once with
    fairseq's own _prepare_sample and once with the plugin's."""
    from fairseq.trainer import Trainer

    from fairseq_headless import fairseq_patches

    results = {}
    for marked, prepare in ((False, fairseq_patches._original_prepare_sample),
                            (True, fairseq_patches.prepare_sample_marking_dummies)):
        Trainer._prepare_sample = prepare
        _, task, trainer = ddp_ranks.trainer("hmlm_tiny", data, "criterion.negatives_scope=global",
                                             world_size=world_size)
        batch = ddp_ranks.masked_lm_batch(task, rows=3, seed=rank)
        trainer.reset_dummy_batch(batch)  # fairseq: the first batch of the epoch
        log = trainer.train_step([batch if rank == 0 else {}])
        results[marked] = {"log": log, "grads": ddp_ranks.gradients(trainer.get_model()),
                           "positions": int(batch["target"].ne(task.source_dictionary.pad()).sum())}
    Trainer._prepare_sample = fairseq_patches.prepare_sample_marking_dummies
    return results


@pytest.fixture(scope="module")
def dummy_batch_results(tiny_data, tmp_path_factory):
    return ddp_ranks.run_ranks(dummy_batch_step, 2, tmp_path_factory.mktemp("dummy"), data=tiny_data)


def test_a_dummy_batch_joins_the_all_gather_but_adds_no_negative(dummy_batch_results, tiny_data):
    real, dummy = dummy_batch_results
    own, replayed = real[True]["positions"], dummy[True]["positions"]
    # fairseq's own replay: the dummy's targets were rank 0's negatives too (the bug)
    assert real[False]["log"]["negatives"] == own + replayed
    # marked: rank 0's positions against its own targets only, the dummy rank's loss and sample size 0
    assert real[True]["log"]["negatives"] == own and real[True]["log"]["positions"] == own

    # one process on rank 0's batch: the loss and the gradients (DDP averaged rank 0's with the dummy's zeros)
    _, task, trainer = ddp_ranks.trainer("hmlm_tiny", tiny_data, "criterion.negatives_scope=global")
    batch = ddp_ranks.masked_lm_batch(task, rows=3, seed=0)
    log = trainer.train_step([batch])
    assert log["negatives"] == own
    # the logged loss: bits per position, rounded by fairseq to 3 decimals
    assert real[True]["log"]["loss"] == pytest.approx(log["loss"], abs=1e-3)
    assert real[False]["log"]["loss"] != pytest.approx(log["loss"], abs=1e-3)
    model = trainer.get_model()
    expected = ddp_ranks.gradients(model)
    terms = network_terms(model, batch["target"].numel()) + 8
    scale = max(g.abs().max().item() for g in expected.values())  # normwise: some are 0 in exact arithmetic
    assert expected.keys() == real[True]["grads"].keys()
    for name, grad in expected.items():
        for rank in (real, dummy):  # after the all-reduce, both ranks hold it
            assert_close_computations(rank[True]["grads"][name], grad, terms=terms, scale=scale, msg=name)
