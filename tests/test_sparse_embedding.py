"""model.sparse_embedding_update with optimizer._name=lazy_adam: row-sparse gradients of the input embeddings
and lazy AdamW.

The documented semantics (fairseq_headless/sparse_embedding.py): a row touched at every step gets
exactly fairseq's dense AdamW update; a row a step does not touch keeps its parameters and moments;
a row touched again after skipped steps is updated from undecayed moments with this step's weight
decay only; bias correction uses the global step. Everything else (other parameters, the gradient
norm and clipping) is the dense run's.
"""

import inspect
import math
import re

import ddp_ranks
import pytest
import torch
from omegaconf import OmegaConf

from conftest import (BIN, REPO, assert_close_computations, build_task_and_model, load_config, network_terms,
                      rounding_bound, run_cli)
from test_models import one_training_batch
from helpers.training import TWO_PROCESSES, free_port, hydra_args

from fairseq import optim, options, tasks, utils
from fairseq.optim.adam import FairseqAdam
from fairseq.optim.fairseq_optimizer import FairseqOptimizer
from fairseq.trainer import Trainer
from fairseq_headless.lazy_adam import LazyAdam, lazy_adam_update_
from fairseq_headless.sparse_embedding import MARKER, OVERRIDES, check_training_setup

LR, BETAS, EPS, WD = 0.01, (0.9, 0.98), 1e-6, 0.1
# rows touched at each step (repeats included: the sparse gradient then has duplicates to sum)
STEPS = [[1, 2, 2, 5], [1, 5, 7, 1], [2, 1, 9]]
VOCAB, DIM = 12, 4


# What lazy_adam reads from the other sections of a whole config: one fp32 process.
FP32_ONE_PROCESS = {"fp16": False, "bf16": False, "memory_efficient_fp16": False, "memory_efficient_bf16": False,
                    "amp": False, "cpu": True, "distributed_world_size": 1, "ddp_backend": "pytorch_ddp",
                    "ddp_comm_hook": "none", "zero_sharding": "none", "use_bmuf": False}


def adam(params, name="lazy_adam"):
    """fairseq's optimizer registered as `name` (lazy_adam, or fairseq's own adam), built as fairseq builds it."""
    cfg = {"_name": name, "adam_betas": str(BETAS), "adam_eps": EPS, "weight_decay": WD,
           "use_old_adam": False, "fp16_adam_stats": False, "tpu": False, "lr": [LR]}
    return optim.build_optimizer(OmegaConf.create({**cfg, **(FP32_ONE_PROCESS if name == "lazy_adam" else {})}), params)


def sparse_grad(rows, step):
    generator = torch.Generator().manual_seed(step)
    values = torch.randn(len(rows), DIM, generator=generator)
    return torch.sparse_coo_tensor(torch.tensor([rows]), values, (VOCAB, DIM), check_invariants=True)


def lazy_reference(initial, grads):
    """The documented lazy AdamW, written out in float64 row by row."""
    p = initial.double().clone()
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    for step, grad in enumerate(grads, start=1):
        grad = grad.coalesce().double()
        for row, g in zip(grad.indices()[0].tolist(), grad.values()):
            m[row] = BETAS[0] * m[row] + (1 - BETAS[0]) * g
            v[row] = BETAS[1] * v[row] + (1 - BETAS[1]) * g * g
            step_size = LR * math.sqrt(1 - BETAS[1] ** step) / (1 - BETAS[0] ** step)
            p[row] = p[row] * (1 - WD * LR) - step_size * m[row] / (v[row].sqrt() + EPS)
    return p, m, v


def test_lazy_adam_matches_the_documented_semantics():
    initial = torch.randn(VOCAB, DIM, generator=torch.Generator().manual_seed(0))
    sparse_param = torch.nn.Parameter(initial.clone())
    dense_param = torch.nn.Parameter(initial.clone())
    sparse_opt, dense_opt = adam([sparse_param]), adam([dense_param], "adam")
    assert type(sparse_opt) is LazyAdam and type(dense_opt) is FairseqAdam
    grads = [sparse_grad(rows, step) for step, rows in enumerate(STEPS)]
    touched = set()
    for grad, rows in zip(grads, STEPS):
        before = sparse_param.detach().clone()
        sparse_param.grad, dense_param.grad = grad, grad.to_dense()
        sparse_opt.step()  # LazyAdam.step: lazy for the sparse gradient
        dense_opt.step()
        assert sparse_param.grad is grad  # handed back after the step, as fairseq's own step leaves it
        untouched = [r for r in range(VOCAB) if r not in rows]
        assert torch.equal(sparse_param[untouched], before[untouched])  # not even weight decay
        touched |= set(rows)
    # row 1 is touched at every step: the dense AdamW update, computed by other kernels (a dozen
    # elementwise roundings per step, three steps, the duplicates of step 2 summed)
    assert_close_computations(sparse_param[1], dense_param[1], terms=12 * len(STEPS) + 2)
    # the dense run shrank every row by weight decay; the never-touched ones kept their values here
    never = [r for r in range(VOCAB) if r not in touched]
    assert torch.equal(sparse_param[never], initial[never]) and not torch.equal(dense_param[never], initial[never])
    # every row against the float64 lazy reference (row 2 skips step 2, row 7 enters at step 2, ...)
    p, m, v = lazy_reference(initial, grads)
    state = sparse_opt.optimizer.state[sparse_param]
    # float32 against float64, row by row: each value is a dozen elementwise roundings per step
    assert_close_computations(sparse_param, p, terms=12 * len(STEPS) + 2)
    assert_close_computations(state["exp_avg"], m, terms=3 * len(STEPS) + 2)
    assert_close_computations(state["exp_avg_sq"], v, terms=3 * len(STEPS) + 2)
    # same state layout as the dense optimizer: a checkpoint loads into either
    dense_state = dense_opt.optimizer.state[dense_param]
    assert state.keys() == dense_state.keys() and state["step"] == dense_state["step"] == len(STEPS)


