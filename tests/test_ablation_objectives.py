"""The ablation objectives of Tab.6 (§6): 'Cross-Entropy + CWT' (criterion.cross_entropy) and
'NCE (wo/ WT)' (criterion.targets=separate), against float64 references written here in plain
torch, their gradients, their errors, and real fairseq-hydra-train runs that learn and resume."""

import copy
import re

import ddp_ranks
import pytest
import torch

from conftest import REPO, assert_close_computations, build_task_and_model, load_config, network_terms, rounding_bound, run_cli
from helpers.training import assert_learns, last_num_updates, train_losses
from test_models import one_training_batch

from fairseq_headless.criterions.cwt_criterion import input_embeddings

# (config, overrides): the masked-LM configs of Tab.6, and the same options on the causal criterion
CE_CASES = [
    ("mlm_tiny_cwt_ce", ()),
    ("hlm_tiny", ("model._name=gpt2_tiny", "~model.sparse_embedding_update", "+criterion.cross_entropy=true")),
]
NCE_CASES = [("hmlm_tiny_nce", ()), ("hlm_tiny", ("+criterion.targets=separate", "+criterion.target_dim=128"))]



def reference_cwt(outputs, target_ids, table):
    """In-batch contrastive loss, float64: sum_i logsumexp_j(o_i . t_j) - o_i . t_i, t_j = table[id_j]."""
    targets = table.double()[target_ids]
    logits = outputs.double() @ targets.t()
    return (torch.logsumexp(logits, dim=-1) - logits.diagonal()).sum()


def reference_ce(logits, target_ids):
    """Full-vocabulary cross-entropy, float64, summed."""
    return -torch.log_softmax(logits.double(), dim=-1).gather(1, target_ids[:, None]).sum()


def build(config, overrides, data, seed=0):
    torch.manual_seed(seed)
    cfg, task, model = build_task_and_model(config, data, *overrides)
    criterion = task.build_criterion(cfg.criterion)
    model.eval()  # no dropout: the reference sees the same network
    return cfg, task, model, criterion


def grads(module):
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def assert_close_to_reference(actual, expected, terms):
    """fp32 gradients against float64 ones. Some are 0 in exact arithmetic (attention's key bias), so the
    bound scales with the largest gradient of all (normwise)."""
    assert actual.keys() == expected.keys()
    scale = max(g.abs().max().item() for g in expected.values())
    for name, grad in actual.items():
        assert_close_computations(grad, expected[name], terms=terms, scale=scale, dtype=torch.float32, msg=name)


def assert_loss_close(loss, expected, terms):
    """A float32 loss against float64: a sum of non-negative terms, so the loss bounds sum |x_i|."""
    assert loss.item() == pytest.approx(expected.item(), abs=rounding_bound(terms, expected.item()))


@pytest.mark.parametrize("config,overrides", CE_CASES, ids=["masked", "causal"])
def test_cross_entropy_plus_cwt_matches_float64_reference(config, overrides, tiny_data):
    cfg, task, model, criterion = build(config, overrides, tiny_data)
    sample = one_training_batch(cfg, task)
    if hasattr(model, "encoder"):
        body, head = model.encoder.sentence_encoder, model.encoder.lm_head
    else:
        body, head = model.decoder.layers[0], model.decoder.output_projection
    body_calls, head_inputs = [], []
    body.register_forward_hook(lambda *_: body_calls.append(1))
    head.register_forward_hook(lambda _, inputs, __: head_inputs.append(tuple(inputs[0].shape)))
    loss, sample_size, log = criterion(model, sample)
    loss.backward()

    selected = sample["target"].ne(task.source_dictionary.pad())
    # one pass through the body; the head only on the K selected positions' features
    assert len(body_calls) == 1 and head_inputs == [(int(selected.sum()), 128)]
    target_ids = sample["target"][selected]
    reference_model = copy.deepcopy(model).double()
    reference_model.zero_grad()
    features = reference_model(**sample["net_input"], features_only=True)[0][selected]
    # the head through the model's own full forward (every position), then the selection
    ce = reference_ce(reference_model(**sample["net_input"])[0][selected], target_ids)
    cwt = reference_cwt(features, target_ids, input_embeddings(reference_model).weight)
    (ce + cwt).backward()

    assert sample_size == int(selected.sum()) > 0
    terms = network_terms(model, sample["target"].numel()) + len(task.source_dictionary)
    assert_loss_close(log["ce_loss"], ce, terms)
    assert_loss_close(log["cwt_loss"], cwt, terms)
    assert_loss_close(loss, ce + cwt, terms)  # unweighted sum (Tab.6 caption)
    assert grads(model).keys() == {n for n, _ in model.named_parameters()}  # the LM head included
    assert_close_to_reference(grads(model), grads(reference_model), terms)


