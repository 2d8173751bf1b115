"""Row-sparse update of the input embeddings: the vocabulary costs nothing (beyond the paper, §6 / Fig.6b).

A headless model has no output projection, so the gradient of its input embedding
table touches only the rows of the tokens in the micro-batch: the input lookup
and the CWT targets (no tied head spreads it over all V rows, as in a vanilla
model). fairseq still trains that table densely: a V x D gradient, then AdamW
over every row. Measured on a Pythia-70M-shaped decoder at V=50k, that is ~20% of
a headless step, and it grows with V.

``model.sparse_embedding_update=true`` (``--sparse-embedding-update``) makes it
row-sparse end to end:

* the input lookup is an ``nn.Embedding(sparse=True)`` and the criterion gathers
  the CWT targets with ``F.embedding(..., sparse=True)``, so the table's gradient
  is a sparse COO tensor of the touched rows;
* fairseq's gradient clipping takes the norm of its (coalesced) values, which is
  the norm of the dense gradient, and scales them in place;
* fairseq's ``adam`` updates only the touched rows, "lazy Adam"
  (:func:`lazy_adam_update_`), every other parameter as before.

What changes against the dense update (the only differences):

* a row that the step does not touch is left as it is: its parameters *and* its
  moments. Dense AdamW would decay its moments (m <- beta1 m, v <- beta2 v), keep
  moving it by its momentum, and shrink it by ``lr x weight_decay``;
* a touched row is updated from moments that were not decayed over the steps it
  was skipped, and gets the weight decay of this step only;
* bias correction uses the table's step count, which is the global step (the
  table is touched at every step).

So a row touched at every step so far (and any row at the first step) gets exactly
the dense AdamW update; the gradient norm, and therefore clipping, is unchanged.

Supported: fairseq's ``adam`` optimizer (any of its implementations), fp32,
``common.memory_efficient_fp16`` (GPU only: PyTorch has no CPU kernel adding fp16
sparse gradients) / ``memory_efficient_bf16``, AMP, one process or
``ddp_backend=pytorch_ddp`` on gloo or NCCL: DDP's all-reduce of the sparse
gradient goes through the plugin's communication hook
(:mod:`fairseq_headless.sparse_all_reduce`: the touched rows all-gathered, or the
gradient densified, whichever moves fewer bytes), since NCCL has no sparse
all-reduce. Tested: 2 ranks on gloo through that hook, 1 rank on NCCL
(``scripts/gpu_checks.py``); 2 GPUs on NCCL were never run. Not
supported, refused with one error naming the fix: another optimizer, fairseq's
``FP16Optimizer`` (plain ``common.fp16`` / ``bf16``: it copies every gradient into
one flat fp32 buffer), ``legacy_ddp`` and the other flattening DDP backends,
``ddp_comm_hook=fp16``, BMUF and ZeRO sharding. The fairseq side is in
:mod:`fairseq_headless.fairseq_patches`.

A model opts in with :class:`SparseEmbeddingUpdateConfig` (its config field) and
one call of :func:`maybe_enable_sparse_embedding_update` in ``build_model``; the
CWT criterion gathers its targets sparsely whenever the model's input
``nn.Embedding`` is sparse.
"""

import math
from dataclasses import dataclass, field

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.utils import safe_getattr
from torch import nn

OPTION = "model.sparse_embedding_update=true (--sparse-embedding-update)"
HELP = (
    "update only the rows of the input embeddings that the batch touches (sparse gradient, lazy "
    "AdamW: untouched rows keep their moments and get no weight decay that step); beyond the paper, "
    "headless models only; needs optimizer adam, fp32 or memory_efficient_fp16/bf16, pytorch_ddp"
)
# Set on the embedding weight: what fairseq_patches looks for.
MARKER = "sparse_embedding_update"


@dataclass
class SparseEmbeddingUpdateConfig(FairseqDataclass):
    sparse_embedding_update: bool = field(default=False, metadata={"help": HELP})


def enable_sparse_embedding_update(model: nn.Module) -> nn.Module:
    """Make ``model.input_embeddings()`` produce row-sparse gradients; returns the model."""
    embedding = model.input_embeddings()
    if not isinstance(embedding, nn.Embedding):
        raise TypeError(f"{OPTION}: the input embeddings of {type(model).__name__} are not an nn.Embedding")
    embedding.sparse = True
    setattr(embedding.weight, MARKER, True)
    return model


