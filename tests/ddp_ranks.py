"""fairseq Trainers on several CPU processes joined by gloo, for the data-parallel tests.

``run_ranks(scenario, world_size, folder, **kwargs)`` runs ``scenario(rank, world_size, **kwargs)``
(a module-level function: spawned processes import it) in ``world_size`` processes and returns what
each returned, in rank order. ``trainer(...)`` builds fairseq's own ``Trainer`` from a config as
fairseq-hydra-train does, so that a world of 2 wraps the model in DDP through fairseq's code (and
the plugin's patches), and ``halves`` splits a batch between ranks.
"""

import datetime
import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import load_config


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world_size, port, folder, scenario, kwargs):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # a collective that one rank skips fails within this timeout instead of hanging the suite
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=90))
    try:
        result = scenario(rank, world_size, **kwargs)
    finally:
        dist.destroy_process_group()
    torch.save(result, Path(folder) / f"rank{rank}.pt")


def run_ranks(scenario, world_size, folder, **kwargs):
    mp.spawn(_worker, args=(world_size, free_port(), str(folder), scenario, kwargs), nprocs=world_size, join=True)
    return [torch.load(Path(folder) / f"rank{r}.pt", weights_only=False) for r in range(world_size)]


def trainer(config, data, *overrides, world_size=1, seed=0):
    """(cfg, task, fairseq Trainer) on CPU; the model is built after seeding, identical on every rank."""
    from fairseq import tasks
    from fairseq.trainer import Trainer

    cfg = load_config(config, f"task.data={data}", "common.cpu=true", "lr_scheduler.warmup_updates=0",
                      f"distributed_training.distributed_world_size={world_size}", *overrides)
    torch.manual_seed(seed)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    return cfg, task, Trainer(cfg, task, model, task.build_criterion(cfg.criterion))


def rows_of(sample, rows, pad):
    """The sample of a batch's ``rows`` (the padding length of the whole batch kept)."""
    target = sample["target"][rows]
    return {
        "net_input": {k: v[rows] for k, v in sample["net_input"].items()},
        "target": target,
        "ntokens": int(target.ne(pad).sum()),
        "nsentences": target.size(0),
    }


def halves(sample, pad):
    """The first and the second half of a batch's rows: what two ranks hold of the joined batch."""
    size = sample["target"].size(0)
    return [rows_of(sample, slice(0, size // 2), pad), rows_of(sample, slice(size // 2, size), pad)]


def parameters(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def gradients(module):
    return {name: (p.grad.to_dense() if p.grad.is_sparse else p.grad).detach().clone()
            for name, p in module.named_parameters() if p.grad is not None}


def masked_lm_batch(task, rows=4, length=16, seed=0, mask_prob=0.3):
    """A masked-LM batch of random tokens: ~30% of the positions masked, their tokens the targets."""
    dictionary = task.source_dictionary
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(dictionary.nspecial, len(dictionary) - 1, (rows, length), generator=generator)
    selected = torch.rand(tokens.shape, generator=generator) < mask_prob
    selected[:, 0] = True  # every row has a target
    target = torch.full_like(tokens, dictionary.pad()).masked_scatter(selected, tokens[selected])
    tokens = tokens.masked_fill(selected, dictionary.index("<mask>"))
    return {
        "net_input": {"src_tokens": tokens, "src_lengths": torch.full((rows,), length)},
        "target": target,
        "ntokens": int(selected.sum()),
        "nsentences": rows,
    }
