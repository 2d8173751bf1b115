"""All-gather with gradients, for negatives shared across data-parallel ranks (``negatives_scope=global``).

Beyond the paper. Ranks hold different numbers of positions, so the shards are padded to the largest,
gathered with ``torch.distributed.nn.functional.all_gather`` (its backward returns each shard's
gradients to its owner), and the padding is cut."""

from typing import List, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torch.distributed.nn.functional import all_gather as differentiable_all_gather


def all_gather_with_grad(tensor: Tensor, group: Optional[object] = None) -> Tuple[List[Tensor], int]:
    """Every rank's ``tensor`` (first dimension may differ), in rank order, and this rank's index."""
    world_size = dist.get_world_size(group=group)
    rank = dist.get_rank(group=group)
    size = torch.tensor([tensor.size(0)], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world_size)]
    dist.all_gather(sizes, size, group=group)
    sizes = [int(s) for s in sizes]
    padding = max(sizes) - tensor.size(0)
    padded = F.pad(tensor, [0, 0] * (tensor.dim() - 1) + [0, padding]) if padding else tensor
    if tensor.is_floating_point() and tensor.requires_grad:
        shards = differentiable_all_gather(padded, group=group)
    else:  # token ids: nothing to differentiate
        shards = [torch.empty_like(padded) for _ in range(world_size)]
        dist.all_gather(shards, padded.contiguous(), group=group)
    return [shard[:n] for shard, n in zip(shards, sizes)], rank
