"""``optimizer._name=lazy_adam``: fairseq's AdamW with a lazy update of row-sparse gradients (beyond the paper).

The optimizer of ``model.sparse_embedding_update=true`` (:mod:`.sparse_embedding`): fairseq's ``adam``,
same options and state, overriding only ``multiply_grads``, ``clip_grad_norm`` and ``step`` for sparse
gradients; it refuses setups that densify the gradient. Why each override:
docs/design.md#sparse_embeddingpy-lazy_adampy-sparse_all_reducepy."""

import math
from dataclasses import dataclass

import torch
from fairseq import utils
from fairseq.optim import register_optimizer
from fairseq.optim.adam import FairseqAdam, FairseqAdamConfig
from omegaconf import II

from .sparse_embedding import MARKER, OPTIMIZER as NAME, OPTION, densifying_setup


@dataclass
class LazyAdamConfig(FairseqAdamConfig):
    # What densifies a gradient, read from the other sections (no help: fairseq's argparse already has
    # these options and fills them from there).
    fp16: bool = II("common.fp16")
    bf16: bool = II("common.bf16")
    memory_efficient_fp16: bool = II("common.memory_efficient_fp16")
    memory_efficient_bf16: bool = II("common.memory_efficient_bf16")
    amp: bool = II("common.amp")
    cpu: bool = II("common.cpu")
    distributed_world_size: int = II("distributed_training.distributed_world_size")
    ddp_backend: str = II("distributed_training.ddp_backend")
    ddp_comm_hook: str = II("distributed_training.ddp_comm_hook")
    zero_sharding: str = II("distributed_training.zero_sharding")
    use_bmuf: bool = II("optimization.use_bmuf")


@torch.no_grad()
def lazy_adam_update_(param, grad, state, *, lr, betas, eps, weight_decay, scale=1.0):
    """fairseq's AdamW step (``fairseq.optim.adam.Adam``) on the rows of a sparse ``grad`` only.

    ``state``: the optimizer's state of ``param``, with fairseq's Adam keys (checkpoints and the dense
    path read it unchanged); ``grad`` is divided by ``scale`` first, as in fairseq's fused optimizers.
    The arithmetic is fairseq's, operation for operation: a row touched at every step gets the dense update."""
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


class _SparseGradValues:
    """Stands for a parameter in fairseq's clipping: ``.grad`` is its sparse gradient's values."""

    def __init__(self, values):
        self.grad = values


@register_optimizer(NAME, dataclass=LazyAdamConfig)
class LazyAdam(FairseqAdam):
    """fairseq's ``adam`` for dense gradients; lazy AdamW, scaling and clipping for row-sparse ones."""

    def __init__(self, cfg: LazyAdamConfig, params):
        problem = densifying_setup(cfg)
        if problem:
            raise ValueError(f"optimizer._name={NAME} (the optimizer of {OPTION}) {problem}")
        super().__init__(cfg, params)

    def _with_sparse_grads(self):
        return [(p, group) for group in self.param_groups for p in group["params"]
                if p.grad is not None and p.grad.is_sparse]

    def multiply_grads(self, c):
        sparse = [p for p, _ in self._with_sparse_grads()]
        grads = [p.grad for p in sparse]
        for p in sparse:
            p.grad = None  # fairseq's multiply_grads skips parameters without a gradient
        try:
            super().multiply_grads(c)
        finally:
            for p, grad in zip(sparse, grads):
                p.grad = grad.mul_(c.to(grad.device) if torch.is_tensor(c) else c)

    def clip_grad_norm(self, max_norm, aggregate_norm_fn=None):
        stand_ins = []
        for p in self.params:
            if p.grad is not None and p.grad.is_sparse:
                # Coalesced, the values hold each touched row once: their norm is the dense norm,
                # and scaling them in place scales the gradient.
                p.grad = p.grad.coalesce()
                stand_ins.append(_SparseGradValues(p.grad._values()))
            else:
                stand_ins.append(p)
        return utils.clip_grad_norm_(stand_ins, max_norm, aggregate_norm_fn)

    def step(self, closure=None, scale=1.0, groups=None):
        for p in self.params:
            if getattr(p, MARKER, False) and p.grad is not None and not p.grad.is_sparse:
                raise ValueError(f"{OPTION}: the input embeddings' gradient reached optimizer._name={NAME} dense, so "
                                 "something in this setup densified it (fairseq's FP16Optimizer, legacy_ddp and ZeRO "
                                 "are known to): train in fp32, common.memory_efficient_fp16/bf16 or common.amp, with "
                                 "distributed_training.ddp_backend=pytorch_ddp; or turn the option off")
        sparse = self._with_sparse_grads()
        for p, group in sparse:
            if group.get("amsgrad", False):
                raise ValueError(f"optimizer._name={NAME}: lazy Adam has no AMSGrad variant")
            lazy_adam_update_(p, p.grad, self.optimizer.state[p], lr=group["lr"], betas=group["betas"],
                              eps=group["eps"], weight_decay=group["weight_decay"], scale=scale)
        grads = [p.grad for p, _ in sparse]
        for p, _ in sparse:
            p.grad = None  # fairseq's Adam skips parameters without a gradient
        try:
            return super().step(closure, scale=scale, groups=groups)
        finally:
            for (p, _), grad in zip(sparse, grads):
                p.grad = grad
