"""The Hugging Face objectives on 2 CPU processes (gloo): under DistributedDataParallel with local and global
negatives, and under torch's FSDP2 (``fully_shard``) with global negatives and really sharded parameters.
With global negatives, 2 ranks give the loss and gradients of 1 process on the joined batch."""

import ddp_ranks
import pytest
import torch

from conftest import assert_close_computations, network_terms
from fairseq_headless.hf.objective import headless_loss, vanilla_loss
from helpers.hf_models import batch, tiny_model

WORLD = 2
ROWS = 4  # the joined batch; rank r holds rows [2r, 2r + 2): ranks score different numbers of positions

DDP_CASES = [  # (family, objective, negatives, scope)
    ("llama", "headless", "batch", "global"),
    ("bert", "headless", "unique", "global"),
    ("gpt_neox", "headless", "batch", "local"),
    ("modernbert", "vanilla", None, None),
]
FSDP_CASES = [("llama", "batch"), ("bert", "unique")]


def rows_of(family, rows):
    return [t[rows] for t in batch(family, rows=ROWS)]


def rank_rows(rank):
    size = ROWS // WORLD
    return slice(rank * size, (rank + 1) * size)


def loss_of(model, objective, inputs, negatives, scope):
    if objective == "vanilla":
        return vanilla_loss(model, *inputs)
    return headless_loss(model, *inputs, negatives=negatives, scope=scope)


def ddp_steps(rank, world_size):
    """Each case: two forward/backward passes under DDP on this rank's rows (DDP, without
    find_unused_parameters, fails the second one if the first left a parameter without gradient)."""
    from torch.nn.parallel import DistributedDataParallel

    results = {}
    for family, objective, negatives, scope in DDP_CASES:
        model = DistributedDataParallel(tiny_model(family))
        inputs = rows_of(family, rank_rows(rank))
        for _ in range(2):
            model.zero_grad(set_to_none=True)
            loss, positions = loss_of(model, objective, inputs, negatives, scope)
            loss.backward()
        results[family] = {"loss": loss.item(), "positions": positions,
                           "grads": {k: p.grad.clone() for k, p in model.module.named_parameters()}}
    return results


def fsdp_step(rank, world_size):
    """Each case: the layers and the whole model sharded with fully_shard, one forward/backward on this rank's
    rows; the shards' sizes, the loss and the full gradients (gathered from the shards)."""
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    results = {}
    for family, negatives in FSDP_CASES:
        model = tiny_model(family)
        for layer in model.base_model.get_submodule("layers" if family == "llama" else "encoder.layer"):
            fully_shard(layer)
        fully_shard(model)
        shards = {k: (isinstance(p, DTensor), p.to_local().shape[0] if isinstance(p, DTensor) else None, p.shape[0])
                  for k, p in model.named_parameters()}
        loss, positions = headless_loss(model, *rows_of(family, rank_rows(rank)), negatives=negatives, scope="global")
        loss.backward()
        results[family] = {"loss": loss.item(), "positions": positions, "shards": shards,
                           "grads": {k: p.grad.full_tensor() for k, p in model.named_parameters()}}
    return results


def one_process(family, objective, negatives, scope, rows):
    """Loss, positions and gradients of one process on ``rows`` of the joined batch."""
    model = tiny_model(family)
    loss, positions = loss_of(model, objective, rows_of(family, rows), negatives, scope)
    loss.backward()
    return model, loss.item(), positions, {k: p.grad for k, p in model.named_parameters()}


def check_gradients(ranks, expected, model, positions):
    # 2 ranks against 1 process: the network's sums in another order, the all-gather's and the gradient
    # all-reduce's additions; normwise, as some entries are 0 in exact arithmetic
    terms = network_terms(model, ROWS * 10) + 2 * positions + 4
    scale = max(g.abs().max().item() for g in expected.values())
    for rank in ranks:
        assert rank.keys() == expected.keys()
        for name, grad in expected.items():
            assert_close_computations(rank[name], grad, terms=terms, scale=scale, msg=name)
    return terms


def ranks_steps(rank, world_size):
    return {"ddp": ddp_steps(rank, world_size), "fsdp": fsdp_step(rank, world_size)}


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory):
    """Both scenarios in one start of the processes (most of the time is their imports)."""
    return ddp_ranks.run_ranks(ranks_steps, WORLD, tmp_path_factory.mktemp("ranks"))


@pytest.mark.parametrize("family,objective,negatives,scope", DDP_CASES)
def test_ddp_ranks_equal_one_process(family, objective, negatives, scope, rank_results):
    ranks = [r["ddp"][family] for r in rank_results]
    if scope == "global":  # one process on the joined batch; DDP averages the ranks' gradients of their partial sums
        model, loss, positions, grads = one_process(family, objective, negatives, "local", slice(0, ROWS))
        expected = {k: g / WORLD for k, g in grads.items()}
        assert sum(r["positions"] for r in ranks) == positions
        terms = check_gradients([r["grads"] for r in ranks], expected, model, positions)
        assert_close_computations(torch.tensor(sum(r["loss"] for r in ranks)), torch.tensor(loss), terms=terms)
        return
    # local negatives (and the vanilla loss): each rank's loss is one process's on its own rows
    singles = [one_process(family, objective, negatives, "local", rank_rows(rank)) for rank in range(WORLD)]
    model = singles[0][0]
    expected = {k: sum(s[3][k] for s in singles) / WORLD for k in singles[0][3]}
    positions = sum(s[2] for s in singles)
    terms = check_gradients([r["grads"] for r in ranks], expected, model, positions)
    for rank, single in zip(ranks, singles):
        assert rank["positions"] == single[2]
        assert_close_computations(torch.tensor(rank["loss"]), torch.tensor(single[1]), terms=terms)
    if objective == "headless":  # local negatives are not global ones: the losses differ
        joined = one_process(family, objective, negatives, "local", slice(0, ROWS))[1]
        assert abs(sum(r["loss"] for r in ranks) - joined) > 1e-3 * joined


@pytest.mark.parametrize("family,negatives", FSDP_CASES)
def test_fsdp2_shards_the_parameters_and_two_ranks_equal_one_process(family, negatives, rank_results):
    ranks = [r["fsdp"][family] for r in rank_results]
    for rank in ranks:  # every parameter a DTensor; a rank holds part of each first dimension (rows split 49/48)
        assert all(is_dtensor for is_dtensor, _, _ in rank["shards"].values())
        assert all(local < full for _, local, full in rank["shards"].values() if full >= WORLD)
    embedding = next(k for k in ranks[0]["shards"] if k.endswith(("embed_tokens.weight", "word_embeddings.weight")))
    assert sum(rank["shards"][embedding][1] for rank in ranks) == ranks[0]["shards"][embedding][2]

    model, loss, positions, grads = one_process(family, "headless", negatives, "local", slice(0, ROWS))
    assert sum(r["positions"] for r in ranks) == positions
    # FSDP averages the ranks' gradients, as DDP does
    terms = check_gradients([r["grads"] for r in ranks], {k: g / WORLD for k, g in grads.items()}, model, positions)
    assert_close_computations(torch.tensor(sum(r["loss"] for r in ranks)), torch.tensor(loss), terms=terms)
