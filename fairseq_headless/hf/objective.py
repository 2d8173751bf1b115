"""The training objectives of a Hugging Face model: CWT (paper §3.2, App. G), its vanilla twin, MLM masking.

Labels are aligned with positions (IGNORE where nothing is scored; a causal collator has shifted them
already), so one objective serves masked and causal LM. Both losses run the model's own forward, with a
hook on its base model that hands the head only the scored positions (vanilla) or none (headless): the
call stays the one that DDP, FSDP and the Trainer wrap, and each architecture's head is its own. The
headless features are the base model's last hidden states, as the fairseq criterions take the encoder's
or decoder's features (no head transform), scored against ``get_input_embeddings().weight``.
Nothing here imports fairseq.
"""

from contextlib import contextmanager
from typing import Iterable, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..all_gather import all_gather_with_grad
from ..cwt import NEGATIVE_MODES, cwt_loss

IGNORE = -100  # transformers' ignore_index: a position nothing is scored at
SCOPES = ("local", "global")


def mask_tokens(
    input_ids: Tensor,
    special_mask: Tensor,
    *,
    mask_id: int,
    vocab_size: int,
    prob: float = 0.15,
    generator: Optional[torch.Generator] = None,
    special_ids: Iterable[int] = (),
) -> Tuple[Tensor, Tensor]:
    """(inputs, labels) of masked LM, by fairseq's ``MaskTokensDataset`` recipe.

    In each row, ``int(prob * n + u)`` of its n positions outside ``special_mask`` are selected without
    replacement (u uniform in [0, 1): fairseq's probabilistic rounding, so the expected count is exactly
    ``prob * n``); of those, 80% become ``mask_id``, 10% a random token, 10% keep their token. Random
    tokens are uniform over ``[0, vocab_size)`` without ``mask_id`` and ``special_ids`` (fairseq draws
    every id but its specials); pass the tokenizer's size, so that padding rows of the embedding matrix
    are never drawn. ``labels`` holds the original token at the selected positions, IGNORE elsewhere.
    """
    if not 0.0 < prob < 1.0:
        raise ValueError(f"the masking probability must be in (0, 1), got {prob}")
    device = input_ids.device
    candidates = ~special_mask.to(device=device, dtype=torch.bool)
    rows, length = input_ids.shape
    count = (prob * candidates.sum(dim=1).double()
             + torch.rand(rows, generator=generator, device=device, dtype=torch.float64)).long()
    # A random order of each row's candidates (specials last): its first `count` positions are selected.
    keys = torch.rand(rows, length, generator=generator, device=device).masked_fill(~candidates, 2.0)
    rank = keys.argsort(dim=1).argsort(dim=1)
    selected = rank < count[:, None]
    labels = input_ids.masked_fill(~selected, IGNORE)

    action = torch.rand(rows, length, generator=generator, device=device)
    kept, random = selected & (action < 0.1), selected & (action >= 0.1) & (action < 0.2)
    inputs = input_ids.masked_fill(selected & ~kept & ~random, mask_id)
    allowed = torch.ones(vocab_size, dtype=torch.bool, device=device)
    excluded = [i for i in {mask_id, *special_ids} if 0 <= i < vocab_size]
    allowed[excluded] = False
    pool = allowed.nonzero().squeeze(1)
    if pool.numel() == 0:
        raise ValueError(f"no token to draw as a random replacement: every id below {vocab_size} is special")
    draws = torch.randint(pool.numel(), (int(random.sum()),), generator=generator, device=device)
    inputs = inputs.masked_scatter(random, pool[draws].to(inputs.dtype))
    return inputs, labels


