"""fairseq_headless.hf.objective: masking statistics, the CWT loss of a transformers model against a float64
reference, the vanilla loss against the full logits, on a tiny model of each family."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_close_computations, network_terms, rounding_bound
from fairseq_headless.hf.objective import IGNORE, headless_loss, mask_tokens, vanilla_loss
from helpers.hf_models import CAUSAL, FAMILIES, batch, tiny_model
from helpers.references import reference_cwt

# --------------------------------------------------------------------------
# mask_tokens: fairseq's MaskTokensDataset recipe
# --------------------------------------------------------------------------

MASK, VOCAB, SPECIAL_IDS = 5, 300, (0, 1, 2, 3)


def masking_batch(rows=64, length=512, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, VOCAB, (rows, length), generator=generator)
    lengths = torch.randint(length // 4, length + 1, (rows,), generator=generator)
    padding = torch.arange(length)[None, :] >= lengths[:, None]
    ids = ids.masked_fill(padding, 1)
    ids[:, 0] = 0  # <s>
    special = padding.clone()
    special[:, 0] = True
    return ids, special


def test_mask_tokens_selects_fairseqs_share_of_each_rows_non_special_positions():
    ids, special = masking_batch()
    inputs, labels = mask_tokens(ids, special, mask_id=MASK, vocab_size=VOCAB, special_ids=SPECIAL_IDS,
                                 generator=torch.Generator().manual_seed(1))
    selected = labels.ne(IGNORE)
    assert not (selected & special).any() and torch.equal(inputs[special], ids[special])
    assert torch.equal(labels[selected], ids[selected]) and torch.equal(inputs[~selected], ids[~selected])
    # int(0.15 n + u): each row's count is the floor or the ceiling of 0.15 n
    n = (~special).sum(dim=1).double()
    count = selected.sum(dim=1).double()
    assert ((count >= torch.floor(0.15 * n)) & (count <= torch.ceil(0.15 * n))).all()
    # ... and the total is 0.15 of all, up to the sum of the rows' rounding (a sum of uniforms, sd sqrt(rows/12))
    assert abs(count.sum().item() - 0.15 * n.sum().item()) <= 5 * math.sqrt(len(n) / 12)

    total = int(selected.sum())
    masked = selected & inputs.eq(MASK)
    kept = selected & inputs.eq(ids)
    random = selected & ~masked & ~kept
    for share, expected in ((masked, 0.8), (kept, 0.1), (random, 0.1)):
        # binomial(total, p); a random draw equal to the original token counts as kept (p = 1/V)
        sd = math.sqrt(total * expected * (1 - expected))
        assert abs(int(share.sum()) - expected * total) <= 5 * sd + total * 0.1 / (VOCAB - 5)
    drawn = inputs[random]
    assert drawn.min() >= 0 and drawn.max() < VOCAB
    assert not torch.isin(drawn, torch.tensor([MASK, *SPECIAL_IDS])).any()


def test_mask_tokens_random_tokens_are_uniform_over_the_real_vocabulary():
    ids, special = masking_batch(rows=256)
    vocab = 20  # few ids: every one of them drawn often
    ids = ids % vocab
    inputs, labels = mask_tokens(ids, special, mask_id=MASK, vocab_size=vocab, special_ids=SPECIAL_IDS,
                                 prob=0.5, generator=torch.Generator().manual_seed(2))
    selected = labels.ne(IGNORE)
    random = selected & inputs.ne(MASK) & inputs.ne(ids)
    counts = torch.bincount(inputs[random], minlength=vocab)
    assert counts[[MASK, *SPECIAL_IDS]].sum() == 0
    allowed = [i for i in range(vocab) if i not in (MASK, *SPECIAL_IDS)]
    # uniform over the allowed ids, each missing its own original token: a chi-square with 14 dof, mean 14
    observed = counts[allowed].double()
    expected = observed.sum() / len(allowed)
    assert ((observed - expected) ** 2 / expected).sum() < 50


def test_mask_tokens_is_deterministic_given_the_generator():
    ids, special = masking_batch(rows=8, length=64)

    def masked(seed):
        return mask_tokens(ids, special, mask_id=MASK, vocab_size=VOCAB, generator=torch.Generator().manual_seed(seed))

    first, again, other = masked(3), masked(3), masked(4)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[1], other[1])
    assert torch.equal(ids, masking_batch(rows=8, length=64)[0])  # the input is not modified


def test_mask_tokens_rejects_a_probability_outside_0_1():
    ids, special = masking_batch(rows=2, length=8)
    with pytest.raises(ValueError, match="probability"):
        mask_tokens(ids, special, mask_id=MASK, vocab_size=VOCAB, prob=1.0)


# --------------------------------------------------------------------------
# headless_loss against a float64 reference, vanilla_loss against the full logits
# --------------------------------------------------------------------------

def reference_headless(model64, ids, attention_mask, labels, negatives, temperature):
    """The CWT definition on the float64 model, computed from its base model directly: (loss, the loss from a
    per-row loop)."""
    hidden = model64.base_model(input_ids=ids, attention_mask=attention_mask).last_hidden_state
    scored = labels.ne(IGNORE)
    outputs, targets = hidden[scored], labels[scored]
    table = model64.get_input_embeddings().weight
    columns = targets if negatives == "batch" else torch.unique(targets)
    logits = outputs @ table[columns].T / temperature
    loss = (torch.logsumexp(logits, dim=-1) - (outputs * table[targets]).sum(-1) / temperature).sum()
    looped, _ = reference_cwt(outputs.detach(), targets, table.detach(), negatives, temperature)
    return loss, looped, logits.detach().abs().max().item()


def float64_twin(model):
    import copy

    return copy.deepcopy(model).double()


def body_weight(model):
    """One weight of the first layer's feed-forward block (each family names it differently)."""
    return next(p for name, p in model.named_parameters() if ".0." in name and p.dim() == 2
                and any(k in name for k in ("mlp", "intermediate", "Wi")))