@pytest.mark.parametrize("config,overrides", NCE_CASES, ids=["masked", "causal"])
def test_nce_without_weight_tying_matches_float64_reference(config, overrides, tiny_data):
    cfg, task, model, criterion = build(config, overrides, tiny_data)
    matrix = criterion.target_matrix.weight
    vocab, dim = len(task.source_dictionary), 128
    pad = task.source_dictionary.pad()
    # a V x D matrix initialised as RoBERTa's embeddings (N(0, 0.02), padding row zero), not the input's
    assert matrix.shape == input_embeddings(model).weight.shape == (vocab, dim)
    assert [n for n, _ in criterion.named_parameters()] == ["target_matrix.weight"]
    assert matrix[pad].abs().sum() == 0 and abs(matrix.std().item() - 0.02) < 0.002
    assert not torch.equal(matrix, input_embeddings(model).weight)

    sample = one_training_batch(cfg, task)
    loss, _, log = criterion(model, sample)
    loss.backward()
    selected = sample["target"].ne(pad)
    target_ids = sample["target"][selected]
    reference_model = copy.deepcopy(model).double()
    reference_model.zero_grad()
    reference_matrix = matrix.detach().double().requires_grad_(True)
    features = reference_model(**sample["net_input"], features_only=True)[0][selected]
    expected = reference_cwt(features, target_ids, reference_matrix)
    expected.backward()

    terms = network_terms(model, sample["target"].numel()) + int(selected.sum())
    assert_loss_close(loss, expected, terms)
    assert "ce_loss" not in log
    assert_close_to_reference(
        {"target_matrix.weight": matrix.grad, **grads(model)},
        {"target_matrix.weight": reference_matrix.grad, **grads(reference_model)}, terms,
    )
    # the separate matrix learns exactly on the rows of the batch's targets
    rows_with_gradient = set(matrix.grad.abs().sum(-1).nonzero().flatten().tolist())
    assert rows_with_gradient == set(target_ids.tolist())
    if cfg.task._name == "masked_lm":
        # tokens that are only targets (masked out of the input) give the input embeddings no gradient
        only_targets = sorted(set(target_ids.tolist()) - set(sample["net_input"]["src_tokens"].flatten().tolist()))
        assert only_targets
        assert input_embeddings(model).weight.grad[only_targets].abs().sum() == 0
        # ...while tied CWT (hmlm_tiny) trains those rows as targets
        tied_cfg, tied_task, tied, tied_criterion = build("hmlm_tiny", (), tiny_data)
        tied_criterion(tied, one_training_batch(tied_cfg, tied_task))[0].backward()
        assert (input_embeddings(tied).weight.grad[only_targets].abs().sum(-1) > 0).all()


@pytest.mark.parametrize("config,overrides", [("mlm_tiny_cwt_ce", ()), ("hmlm_tiny_nce", ()),
                                              ("hmlm_tiny_nce", ("criterion.negatives=unique",))])
def test_batch_with_no_selected_position_still_reaches_every_parameter(config, overrides, tiny_data):
    """Zero loss, and every parameter (LM head, separate matrix) in the graph: what DDP needs. In `unique`
    mode the separate matrix is used by no lookup of K targets but gathered by id: it gets zeros too."""
    cfg, task, model, criterion = build(config, overrides, tiny_data)
    sample = one_training_batch(cfg, task)
    sample["target"].fill_(task.source_dictionary.pad())
    loss, sample_size, _ = criterion(model, sample)
    assert loss.item() == 0.0 and sample_size == 0
    loss.backward()
    assert all(p.grad is not None for p in [*model.parameters(), *criterion.parameters()])
    assert all(not p.grad.any() for p in criterion.parameters())


# The separate matrix under DDP (fairseq wraps a criterion with parameters in DDP of its own): a rank whose
# batch selects no position must still give DDP the matrix's (zero) gradient, else the next step breaks.
NCE_UNIQUE = ("criterion.negatives=unique", "optimization.lr=[0.01]")


def nce_steps_with_an_empty_rank(rank, world_size, data):
    _, task, trainer = ddp_ranks.trainer("hmlm_tiny_nce", data, *NCE_UNIQUE, world_size=world_size)
    assert type(trainer.criterion.module).__name__ == "CpuSafeDistributedDataParallel"  # fairseq's DDP on it
    pad = task.source_dictionary.pad()
    first = ddp_ranks.masked_lm_batch(task, rows=3, seed=rank)
    if rank == 0:
        first["target"].fill_(pad)  # no selected position on rank 0
    trainer.train_step([first])
    grads = ddp_ranks.gradients(trainer.get_criterion())
    trainer.train_step([ddp_ranks.masked_lm_batch(task, rows=3, seed=10 + rank)])  # the step that broke
    return {"first_grads": grads, "matrix": ddp_ranks.parameters(trainer.get_criterion())}