def test_lazy_adam_update_of_half_precision_parameters_reads_and_writes_only_touched_rows():
    param = torch.nn.Parameter(torch.randn(VOCAB, DIM).to(torch.bfloat16))
    reference = torch.nn.Parameter(param.detach().float().clone())
    grad = sparse_grad([3, 4, 3], 0)
    state, state32 = {}, {}
    lazy_adam_update_(param, grad.to(torch.bfloat16), state, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD, scale=4.0)
    lazy_adam_update_(reference, grad.to(torch.bfloat16).float(), state32, lr=LR, betas=BETAS, eps=EPS,
                      weight_decay=WD, scale=4.0)
    assert state["exp_avg"].dtype == torch.float32  # fp32 moments, as fairseq's Adam keeps them
    torch.testing.assert_close(param.detach().float(), reference.detach().to(torch.bfloat16).float())


def test_clipping_and_scaling_treat_a_sparse_gradient_as_its_dense_twin():
    grad = sparse_grad([1, 2, 2, 5, 1], 3)  # uncoalesced, with duplicates
    sparse_param, dense_param = torch.nn.Parameter(torch.zeros(VOCAB, DIM)), torch.nn.Parameter(torch.zeros(VOCAB, DIM))
    other_s, other_d = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(3))
    other_s.grad, other_d.grad = torch.full((3,), 2.0), torch.full((3,), 2.0)
    sparse_param.grad, dense_param.grad = grad, grad.to_dense()
    optimizer, dense_optimizer = adam([sparse_param, other_s]), adam([dense_param, other_d], "adam")
    norm_s = optimizer.clip_grad_norm(1.0)  # what fairseq's Trainer calls
    norm_d = dense_optimizer.clip_grad_norm(1.0)
    torch.testing.assert_close(norm_s, norm_d)
    assert sparse_param.grad.is_sparse and norm_d > 1.0
    torch.testing.assert_close(sparse_param.grad.to_dense(), dense_param.grad)
    torch.testing.assert_close(other_s.grad, other_d.grad)
    optimizer.multiply_grads(0.5)  # fairseq's normalisation by the sample size / fp16 unscaling
    torch.testing.assert_close(sparse_param.grad.to_dense(), dense_param.grad * 0.5)
    torch.testing.assert_close(other_s.grad, other_d.grad * 0.5)


def _sparse_param():
    param = torch.nn.Parameter(torch.zeros(6, 2))
    param.grad = torch.sparse_coo_tensor(torch.tensor([[1, 4, 1]]), torch.ones(3, 2), (6, 2), check_invariants=True)
    return param


# What lazy_adam overrides, and why: fairseq's own code for these steps still fails on sparse gradients (if one
# of these guards fails after a fairseq upgrade, re-check whether the override is still needed), and fairseq's
# Trainer and its precision wrappers still reach gradients through the methods lazy_adam overrides.

def test_fairseq_still_cannot_clip_sparse_gradients():
    assert "torch.norm(grads[0], p=2, dtype=torch.float32)" in inspect.getsource(utils.clip_grad_norm_)
    with pytest.raises(RuntimeError, match="sparse"):
        adam([_sparse_param()], "adam").clip_grad_norm(1.0)


def test_fairseqs_sparse_branch_of_multiply_grads_still_does_nothing():
    assert "p.grad.data.mul_(" in inspect.getsource(FairseqOptimizer.multiply_grads)
    param = _sparse_param()
    adam([param], "adam").multiply_grads(0.5)
    assert param.grad.to_dense().sum() == 6.0  # unchanged: the bug LazyAdam.multiply_grads avoids
    adam([param]).multiply_grads(0.5)
    assert param.grad.to_dense().sum() == 3.0


def test_fairseqs_adam_still_refuses_sparse_gradients():
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        adam([_sparse_param()], "adam").step()
    # the delegation LazyAdam.step relies on: the wrapped torch optimizer's step, and the scale
    source = inspect.getsource(FairseqOptimizer.step)
    assert "self.optimizer.step(closure" in source and "self.multiply_grads(1.0 / scale)" in source