@pytest.mark.parametrize("negatives,temperature,chunk_size", [("batch", 1.0, 0), ("unique", 0.5, 0), ("batch", 1.0, 4)])
@pytest.mark.parametrize("family", FAMILIES)
def test_headless_loss_and_gradients_match_a_float64_reference(family, negatives, temperature, chunk_size):
    model = tiny_model(family)
    model64 = float64_twin(model)
    ids, attention_mask, labels = batch(family)
    loss, positions = headless_loss(model, ids, attention_mask, labels, negatives=negatives,
                                    temperature=temperature, chunk_size=chunk_size)
    loss.backward()
    expected, looped, top_logit = reference_headless(model64, ids, attention_mask, labels, negatives, temperature)
    expected.backward()

    assert positions == int(labels.ne(IGNORE).sum()) > 0
    assert expected.item() == pytest.approx(looped, rel=1e-12)  # the reference agrees with its own loop
    # float32 against float64: the network's chains of roundings, then a D-term dot product, a K-term
    # logsumexp and the K-term sum; each of the K terms is at most a few top logits
    dim = model.config.hidden_size
    terms = network_terms(model, ids.numel()) + dim + 2 * positions
    assert loss.item() == pytest.approx(expected.item(), abs=rounding_bound(terms, positions * top_logit))
    for ours, theirs in ((model.get_input_embeddings().weight, model64.get_input_embeddings().weight),
                         (body_weight(model), body_weight(model64))):
        assert_close_computations(ours.grad, theirs.grad, terms=terms, dtype=torch.float32)
    # the head got an exact zero gradient (no DDP find_unused_parameters needed), the body a real one
    assert all(p.grad is not None for p in model.parameters())
    assert body_weight(model).grad.abs().max() > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_vanilla_loss_equals_cross_entropy_of_the_full_logits_at_the_scored_positions(family):
    model = tiny_model(family)
    ids, attention_mask, labels = batch(family)
    loss, positions = vanilla_loss(model, ids, attention_mask, labels)
    loss.backward()
    ours = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    logits = model(input_ids=ids, attention_mask=attention_mask).logits  # every position, the model's own forward
    scored = labels.ne(IGNORE)
    expected = F.cross_entropy(logits[scored].float(), labels[scored], reduction="sum")
    expected.backward()

    assert positions == int(scored.sum()) > 0
    # the same float32 operations on fewer rows: only the kernels' summation order may differ
    terms = network_terms(model, ids.numel()) + model.config.vocab_size
    assert loss.item() == pytest.approx(expected.item(), abs=rounding_bound(terms, expected.item()))
    scale = max(p.grad.abs().max().item() for p in model.parameters())
    for name, p in model.named_parameters():
        assert_close_computations(ours[name], p.grad, terms=terms, scale=scale, msg=name)


def test_headless_loss_through_a_ddp_style_wrapper_is_the_wrapped_models():
    class Wrapper(torch.nn.Module):  # what DistributedDataParallel looks like from outside
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, **kwargs):
            return self.module(**kwargs)

    model = tiny_model("llama")
    ids, attention_mask, labels = batch("llama")
    plain, _ = headless_loss(model, ids, attention_mask, labels)
    wrapped, _ = headless_loss(Wrapper(model), ids, attention_mask, labels)
    assert torch.equal(plain, wrapped)  # the same computation


def test_no_scored_position_gives_a_zero_loss_with_every_gradient_defined():
    model = tiny_model("bert")
    ids, attention_mask, labels = batch("bert")
    labels = torch.full_like(labels, IGNORE)
    for objective in (headless_loss, vanilla_loss):
        model.zero_grad(set_to_none=True)
        loss, positions = objective(model, ids, attention_mask, labels)
        loss.backward()
        assert (loss.item(), positions) == (0.0, 0)
        assert all(p.grad is not None and p.grad.abs().max() == 0 for p in model.parameters())


def test_bad_options_and_models_are_refused():
    model = tiny_model("gpt_neox")
    ids, attention_mask, labels = batch("gpt_neox")
    with pytest.raises(ValueError, match="scope"):
        headless_loss(model, ids, attention_mask, labels, scope="world")
    with pytest.raises(ValueError, match="negatives"):
        headless_loss(model, ids, attention_mask, labels, negatives="all")
    with pytest.raises(TypeError, match="without a head"):
        vanilla_loss(model.base_model, ids, attention_mask, labels)
    # a bare base model has no head, but the headless loss needs none
    loss, _ = headless_loss(model.base_model, ids, attention_mask, labels)
    assert loss.item() == pytest.approx(headless_loss(model, ids, attention_mask, labels)[0].item(), rel=1e-6)


def test_the_objective_module_imports_nothing_from_fairseq():
    code = ("import sys\nimport fairseq_headless.hf.objective\n"
            "assert not [m for m in sys.modules if m.split('.')[0] == 'fairseq'], 'fairseq imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