def maybe_enable_sparse_embedding_update(model: nn.Module, cfg) -> nn.Module:
    """The one call a headless model's ``build_model`` makes (``cfg`` = its args or dataclass config)."""
    if safe_getattr(cfg, "sparse_embedding_update", False):
        enable_sparse_embedding_update(model)
    return model


def has_sparse_embedding_update(params) -> bool:
    return any(getattr(p, MARKER, False) for p in params)


@torch.no_grad()
def lazy_adam_update_(param, grad, state, *, lr, betas, eps, weight_decay, scale=1.0):
    """fairseq's AdamW step (``fairseq.optim.adam.Adam``) on the rows of a sparse ``grad`` only.

    ``state`` is the optimizer's state of ``param`` (same keys as fairseq's Adam, so
    checkpoints and the dense path read it unchanged); ``scale``: the gradient is
    divided by it first (fairseq's fused optimizers take the loss scale this way).
    The arithmetic is fairseq's, operation for operation, so that a row touched at
    every step gets bit-for-bit the dense update.
    """
    grad = grad.coalesce()
    rows = grad.indices()[0]
    values = grad.values().float()
    if scale != 1.0:
        values = values / scale
    if len(state) == 0:
        state["step"] = 0
        state["exp_avg"] = torch.zeros_like(param, dtype=torch.float32)
        state["exp_avg_sq"] = torch.zeros_like(param, dtype=torch.float32)
    else:  # e.g. just loaded from a checkpoint
        state["exp_avg"] = state["exp_avg"].to(device=param.device, dtype=torch.float32)
        state["exp_avg_sq"] = state["exp_avg_sq"].to(device=param.device, dtype=torch.float32)
    beta1, beta2 = betas
    state["step"] += 1

    exp_avg = state["exp_avg"][rows].mul_(beta1).add_(values, alpha=1 - beta1)
    exp_avg_sq = state["exp_avg_sq"][rows].mul_(beta2).addcmul_(values, values, value=1 - beta2)
    state["exp_avg"].index_copy_(0, rows, exp_avg)
    state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
    denom = exp_avg_sq.sqrt_().add_(eps)
    step_size = lr * math.sqrt(1 - beta2 ** state["step"]) / (1 - beta1 ** state["step"])

    # Only the touched rows are read and written, in fp32 as fairseq's Adam does for fp16 params.
    updated = param.data[rows].float()
    if weight_decay != 0:
        updated.add_(updated, alpha=-weight_decay * lr)
    updated.addcdiv_(exp_avg, denom, value=-step_size)
    param.data.index_copy_(0, rows, updated.to(param.dtype))


def check_training_setup(cfg) -> None:
    """Refuse, with one error naming the fix, a fairseq setup that would densify the gradient."""
    common, dist = cfg.common, cfg.distributed_training
    problem = None
    if cfg.optimizer._name != "adam":
        problem = f"needs optimizer._name=adam (fairseq's AdamW, updated lazily), not {cfg.optimizer._name}"
    elif (common.fp16 or common.bf16) and not (
        common.memory_efficient_fp16 or common.memory_efficient_bf16 or common.amp
    ):
        problem = ("cannot run with fairseq's FP16Optimizer (it copies every gradient into one flat fp32 "
                   "buffer): add common.memory_efficient_fp16=true (or memory_efficient_bf16=true)")
    elif common.fp16 and (common.cpu or not torch.cuda.is_available()):
        problem = ("cannot run in fp16 on a CPU (PyTorch has no CPU kernel adding fp16 sparse gradients): "
                   "use common.bf16=true common.memory_efficient_bf16=true, or a GPU")
    elif dist.distributed_world_size > 1 and dist.ddp_backend not in ("pytorch_ddp", "c10d"):
        problem = (f"cannot run with distributed_training.ddp_backend={dist.ddp_backend} (it flattens "
                   "gradients): use ddp_backend=pytorch_ddp")
    elif dist.distributed_world_size > 1 and dist.ddp_comm_hook == "fp16":
        problem = ("cannot run with distributed_training.ddp_comm_hook=fp16 (DDP takes one hook, and the plugin "
                   "registers its sparse all-reduce): leave it unset")
    elif cfg.optimization.use_bmuf or dist.zero_sharding != "none":
        problem = "cannot run with BMUF or ZeRO sharding (both handle dense gradients only)"
    if problem:
        raise ValueError(f"{OPTION} {problem}; or turn the option off")
