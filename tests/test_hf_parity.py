"""The Hugging Face objectives equal the fairseq criterions: on the same weights (mapped through the exporter's
key tables) and the same batch, the loss and every gradient of ``headless_loss`` equal those of
``headless_masked_lm`` (RoBERTa encoder) and ``headless_language_modeling`` (GPT-NeoX decoder), in both
negatives modes, and ``vanilla_loss`` equals fairseq's ``masked_lm`` and ``cross_entropy``, within the
rounding bound. This file imports fairseq; the objective module does not."""

import pytest
import torch

from conftest import assert_close_computations, build_task_and_model, network_terms
from fairseq_headless.export import weights
from fairseq_headless.hf.objective import IGNORE, headless_loss, vanilla_loss
from helpers.references import randomize

ROBERTA = [(weights.ROBERTA_TABLE, "roberta.")]
CASES = {  # config: (exporter, [(key table, HF prefix of its keys)], objective, task)
    "hmlm_tiny": (weights.roberta_export, ROBERTA, headless_loss, "mlm"),
    "mlm_tiny": (weights.roberta_export, ROBERTA + [(weights.ROBERTA_LM_HEAD_TABLE, "")], vanilla_loss, "mlm"),
    "hlm_pythia_tiny": (weights.gpt_neox_export, [(weights.GPT_NEOX_TABLE, "")], headless_loss, "clm"),
    "lm_pythia_tiny": (weights.gpt_neox_export, [(weights.GPT_NEOX_TABLE, "")], vanilla_loss, "clm"),
}


def fairseq_and_hf(config, data, *overrides):
    """(fairseq criterion, fairseq model, task, transformers twin with the same weights), eval mode (no dropout)."""
    export_of = CASES[config][0]
    cfg, task, model = build_task_and_model(config, data, *overrides)
    randomize(model).eval()
    export = export_of(model, task, cfg.model._name)
    hf = weights.hf_class_of(export.hf_class)(export.config)
    missing, unexpected = hf.load_state_dict(export.weights, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return task.build_criterion(cfg.criterion), model, task, hf.eval()


def sample_of(task, kind, rows=4, length=24, seed=0):
    """A fairseq sample, the last row right-padded: masked LM scores ~30% of the real positions (their inputs
    <mask>), causal LM the next token."""
    dictionary = task.source_dictionary
    pad = dictionary.pad()
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(dictionary.nspecial, len(dictionary) - 1, (rows, length), generator=generator)
    real = torch.ones_like(tokens, dtype=torch.bool)
    real[-1, length // 2:] = False
    tokens = tokens.masked_fill(~real, pad)
    if kind == "mlm":
        selected = (torch.rand(tokens.shape, generator=generator) < 0.3) & real
        selected[:, 0] = True
        target = tokens.masked_fill(~selected, pad)
        tokens = tokens.masked_fill(selected, dictionary.index("<mask>"))
    else:
        target = torch.cat([tokens[:, 1:], torch.full((rows, 1), pad)], dim=1)
    return {"net_input": {"src_tokens": tokens, "src_lengths": real.sum(1)}, "target": target,
            "ntokens": int(target.ne(pad).sum()), "nsentences": rows}


@pytest.mark.parametrize("negatives", ["batch", "unique"])
@pytest.mark.parametrize("config", ["hmlm_tiny", "hlm_pythia_tiny"])
def test_headless_loss_and_gradients_equal_the_fairseq_criterions(config, negatives, tiny_data):
    check_parity(config, tiny_data, f"criterion.negatives={negatives}", negatives=negatives)


@pytest.mark.parametrize("config", ["mlm_tiny", "lm_pythia_tiny"])
def test_vanilla_loss_and_gradients_equal_fairseqs_masked_lm_and_cross_entropy(config, tiny_data):
    check_parity(config, tiny_data)


def check_parity(config, data, *overrides, **options):
    _, tables, objective, kind = CASES[config]
    criterion, model, task, hf = fairseq_and_hf(config, data, *overrides)
    sample = sample_of(task, kind)
    pad = task.source_dictionary.pad()
    expected, positions, _ = criterion(model, sample)
    expected.backward()

    ids, target = sample["net_input"]["src_tokens"], sample["target"]
    loss, scored = objective(hf, ids, ids.ne(pad).long(), target.masked_fill(target.eq(pad), IGNORE), **options)
    loss.backward()

    assert scored == positions == int(target.ne(pad).sum()) > 0
    layers = len(model.encoder.sentence_encoder.layers if kind == "mlm" else model.decoder.layers)
    # the fairseq model's gradients, through the exporter's key table: what each HF parameter's should be
    fairseq_grads = {k: p.grad for k, p in model.named_parameters()}
    grads, used = {}, set()
    for table, prefix in tables:
        mapped, keys = weights.map_weights(table, fairseq_grads, layers, prefix)
        grads.update(mapped)
        used |= keys
    assert used == fairseq_grads.keys()  # every fairseq gradient is compared
    embedding = next(k for k in grads if k.endswith(("word_embeddings.weight", "embed_in.weight")))
    body = next(k for k in grads if k.endswith(("layer.0.intermediate.dense.weight", "layers.0.mlp.dense_h_to_4h.weight")))
    # two float32 computations of one network: its chains of roundings, then the loss's D-term dot products
    # and K-term sums (logsumexp or log-softmax over V)
    terms = network_terms(model, ids.numel()) + 2 * positions + len(task.source_dictionary)
    assert_close_computations(loss.detach(), expected.detach(), terms=terms, msg="loss")
    scale = max(g.abs().max().item() for g in grads.values())  # normwise: some entries are 0 in exact arithmetic
    assert grads[embedding].abs().max() > 0 and grads[body].abs().max() > 0
    for key, grad in grads.items():
        assert_close_computations(hf.get_parameter(key).grad, grad, terms=terms, scale=scale, msg=key)