def test_fairseq_reaches_gradients_through_the_optimizers_methods_and_nothing_of_it_is_patched():
    from fairseq.optim.amp_optimizer import AMPOptimizer
    from fairseq.optim.fp16_optimizer import _MemoryEfficientFP16OptimizerMixin
    from fairseq.tasks import FairseqTask

    train_step = inspect.getsource(Trainer.train_step)
    assert "self.optimizer.multiply_grads(" in train_step and "self.task.optimizer_step(" in train_step
    assert "optimizer.step()" in inspect.getsource(FairseqTask.optimizer_step)
    assert "return self.optimizer.clip_grad_norm(" in inspect.getsource(Trainer.clip_grad_norm)
    # the wrappers of the precisions lazy_adam supports call the wrapped optimizer's methods
    wrapper = inspect.getsource(_MemoryEfficientFP16OptimizerMixin)
    for call in ("self.wrapped_optimizer.multiply_grads(", "self.wrapped_optimizer.clip_grad_norm(",
                 "self.wrapped_optimizer.step("):
        assert call in wrapper, call
    assert "self.fp32_optimizer.clip_grad_norm(" in inspect.getsource(AMPOptimizer.clip_grad_norm)
    # the plugin registers an optimizer; fairseq's own functions are fairseq's
    assert utils.clip_grad_norm_.__module__ == "fairseq.utils" and FairseqAdam.step is FairseqOptimizer.step
    assert FairseqOptimizer.multiply_grads.__module__ == "fairseq.optim.fairseq_optimizer"
    assert Trainer._build_optimizer.__module__ == "fairseq.trainer"


def test_a_marked_parameter_whose_gradient_arrives_dense_is_an_error():
    param = torch.nn.Parameter(torch.zeros(VOCAB, DIM))
    setattr(param, MARKER, True)
    param.grad = torch.ones(VOCAB, DIM)
    with pytest.raises(ValueError, match="reached optimizer._name=lazy_adam dense") as error:
        adam([param]).step()
    assert "sparse_embedding_update" in str(error.value) and torch.equal(param, torch.zeros(VOCAB, DIM))


def trainer_step(config, data, sparse, *overrides):
    torch.manual_seed(0)
    cfg = load_config(config, f"task.data={data}", "common.cpu=true", "optimization.lr=[0.01]",
                      "lr_scheduler.warmup_updates=0", *(OVERRIDES if sparse else ["model.sparse_embedding_update=false"]),
                      *overrides)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    trainer = Trainer(cfg, task, model, task.build_criterion(cfg.criterion))
    initial = {k: p.detach().clone() for k, p in model.named_parameters()}
    log = trainer.train_step([one_training_batch(cfg, task)])
    return model, initial, log


@pytest.mark.parametrize("config", ["hmlm_tiny", "hlm_tiny", "hlm_pythia_tiny"])
def test_one_fairseq_trainer_step_sparse_equals_dense_on_touched_rows(config, tiny_data):
    dense, initial, dense_log = trainer_step(config, tiny_data, False)
    sparse, initial_s, sparse_log = trainer_step(config, tiny_data, True)
    embedding = sparse.input_embeddings()
    name = next(k for k, p in sparse.named_parameters() if p is embedding.weight)
    assert embedding.sparse and embedding.weight.grad.is_sparse  # the gradient fairseq saw was sparse
    assert not dense.input_embeddings().sparse  # off by default: the paper's setting
    # the same forward computation repeated (sparse=True changes only the backward): bit for bit
    assert sparse_log["loss"] == dense_log["loss"]
    for key in initial:  # the same seeded initialisation repeated: bit for bit
        assert torch.equal(initial_s[key], initial[key]), key

    cfg = load_config(config, f"task.data={tiny_data}")
    lr, wd = 0.01, cfg.optimizer.weight_decay  # lr: overridden, no warmup
    beta2, eps = eval(cfg.optimizer.adam_betas)[1], cfg.optimizer.adam_eps
    positions = one_training_batch(cfg, tasks.setup_task(cfg.task))["target"].numel()
    params = sum(p.numel() for p in dense.parameters())
    # The sparse and the dense embedding gradient sum each row's positions in another order (at most
    # `positions` terms). That moves the gradient norm, hence the clip coefficient, by at most
    # (positions + log2(params) for torch's cascade reductions) eps relative, and Adam's first step,
    # lr * g / (|g| + eps'), moves by at most lr times that relative change; then p itself is rounded.
    clip_terms = positions + math.ceil(math.log2(params)) + 8
    for key, p in sparse.named_parameters():
        if key != name:
            q = dict(dense.named_parameters())[key]
            bound = rounding_bound(clip_terms, lr) + rounding_bound(2, q.abs().max().item())
            torch.testing.assert_close(p, q, rtol=0, atol=bound, msg=lambda m: f"{key}: {m} (bound {bound:.2e})")

    after_s, after_d = embedding.weight.detach(), dense.input_embeddings().weight.detach()
    touched = (after_s != initial[name]).any(dim=1)
    assert 0 < touched.sum() < len(touched)
    # the gradients fairseq stepped with: the same sums over positions in another order
    grad_s, grad_d = embedding.weight.grad.to_dense(), dense.input_embeddings().weight.grad
    assert_close_computations(grad_s, grad_d, terms=clip_terms)
    # touched rows: the dense update. Adam's first step is lr * g / (|g| + eps'), eps' = eps / sqrt(1 - beta2),
    # whose slope in g is lr * eps' / (|g| + eps')^2: the gradient bound through that slope, then p's rounding
    grad_bound = rounding_bound(clip_terms, grad_d.abs().max().item())
    eps_ = eps / math.sqrt(1 - beta2)
    slope = lr * eps_ / (grad_d[touched].abs() + eps_) ** 2
    bound = slope * grad_bound + rounding_bound(4, after_d[touched].abs().max().item())
    difference = (after_s[touched] - after_d[touched]).abs()
    assert (difference <= bound).all(), (difference - bound).max()
    # untouched rows: unchanged, where dense AdamW applied its weight decay (p * (1 - lr wd), zero moments)
    assert torch.equal(after_s[~touched], initial[name][~touched])
    assert_close_computations(after_d[~touched], initial[name][~touched] * (1 - lr * wd), terms=3)


