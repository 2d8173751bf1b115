"""Headless architectures: no head parameters, same features as the vanilla twin, every
parameter trained, and the criterions' numbers against the float64 CWT reference."""

import pytest
import torch

from conftest import assert_close_computations, build_task_and_model
from helpers.references import reference_cwt

from fairseq_headless.criterions.cwt_criterion import input_embeddings

HEAD_KEYS = ("lm_head", "output_projection", "embed_out")
TINY_TWINS = [("hmlm_tiny", "mlm_tiny"), ("hlm_tiny", "lm_tiny")]
HEADLESS_CONFIGS = ["hmlm_tiny", "hlm_tiny", "hmlm_small", "hlm_small", "hmlm_base", "hmlm_multilingual", "hlm_pythia70m"]


def head_keys(model):
    return [k for k in model.state_dict() if any(h in k for h in HEAD_KEYS)]


def random_tokens(task, batch=3, length=20, seed=0):
    generator = torch.Generator().manual_seed(seed)
    dictionary = task.source_dictionary
    return torch.randint(dictionary.nspecial, len(dictionary) - 1, (batch, length), generator=generator)


@pytest.mark.parametrize("headless_name,vanilla_name", TINY_TWINS)
def test_headless_twin_has_no_head_and_the_same_features(headless_name, vanilla_name, tiny_data):
    _, task, headless = build_task_and_model(headless_name, tiny_data)
    _, _, vanilla = build_task_and_model(vanilla_name, tiny_data)
    assert head_keys(headless) == [] and head_keys(vanilla) != []

    missing, unexpected = torch.nn.Module.load_state_dict(vanilla, headless.state_dict(), strict=False)
    assert unexpected == [] and missing and all(any(h in k for h in HEAD_KEYS) for k in missing)
    headless.eval(), vanilla.eval()
    tokens = random_tokens(task)
    features = headless(tokens, features_only=True)[0]
    # the same body code on the same weights and tokens: the same computation repeated, bit for bit
    torch.testing.assert_close(features, vanilla(tokens, features_only=True)[0], rtol=0, atol=0)
    # Asked for logits, a headless model scores with e^T (no parameter of its own): the model's own
    # product against a plain matmul, each logit a dot product of D terms
    logits = headless(tokens)[0]
    embeddings = input_embeddings(headless).weight
    scale = (features.abs().max() * embeddings.abs().max() * features.size(-1)).item()  # bounds sum|f_i e_i|
    assert_close_computations(logits, features @ embeddings.t(), terms=features.size(-1), scale=scale)
    if vanilla_name == "lm_tiny":  # GPT-2's tied head has no bias: the same logits, through its own kernel
        assert_close_computations(logits, vanilla(tokens)[0], terms=features.size(-1), scale=scale)


def one_training_batch(cfg, task, seed=0):
    tokens = random_tokens(task, seed=seed)
    pad = task.source_dictionary.pad()
    target = torch.full_like(tokens, pad)
    generator = torch.Generator().manual_seed(seed + 1)
    selected = torch.rand(tokens.shape, generator=generator) < 0.3
    selected[0, 0] = True
    if cfg.task._name == "masked_lm":
        target[selected] = tokens[selected]
        tokens = tokens.masked_fill(selected, task.source_dictionary.index("<mask>"))
    else:  # next-token targets; the last few positions of one row are padding
        target[:, :-1] = tokens[:, 1:]
        target[1, -4:] = pad
    return {
        "net_input": {"src_tokens": tokens, "src_lengths": torch.full((tokens.size(0),), tokens.size(1))},
        "target": target,
        "ntokens": int(target.ne(pad).sum()),
        "nsentences": tokens.size(0),
    }


@pytest.mark.parametrize("config", ["hmlm_tiny", "hlm_tiny"])
@pytest.mark.parametrize("negatives", ["batch", "unique"])
def test_criterion_matches_float64_reference(config, negatives, tiny_data):
    cfg, task, model = build_task_and_model(config, tiny_data, f"criterion.negatives={negatives}")
    criterion = task.build_criterion(cfg.criterion)
    model.eval()
    sample = one_training_batch(cfg, task)
    loss, sample_size, log = criterion(model, sample)

    selected = sample["target"].ne(task.source_dictionary.pad())
    features = model(**sample["net_input"], features_only=True)[0][selected]
    expected, correct = reference_cwt(
        features.detach(), sample["target"][selected], input_embeddings(model).weight.detach(), negatives, 1.0
    )
    assert sample_size == int(selected.sum()) > 0
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert int(log["ncorrect"]) == correct
    assert log["nnegatives"] == (sample_size if negatives == "batch" else len(set(sample["target"][selected].tolist())))


@pytest.mark.parametrize("config", ["hmlm_tiny", "hlm_tiny"])
def test_batch_with_no_selected_position_gives_zero_loss(config, tiny_data):
    cfg, task, model = build_task_and_model(config, tiny_data)
    criterion = task.build_criterion(cfg.criterion)
    sample = one_training_batch(cfg, task)
    sample["target"].fill_(task.source_dictionary.pad())
    loss, sample_size, _ = criterion(model, sample)
    assert loss.item() == 0.0 and sample_size == 0
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("config", HEADLESS_CONFIGS)
def test_every_parameter_of_a_headless_model_gets_a_gradient(config, tiny_data):
    """No unused parameter: what DDP's find_unused_parameters would otherwise have to hunt."""
    torch.manual_seed(0)
    cfg, task, model = build_task_and_model(config, tiny_data)
    criterion = task.build_criterion(cfg.criterion)
    loss, _, _ = criterion(model, one_training_batch(cfg, task))
    loss.backward()
    no_gradient = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_gradient == []
    assert head_keys(model) == []
