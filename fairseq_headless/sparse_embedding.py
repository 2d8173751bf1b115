"""Row-sparse update of the input embeddings, so that the vocabulary costs nothing (beyond the paper, §6 / Fig.6b).

``model.sparse_embedding_update=true`` with ``optimizer._name=lazy_adam``: a sparse ``nn.Embedding`` and
sparse CWT target gathers, lazy AdamW (:mod:`.lazy_adam`) over the touched rows, and under DDP the hook of
:mod:`.sparse_all_reduce`. A model opts in with :class:`SparseEmbeddingUpdateConfig` and
:func:`maybe_enable_sparse_embedding_update`. docs/design.md#sparse_embeddingpy-lazy_adampy-sparse_all_reducepy."""

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Optional

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.utils import safe_getattr
from torch import nn

OPTION = "model.sparse_embedding_update=true (--sparse-embedding-update)"
OPTIMIZER = "lazy_adam"  # fairseq_headless.lazy_adam's registered name
HELP = ("update only the rows of the input embeddings that the batch touches (sparse gradient, lazy "
        "AdamW: untouched rows keep their moments and get no weight decay that step); beyond the paper, "
        "headless models only; needs optimizer lazy_adam, fp32, amp or memory_efficient_fp16/bf16, pytorch_ddp")
# The hydra overrides that turn the update on: the model's switch and its optimizer.
OVERRIDES = ("model.sparse_embedding_update=true", f"optimizer._name={OPTIMIZER}")
# Set on the embedding weight: what lazy_adam and the DDP hook registration (fairseq_patches) look for.
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


def empty_next_sparse_gradient(weight: torch.Tensor):
    """Replace ``weight``'s next sparse gradient (one backward pass) by one with no row, so that no row of an
    all-zero gradient (a dummy batch's) is updated; returns the hook's handle."""
    spent = False

    def empty(grad):
        nonlocal spent
        if spent or not grad.is_sparse:
            return None
        spent = True
        return torch.sparse_coo_tensor(grad._indices()[:, :0], grad._values()[:0], grad.shape, is_coalesced=True)

    return weight.register_hook(empty)


def has_sparse_embedding_update(params) -> bool:
    return any(getattr(p, MARKER, False) for p in params)


def densifying_setup(setup) -> Optional[str]:
    """What in ``setup`` would densify the sparse gradient (with the fix), or None. ``setup`` has the flat option
    names of fairseq's command line, the fields of ``lazy_adam``'s config (``fp16``, ``amp``, ``ddp_backend``, ...)."""
    if (setup.fp16 or setup.bf16) and not (setup.memory_efficient_fp16 or setup.memory_efficient_bf16 or setup.amp):
        return ("cannot run with fairseq's FP16Optimizer (plain common.fp16 / bf16 copy every gradient into "
                "one flat fp32 buffer): add common.memory_efficient_fp16=true (or memory_efficient_bf16=true)")
    if setup.fp16 and (setup.cpu or not torch.cuda.is_available()):
        return ("cannot run in fp16 on a CPU (PyTorch has no CPU kernel adding fp16 sparse gradients): "
                "use common.bf16=true common.memory_efficient_bf16=true, or a GPU")
    if setup.distributed_world_size > 1 and str(setup.ddp_backend) not in ("pytorch_ddp", "c10d"):
        return (f"cannot run with distributed_training.ddp_backend={setup.ddp_backend} (it flattens "
                "gradients): use ddp_backend=pytorch_ddp")
    if setup.distributed_world_size > 1 and str(setup.ddp_comm_hook) == "fp16":
        return ("cannot run with distributed_training.ddp_comm_hook=fp16 (DDP takes one hook, and the plugin "
                "registers its sparse all-reduce): leave it unset")
    if setup.use_bmuf or str(setup.zero_sharding) != "none":
        return "cannot run with BMUF or ZeRO sharding (both handle dense gradients only)"
    return None


class SparseUpdateSetupError(ValueError):
    """The sparse update is on with a setup that cannot take it; the message names the fix."""


def check_training_setup(cfg) -> None:
    """Refuse, with one error naming the fix, a whole fairseq config that turns the sparse update on with a
    setup that cannot take it (run by every config's hydra callback, :mod:`fairseq_headless.launch`)."""
    if not cfg.model.get("sparse_embedding_update", False):
        return
    common, dist, optimization = cfg.common, cfg.distributed_training, cfg.optimization
    if cfg.optimizer._name != OPTIMIZER:
        problem = (f"needs optimizer._name={OPTIMIZER} (fairseq's AdamW, with the rows of sparse gradients "
                   f"updated lazily; same options as adam), not {cfg.optimizer._name}")
    else:
        problem = densifying_setup(SimpleNamespace(
            **{key: common.get(key, False) for key in ("fp16", "bf16", "memory_efficient_fp16",
                                                       "memory_efficient_bf16", "amp", "cpu")},
            distributed_world_size=int(dist.get("distributed_world_size", 1) or 1),
            ddp_backend=dist.get("ddp_backend", "pytorch_ddp"), ddp_comm_hook=dist.get("ddp_comm_hook", "none"),
            zero_sharding=dist.get("zero_sharding", "none"), use_bmuf=optimization.get("use_bmuf", False)))
    if problem:
        raise SparseUpdateSetupError(f"{OPTION} {problem}; or turn the option off")