def test_bf16_memory_efficient_training_with_sparse_updates_runs(tiny_data):
    model, initial, log = trainer_step("hlm_tiny", tiny_data, True, "common.bf16=true",
                                       "common.memory_efficient_bf16=true")
    assert model.input_embeddings().weight.dtype == torch.bfloat16 and math.isfinite(log["loss"])
    assert model.input_embeddings().weight.grad.is_sparse


def fairseq_train_config(args):
    """convert_namespace_to_omegaconf(args), as fairseq-train runs it in a fresh process: with hydra's 1.1
    behaviour, which fairseq's call needs (this process has composed configs with version_base=None)."""
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from hydra import version

    saved = version.VersionBase.instance().getbase()
    version.setbase("1.1")
    try:
        return convert_namespace_to_omegaconf(args)
    finally:
        version.VersionBase.instance().setbase(saved)


def test_the_switch_in_hydra_and_argparse(tiny_data):
    for config in ("hmlm_tiny", "hlm_tiny", "hlm_small", "hlm_pythia_tiny"):
        cfg = load_config(config, f"task.data={tiny_data}")
        assert not cfg.model.get("sparse_embedding_update", False)  # the paper's setting stays the default
    for arch, task in (("headless_roberta_tiny", "masked_lm"), ("headless_gpt2_tiny", "language_modeling"),
                       ("headless_pythia_tiny", "language_modeling")):
        parser = options.get_training_parser()
        args = options.parse_args_and_arch(parser, [str(tiny_data), "--user-dir", str(REPO / "fairseq_headless"),
                                                    "--task", task, "--arch", arch, "--sparse-embedding-update",
                                                    "--optimizer", "lazy_adam", "--cpu"])
        assert args.sparse_embedding_update is True
        model = tasks.setup_task(args).build_model(args)
        assert model.input_embeddings().sparse
        # fairseq-train's path: lazy_adam's config takes the other options from the command line
        optimizer = optim.build_optimizer(fairseq_train_config(args).optimizer, list(model.parameters()))
        assert type(optimizer) is LazyAdam
        args.fp16 = True
        with pytest.raises(ValueError, match="FP16Optimizer"):
            optim.build_optimizer(fairseq_train_config(args).optimizer, list(model.parameters()))


@pytest.mark.parametrize("overrides,message", [
    (["optimizer._name=adam"], "needs optimizer._name=lazy_adam"),
    (["optimizer._name=sgd"], "needs optimizer._name=lazy_adam"),
    (["common.fp16=true"], "add common.memory_efficient_fp16=true"),
    (["common.fp16=true", "common.memory_efficient_fp16=true"], "use common.bf16=true"),  # CPU only
    (["distributed_training.distributed_world_size=2", "distributed_training.ddp_backend=legacy_ddp"],
     "use ddp_backend=pytorch_ddp"),
    (["distributed_training.zero_sharding=os"], "ZeRO"),
])
def test_setups_that_cannot_take_the_sparse_gradient_are_refused_with_the_fix(overrides, message, tiny_data):
    cfg = load_config("hmlm_tiny", f"task.data={tiny_data}", "common.cpu=true", *OVERRIDES, *overrides)
    with pytest.raises(ValueError, match=message) as error:
        check_training_setup(cfg)
    assert "sparse_embedding_update" in str(error.value)
    check_training_setup(load_config("hmlm_tiny", f"task.data={tiny_data}", "common.cpu=true", *OVERRIDES))  # fine
    # the option off (the paper's default): nothing to check, whatever the setup
    check_training_setup(load_config("hmlm_tiny", f"task.data={tiny_data}", "common.cpu=true", *overrides))
    if "optimizer._name=" not in overrides[0]:  # lazy_adam refuses the same setups itself, under any launcher
        with pytest.raises(ValueError, match=message) as error:
            optim.build_optimizer(cfg.optimizer, [torch.nn.Parameter(torch.zeros(2))])
        assert "optimizer._name=lazy_adam" in str(error.value)