def test_separate_targets_under_ddp_with_a_rank_without_positions(tiny_data, tmp_path):
    ranks = ddp_ranks.run_ranks(nce_steps_with_an_empty_rank, 2, tmp_path, data=tiny_data)
    assert ranks[0]["matrix"].keys() == {"target_matrix.weight"}
    assert torch.equal(ranks[0]["matrix"]["target_matrix.weight"], ranks[1]["matrix"]["target_matrix.weight"])
    # the first step's matrix gradient: rank 1's batch alone (rank 0 added zeros), as one process computes it
    _, task, trainer = ddp_ranks.trainer("hmlm_tiny_nce", tiny_data, *NCE_UNIQUE)
    batch = ddp_ranks.masked_lm_batch(task, rows=3, seed=1)
    trainer.train_step([batch])
    expected = ddp_ranks.gradients(trainer.get_criterion())["target_matrix.weight"]
    terms = network_terms(trainer.get_model(), batch["target"].numel()) + 8
    for rank in ranks:
        assert_close_computations(rank["first_grads"]["target_matrix.weight"], expected, terms=terms)


def test_option_errors_name_the_fix(tiny_data):
    cfg, task, model, criterion = build("hmlm_tiny", ("+criterion.cross_entropy=true",), tiny_data)
    with pytest.raises(ValueError, match=r"cross_entropy=true .* needs a model with an LM head.*roberta_small"):
        criterion(model, one_training_batch(cfg, task))
    cfg = load_config("hmlm_tiny", f"task.data={tiny_data}", "+criterion.targets=separate")
    with pytest.raises(ValueError, match=r"targets=separate needs criterion.target_dim"):
        task.build_criterion(cfg.criterion)
    cfg, task, model, criterion = build("hmlm_tiny_nce", ("criterion.target_dim=64",), tiny_data)
    with pytest.raises(ValueError, match=r"target_dim=64 does not match the model's hidden size 128: set .*=128"):
        criterion(model, one_training_batch(cfg, task))


@pytest.mark.parametrize("config", ["mlm_tiny_cwt_ce", "hmlm_tiny_nce"])
def test_hydra_train_learns_and_resumes(config, tiny_data, tmp_path):
    save_dir = tmp_path / "ckpt"
    common = [
        "--config-dir", REPO / "configs", "--config-name", config, f"task.data={tiny_data}",
        f"checkpoint.save_dir={save_dir}", "common.log_interval=4", "dataset.validate_interval_updates=0",
        "checkpoint.save_interval_updates=0", "lr_scheduler.warmup_updates=5", "optimization.lr=[0.003]",
    ]
    log = run_cli(["fairseq-hydra-train", *common, "optimization.max_update=20"])
    assert_learns(train_losses(log), margin=0.1)
    state = torch.load(save_dir / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    trainer = resume_with_fairseq_trainer(config, tiny_data, save_dir)
    assert trainer.get_num_updates() == 20
    for name, value in trainer.get_model().state_dict().items():
        assert torch.equal(value, state["model"][name]), name
    if config == "mlm_tiny_cwt_ce":
        # both terms are logged, `loss` is their sum; the LM head is the model's, the criterion has no state
        parts = re.findall(r"train_inner.*? loss=([\d.]+), cwt_loss=([\d.]+), ce_loss=([\d.]+)", log)
        assert len(parts) == 5
        assert all(abs(float(cwt) + float(ce) - float(total)) <= 0.002 for total, cwt, ce in parts), parts
        assert state["criterion"] is None and any("lm_head" in key for key in state["model"])
        return  # resuming a model-only checkpoint with the CLI: test_cli_training.py

    # the matrix is the criterion's: saved beside the model, which stays the plain headless model,
    # restored on resume, and optimized (fairseq's optimizer takes criterion parameters too)
    saved = state["criterion"]["target_matrix.weight"]
    assert saved.shape == state["model"]["encoder.sentence_encoder.embed_tokens.weight"].shape
    assert not any("target_matrix" in key for key in state["model"])
    restored = trainer.get_criterion().target_matrix.weight
    assert torch.equal(restored, saved)
    assert any(p is restored for p in trainer.optimizer.params)

    resumed = run_cli(["fairseq-hydra-train", *common, "optimization.max_update=22"])
    assert re.search(r"Loaded checkpoint .*checkpoint_last\.pt \(epoch \d+ @ 20 updates\)", resumed)
    assert last_num_updates(resumed) == 22


def resume_with_fairseq_trainer(config, data, save_dir):
    """What a resumed fairseq-train does: checkpoint_utils.load_checkpoint -> Trainer.load_checkpoint."""
    from fairseq import tasks
    from fairseq.trainer import Trainer

    cfg = load_config(config, f"task.data={data}", f"checkpoint.save_dir={save_dir}")
    task = tasks.setup_task(cfg.task)
    trainer = Trainer(cfg, task, task.build_model(cfg.model), task.build_criterion(cfg.criterion))
    assert trainer.load_checkpoint(str(save_dir / "checkpoint_last.pt")) is not None
    return trainer