def headless_loss(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Optional[Tensor],
    labels: Tensor,
    *,
    negatives: str = "batch",
    scope: str = "local",
    temperature: float = 1.0,
    chunk_size: int = 0,
) -> Tuple[Tensor, int]:
    """(summed CWT loss, number of scored positions) of ``model`` on one micro-batch.

    The last hidden states at the positions where ``labels != IGNORE`` are scored against the model's input
    embeddings of their labels by :func:`fairseq_headless.cwt.cwt_loss` (``negatives``: ``batch`` or
    ``unique``; ``temperature``; ``chunk_size``). ``scope="global"`` takes the negatives of every rank of the
    default process group, gathered with their gradients (beyond the paper, whose negatives are one
    device's micro-batch): every rank must call it, and the ranks' summed gradients are those of one
    process on the joined batch. ``model`` may be wrapped (DDP): its forward is what runs.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if negatives not in NEGATIVE_MODES:
        raise ValueError(f"negatives must be one of {NEGATIVE_MODES}, got {negatives!r}")
    scored = labels.ne(IGNORE)
    # The head sees no position: its output is empty, but it keeps the head's parameters in the graph.
    features, output = _forward(model, input_ids, attention_mask, scored, head_rows=lambda hidden, _: hidden[:, :0])
    matrix = _input_embeddings(model).weight
    if features.dtype != matrix.dtype:  # e.g. a norm computed in fp32 over a bf16 table
        features = features.to(matrix.dtype)
    result = cwt_loss(features, labels[scored], embedding_matrix=matrix, negatives=negatives,
                      temperature=temperature, chunk_size=chunk_size, gather=_gather(scope))
    # + 0 exactly: every parameter gets a gradient, so DDP needs no find_unused_parameters for the head.
    return result.loss + _logits(output).sum().float(), result.num_positions


def vanilla_loss(model: nn.Module, input_ids: Tensor, attention_mask: Optional[Tensor], labels: Tensor) -> Tuple[Tensor, int]:
    """(summed cross-entropy of the model's own head, number of scored positions).

    The head runs only at the positions where ``labels != IGNORE``, as fairseq's ``masked_lm`` criterion
    applies RoBERTa's head to the masked tokens only; log-softmax in fp32, as fairseq's cross-entropy.
    """
    if _unwrapped(model).base_model is _unwrapped(model):
        raise TypeError(f"{type(_unwrapped(model)).__name__} is a base model without a head: the vanilla objective "
                        f"needs the model with its LM head (AutoModelForMaskedLM / AutoModelForCausalLM)")
    scored = labels.ne(IGNORE)
    _, output = _forward(model, input_ids, attention_mask, scored, head_rows=lambda _, features: features[None])
    logits = _logits(output)
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels[scored], reduction="sum")
    return loss, int(scored.sum())


def _unwrapped(model: nn.Module) -> nn.Module:
    """The transformers model inside DDP-style wrappers (FSDP2 shards in place and wraps nothing)."""
    while isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    return model


def _input_embeddings(model: nn.Module) -> nn.Module:
    embeddings = _unwrapped(model).get_input_embeddings()
    if getattr(embeddings, "weight", None) is None:
        raise TypeError(f"{type(_unwrapped(model)).__name__} has no input embedding matrix to use as CWT targets")
    return embeddings


def _forward(model, input_ids, attention_mask, scored, head_rows):
    """(base model's last hidden states at ``scored``, the model's output when its head got ``head_rows``)."""
    inner = _unwrapped(model)
    captured = {}

    def hook(module, args, output):
        key = 0 if isinstance(output, tuple) else next(iter(output.keys()))
        hidden = output[key]
        captured["features"] = hidden[scored]
        rows = head_rows(hidden, captured["features"])
        if isinstance(output, tuple):
            return (rows, *output[1:])
        output[key] = rows  # a ModelOutput updates the attribute with the key
        return output

    kwargs = {"use_cache": False} if getattr(inner.config, "use_cache", None) is not None else {}
    with _hooked(inner.base_model, hook):
        output = model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    if "features" not in captured:
        raise TypeError(f"{type(inner).__name__}'s forward never called its base model ({type(inner.base_model).__name__})")
    return captured["features"], output


@contextmanager
def _hooked(module, hook):
    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _logits(output) -> Tensor:
    return output[0] if isinstance(output, tuple) else output.logits if "logits" in output else output[0]


def _gather(scope: str):
    if scope == "local" or not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return None
    return all_gather_with_grad