def test_fairseq_hydra_train_refuses_plain_adam_with_one_error_line(tiny_data, tmp_path):
    """fairseq's adam cannot see the model's option: the configs' hydra callback refuses the pair before training."""
    import subprocess

    proc = subprocess.run(
        [str(BIN / "fairseq-hydra-train"), *map(str, hydra_args("hmlm_tiny", tiny_data, tmp_path, "common.cpu=true",
                                                                 "model.sparse_embedding_update=true"))],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
    assert "needs optimizer._name=lazy_adam" in errors[0] and "not adam" in errors[0]
    assert not (tmp_path / "checkpoint_last.pt").exists()


def test_fairseq_trainer_refuses_fp16optimizer_before_training(tiny_data):
    # bf16: fairseq's FP16Optimizer, without the flat buffer, which fairseq builds on CUDA only; with plain fp16
    # on a GPU, lazy_adam is built (and refuses) the same way around the flat fp32 copy
    cfg, task, model = build_task_and_model("hmlm_tiny", tiny_data, "common.cpu=true", "common.bf16=true", *OVERRIDES)
    trainer = Trainer(cfg, task, model, task.build_criterion(cfg.criterion))
    with pytest.raises(ValueError, match="FP16Optimizer"):
        trainer.optimizer  # built by fairseq: lazy_adam refuses the flattening wrapper around it


def test_two_process_training_with_pytorch_ddp_and_sparse_gradients(tiny_data, tmp_path):
    log = run_cli([
        "torchrun", "--nproc_per_node=2", f"--master_port={free_port()}", BIN / "fairseq-hydra-train",
        *hydra_args("hmlm_tiny", tiny_data, tmp_path, "optimization.max_update=10", *TWO_PROCESSES, *OVERRIDES),
    ])
    # run_cli asserts a clean exit: fairseq checks after every all-reduce that both ranks hold the same
    # gradient norm, and stops with an error if not
    assert "distributed init (rank 1)" in log and "num_updates=10" in log
    # the gradient went through the plugin's hook (registered by fairseq_patches on fairseq's DDP), the
    # path NCCL takes too; fairseq logs INFO on rank 0 only: its registration and its calls 1, 2, 4, 8
    assert log.count("DDP all-reduces them through the sparse all-reduce hook") == 1
    calls = re.findall(r"sparse all-reduce hook: call (\d+), path (?:gather|dense), rows per rank \[\d+, \d+\]", log)
    assert calls == ["1", "2", "4", "8"]


# Global negatives: 2 ranks then compute the loss of one process on the joined batch (the paper's local
# negatives would give each rank its own denominator). Adam's eps = 1: the update lr * m / (sqrt(v) + 1)
# moves by at most ~2 lr per unit of gradient, so two computations whose gradients differ by rounding give
# parameters that differ by lr times that (with the default eps, a gradient entry near 0 is divided by
# ~eps, and its rounding with it).
HOOK_OVERRIDES = (*OVERRIDES, "criterion.negatives_scope=global", "optimizer.adam_eps=1.0",
                  "optimization.lr=[0.01]", "optimization.clip_norm=0.0")  # no clipping: a gradient 2x off shows
HOOK_UPDATES = 3


def ddp_sparse_updates(rank, world_size, data, modes):
    """Per mode of the hook: a fresh fairseq Trainer (DDP over gloo), HOOK_UPDATES updates on this rank's
    half of each joined batch."""
    results = {}
    for mode in modes:
        _, task, trainer = ddp_ranks.trainer("hmlm_tiny", data, *HOOK_OVERRIDES, world_size=world_size)
        ddp = trainer.model.module  # fairseq's ModuleProxyWrapper around torch's DDP
        state = ddp.sparse_all_reduce  # set by the hook's registration
        state.mode = mode
        pad = task.source_dictionary.pad()
        for step in range(HOOK_UPDATES):
            trainer.train_step([ddp_ranks.halves(ddp_ranks.masked_lm_batch(task, seed=step), pad)[rank]])
            if step == 0:
                first = ddp_ranks.gradients(trainer.get_model())
                sparse = trainer.get_model().input_embeddings().weight.grad.is_sparse
        results[mode] = {"params": ddp_ranks.parameters(trainer.get_model()), "first_grads": first,
                         "sparse": sparse, "ddp": type(ddp).__name__, "calls": state.calls,
                         "paths": dict(state.paths), "last": state.last}
    return results


@pytest.fixture(scope="module")
def ddp_sparse_runs(tiny_data, tmp_path_factory):
    return ddp_ranks.run_ranks(ddp_sparse_updates, 2, tmp_path_factory.mktemp("ddp_sparse"), data=tiny_data,
                               modes=("gather", "dense"))


@pytest.mark.parametrize("mode", ["gather", "dense"])
def test_two_ddp_ranks_through_the_sparse_all_reduce_hook_equal_one_process(mode, ddp_sparse_runs, tiny_data):
    ranks = [run[mode] for run in ddp_sparse_runs]
    # the hook is what DDP ran: registered by fairseq_patches on the DDP fairseq built, once per update
    for rank in ranks:
        assert rank["ddp"] == "CpuSafeDistributedDataParallel" and rank["sparse"]
        assert rank["calls"] == HOOK_UPDATES and rank["paths"][mode] == HOOK_UPDATES
    assert ranks[0]["last"]["rows_per_rank"] == ranks[1]["last"]["rows_per_rank"]  # every rank knows every count
    # the same all-reduced gradient and the same Adam step on both ranks: bit for bit
    for name, value in ranks[0]["params"].items():
        assert torch.equal(value, ranks[1]["params"][name]), name

    # one process, the joined batches
    _, task, trainer = ddp_ranks.trainer("hmlm_tiny", tiny_data, *HOOK_OVERRIDES)
    model = trainer.get_model()
    initial, largest_gradient = ddp_ranks.parameters(model), 0.0
    for step in range(HOOK_UPDATES):
        trainer.train_step([ddp_ranks.masked_lm_batch(task, seed=step)])
        largest_gradient = max([largest_gradient, *(g.abs().max().item() for g in ddp_ranks.gradients(model).values())])
        if step == 0:
            first = ddp_ranks.gradients(model)
    # The gradient fairseq steps with: each rank's half summed, against one sum over the joined batch (the
    # network's sums, a few roundings more: the division by W, the normalisation by the sample size).
    terms = network_terms(model, ddp_ranks.masked_lm_batch(task)["target"].numel()) + 8
    # Normwise: some are 0 in exact arithmetic (attention's key bias), so the scale is the largest of all.
    assert first.keys() == ranks[0]["first_grads"].keys()
    scale = max(grad.abs().max().item() for grad in first.values())
    for name, grad in first.items():
        assert_close_computations(ranks[0]["first_grads"][name], grad, terms=terms, scale=scale, msg=name)
    bounds = assert_parameters_within_rounding(ranks[0]["params"], ddp_ranks.parameters(model), updates=HOOK_UPDATES,
                                               terms=terms, largest_gradient=largest_gradient)
    name = "encoder.sentence_encoder.embed_tokens.weight"  # not vacuous: the table moved far more
    assert (model.input_embeddings().weight - initial[name]).abs().max() > 10 * bounds[name]


def assert_parameters_within_rounding(actual, expected, *, updates, terms, largest_gradient, lr=0.01):
    """Parameters after ``updates`` updates under HOOK_OVERRIDES whose gradients were computed in two ways
    (``terms`` roundings, normwise at the largest gradient element of any update); returns the bounds.

    A gradient rounding difference d at update t moves the parameters by at most 2 lr d at every later update
    (through m and v, eps = 1), i.e. lr N (N + 1) d over N updates; plus each update's rounding of the
    parameters. The gradients at later updates are taken at parameters that differ by that much: a
    second-order effect, left out.
    """
    assert actual.keys() == expected.keys()
    bounds = {}
    for name, value in expected.items():
        bounds[name] = (lr * updates * (updates + 1) * rounding_bound(terms, largest_gradient)
                        + rounding_bound(4 * updates, value.abs().max().item()))
        difference = (actual[name] - value).abs().max().item()
        assert difference <= bounds[name], (name, difference, bounds[name])
    return bounds


def test_the_hook_takes_the_exchange_that_moves_fewer_bytes():
    from fairseq_headless.sparse_all_reduce import choose_path, exchange_bytes

    # docs/distributed.md's table: (V, D, distinct rows n), fp16
    pythia, small8k = (50_304, 512, 5_736), (8_000, 512, 2_320)
    assert exchange_bytes(8, 5_736, 50_304, 512, 2) == {"gather": 8 * 5_736 * (512 * 2 + 8),
                                                         "dense": 2 * 7 * 50_304 * (512 * 2 + 1) // 8}
    assert [choose_path("auto", w, pythia[2], *pythia[:2], 2) for w in (2, 8, 16, 17)] == ["gather"] * 3 + ["dense"]
    assert [choose_path("auto", w, small8k[2], *small8k[:2], 2) for w in (2, 5, 6, 8)] == ["gather"] * 2 + ["dense"] * 2
    assert choose_path("auto", 1, 10, 100, 4, 4) == "dense"  # one rank: densifying moves nothing
    assert choose_path("gather", 8, small8k[2], *small8k[:2], 2) == "gather"  # a forced mode wins


# Rows the hook must keep or add nothing for. Unit level: the hook's function on 2 gloo processes, each
# rank's gradient given. REDUCED[case] = (rank 0's rows, rank 1's rows); row 3 gets opposite values.
REDUCED = {"opposite signs": ([3, 5, 3], [8, 3]), "one rank empty": ([2, 4, 2], []),
           "explicit zero rows": ([6], [6, 9]), "both empty": ([], [])}


def rank_gradient(case, rank):
    rows = REDUCED[case][rank]
    values = torch.randn(len(rows), DIM, generator=torch.Generator().manual_seed(10 * rank + len(rows)))
    if case == "opposite signs":  # row 3: +g twice on rank 0 (summed when coalesced), -2g on rank 1
        g = torch.tensor([0.75, -1.5, 3.0, 0.1875])  # 2g exact
        values[[i for i, r in enumerate(rows) if r == 3]] = g if rank == 0 else -2 * g
    if case == "explicit zero rows":
        values.zero_()
    rows = torch.tensor(rows, dtype=torch.long)[None]
    return torch.sparse_coo_tensor(rows, values, (VOCAB, DIM), check_invariants=True)


def reduce_rank_gradients(rank, world_size, modes):
    from fairseq_headless.sparse_all_reduce import SparseAllReduceState, all_reduce_sparse

    results = {}
    for mode in modes:
        state = SparseAllReduceState(mode=mode)
        for case in REDUCED:
            reduced = all_reduce_sparse(rank_gradient(case, rank), state).coalesce()
            results[(mode, case)] = (reduced.indices()[0], reduced.values(), state.last.get("rows_per_rank"))
    return results


@pytest.fixture(scope="module")
def reduced_by_two_ranks(tmp_path_factory):
    return ddp_ranks.run_ranks(reduce_rank_gradients, 2, tmp_path_factory.mktemp("hook_rows"),
                               modes=("gather", "dense"))


@pytest.mark.parametrize("mode", ["gather", "dense"])
@pytest.mark.parametrize("case", list(REDUCED))
def test_the_hook_keeps_every_touched_row_and_a_rank_without_rows_joins(case, mode, reduced_by_two_ranks):
    results = [ranks[(mode, case)] for ranks in reduced_by_two_ranks]
    rows, values, counts = results[0]
    for other in results[1:]:  # every rank holds the same gradient: the same computation, bit for bit
        assert torch.equal(other[0], rows) and torch.equal(other[1], values) and other[2] == counts
    union = sorted(set(REDUCED[case][0]) | set(REDUCED[case][1]))
    assert rows.tolist() == union  # zero-valued rows included
    assert counts == [len(set(r)) for r in REDUCED[case]]
    expected = (rank_gradient(case, 0).double() + rank_gradient(case, 1).double()).to_dense() / 2
    assert_close_computations(values, expected[union], terms=3)  # the duplicate's sum, the ranks' sum, / W
    if case == "opposite signs":
        assert values[union.index(3)].eq(0).all()  # g + g - 2g: exactly 0, and still there


# Through fairseq's Trainer (DDP over gloo, the hook forced to each path): 3 updates, 2 ranks against one
# process on the joined batch, each case at the second update (the third: both ranks' batches real again):
# * padding: rank 1's micro-batch is all padding, so its embedding gradient holds no row (nn.Embedding drops
#   padding_idx);
# * zero row: a token only at the last input position of a causal model, whose target is padding: nothing
#   depends on that position, so its row's gradient is exactly 0, but touched: lazy Adam still moves it
#   (momentum of the first update, weight decay);
# * dummy: rank 1 is out of batches and fairseq replays its first one (loss x 0): no row of it may move.
CASE_CONFIGS = {"padding": "hmlm_tiny", "zero row": "hlm_tiny", "dummy": "hmlm_tiny"}
CASE_UPDATES, SPECIAL = 3, 1


def zero_row_batch(task, step, rows=4, length=16):
    """A causal-LM batch; the last id of the dictionary occurs as an input and a target, except at update
    SPECIAL: only as the last input of the last row, where every target is padding."""
    dictionary = task.source_dictionary
    last = len(dictionary) - 1
    generator = torch.Generator().manual_seed(step)
    tokens = torch.randint(dictionary.nspecial, last, (rows, length), generator=generator)
    target = torch.randint(dictionary.nspecial, last, (rows, length), generator=generator)
    if step != SPECIAL:
        tokens[:, 3], target[:, 5] = last, last
    else:
        tokens[-1, -1], target[:, -1] = last, dictionary.pad()
    return {"net_input": {"src_tokens": tokens, "src_lengths": torch.full((rows,), length)}, "target": target,
            "ntokens": int(target.ne(dictionary.pad()).sum()), "nsentences": rows}


def case_samples(case, task, step):
    """(one process's sample, the two ranks' samples) at update ``step`` of ``case``; {} = out of batches."""
    pad = task.source_dictionary.pad()
    joined = zero_row_batch(task, step) if case == "zero row" else ddp_ranks.masked_lm_batch(task, seed=step)
    if case == "padding" and step == SPECIAL:
        joined["net_input"]["src_tokens"][2:] = pad
        joined["target"][2:] = pad
        joined["ntokens"] = int(joined["target"].ne(pad).sum())
    halves = ddp_ranks.halves(joined, pad)
    if case == "dummy" and step == SPECIAL:
        return halves[0], [halves[0], {}]
    return joined, halves


def touched_rows(sample, pad):
    ids = torch.cat([sample["net_input"]["src_tokens"].flatten(), sample["target"].flatten()])
    return set(ids[ids.ne(pad)].tolist())


def ddp_sparse_cases(rank, world_size, data, modes):
    results = {}
    for mode in modes:
        for case, config in CASE_CONFIGS.items():
            _, task, trainer = ddp_ranks.trainer(config, data, *HOOK_OVERRIDES, world_size=world_size)
            state = trainer.model.module.sparse_all_reduce
            state.mode = mode
            params, rows = [], []
            for step in range(CASE_UPDATES):
                sample = case_samples(case, task, step)[1][rank]
                if step == 0:
                    trainer.reset_dummy_batch(sample)  # fairseq: the epoch's first batch, replayed when out
                trainer.train_step([sample])
                params.append(ddp_ranks.parameters(trainer.get_model()))
                rows.append(state.last["rows_per_rank"])
            results[(mode, case)] = {"params": params, "rows_per_rank": rows, "paths": dict(state.paths)}
    return results


@pytest.fixture(scope="module")
def ddp_case_runs(tiny_data, tmp_path_factory):
    return ddp_ranks.run_ranks(ddp_sparse_cases, 2, tmp_path_factory.mktemp("ddp_cases"), data=tiny_data,
                               modes=("gather", "dense"))


@pytest.fixture(scope="module")
def one_process_cases(tiny_data):
    results = {}
    for case, config in CASE_CONFIGS.items():
        _, task, trainer = ddp_ranks.trainer(config, tiny_data, *HOOK_OVERRIDES)
        model = trainer.get_model()
        table = model.input_embeddings().weight
        params, largest_gradient, samples = [], 0.0, []
        for step in range(CASE_UPDATES):
            samples.append(case_samples(case, task, step))
            trainer.train_step([samples[-1][0]])
            params.append(ddp_ranks.parameters(model))
            largest_gradient = max([largest_gradient, *(g.abs().max().item()
                                                        for g in ddp_ranks.gradients(model).values())])
            if step == SPECIAL:
                special_grad = table.grad.coalesce()
        results[case] = {
            "params": params, "largest_gradient": largest_gradient, "samples": samples,
            "table": next(name for name, p in model.named_parameters() if p is table),
            "special_grad": special_grad, "pad": task.source_dictionary.pad(), "vocab": table.size(0),
            "terms": network_terms(model, samples[0][0]["target"].numel()) + 8,
        }
    return results


@pytest.mark.parametrize("mode", ["gather", "dense"])
@pytest.mark.parametrize("case", list(CASE_CONFIGS))
def test_two_ranks_equal_one_process_with_an_empty_rank_a_zero_row_or_a_dummy_batch(
        case, mode, ddp_case_runs, one_process_cases):
    ranks = [run[(mode, case)] for run in ddp_case_runs]
    one = one_process_cases[case]
    assert ranks[0]["paths"][mode] == ranks[1]["paths"][mode] == CASE_UPDATES
    assert ranks[0]["rows_per_rank"] == ranks[1]["rows_per_rank"]
    for step in range(CASE_UPDATES):
        for name, value in ranks[0]["params"][step].items():  # the same computation on both ranks
            assert torch.equal(value, ranks[1]["params"][step][name]), name
    bounds = assert_parameters_within_rounding(ranks[0]["params"][-1], one["params"][-1], updates=CASE_UPDATES,
                                               terms=one["terms"], largest_gradient=one["largest_gradient"])
    table = one["table"]
    before, after = ranks[0]["params"][SPECIAL - 1][table], ranks[0]["params"][SPECIAL][table]
    if case == "zero row":
        last = one["vocab"] - 1
        grad = one["special_grad"]  # one process: the row is in the gradient, exactly 0
        assert last in grad.indices()[0].tolist() and grad.to_dense()[last].eq(0).all()
        for params in (one["params"], ranks[0]["params"]):  # and it moved, far beyond rounding
            moved = (params[SPECIAL][table][last] - params[SPECIAL - 1][table][last]).abs().max()
            assert moved > 10 * bounds[table], (moved, bounds[table])
    if case == "dummy":
        # the replayed batch's rows that rank 0's batch does not touch: not even written
        replayed = (touched_rows(one["samples"][0][1][1], one["pad"])
                    - touched_rows(one["samples"][SPECIAL][0], one["pad"]))
        assert replayed and torch.equal(after[sorted(replayed)], before[sorted(replayed)])
    rows_per_rank = ranks[0]["rows_per_rank"][SPECIAL]  # rank 1's gradient held no row
    assert rows_per_rank[0] > 0 and (rows_per_rank[1] == 0) == (case in ("padding", "dummy"))
