"""Balanced cross-entropy for fine-tuning (paper App. E.1).

With L_c the summed cross-entropy of the batch's class-c examples and w_c = n_c / N, L_bce = sum_c L_c / w_c,
returned / N: the sum over the classes present of their mean loss, so rare classes weigh as much as
frequent ones. (torch's ``cross_entropy(weight=1/n_c)`` would divide by the number of classes instead.)"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def balanced_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """App. E.1's loss of ``logits`` (N x C, or any shape whose last dim is C) for ``labels`` (N)."""
    logits = logits.reshape(-1, logits.shape[-1])
    labels = labels.reshape(-1)
    per_example = F.cross_entropy(logits.float(), labels, reduction="none")
    counts = torch.bincount(labels, minlength=logits.shape[-1]).to(per_example.dtype)
    return (per_example / counts[labels]).sum()


def balanced_loss_func(outputs, labels: Tensor, num_items_in_batch=None) -> Tensor:
    """The Trainer's ``compute_loss_func`` hook: balanced CE of the model's logits. ``num_items_in_batch`` is
    ignored: class frequencies are each micro-batch's, as in the paper (the Trainer scales for accumulation)."""
    return balanced_cross_entropy(outputs["logits"], labels)
