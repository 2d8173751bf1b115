"""Every config of configs/ composes through hydra, builds its model, and has the
closed-form parameter count of its architecture; twins differ only where they should;
the causal fine-tuning configs (*_ft) follow §4.2; the ablation configs (Tab.6) differ
from the CWT config they ablate only in their objective; the README's CPU line makes every paper config a
short first run on a machine without GPU."""

import shlex
from pathlib import Path

import pytest
import yaml

from conftest import REPO, build_task_and_model, load_config

from fairseq_headless.launch import CPU_OVERRIDES, check_config
from fairseq_headless.models.shapes import SHAPES as TABLE
from fairseq_headless.cli import InputError

CONFIGS = sorted(p.stem for p in (REPO / "configs").glob("*.yaml"))
FINETUNING = [name for name in CONFIGS if name.endswith("_ft")]  # causal fine-tuning of a headless decoder
# Tab.6's ablation rows -> the CWT config each one mirrors
ABLATIONS = {
    "mlm_small_cwt_ce": "hmlm_small", "hmlm_small_nce": "hmlm_small",
    "mlm_tiny_cwt_ce": "hmlm_tiny", "hmlm_tiny_nce": "hmlm_tiny",
}
TWINS = [(name, name[1:]) for name in CONFIGS
         if name.startswith("h") and name not in FINETUNING and name not in ABLATIONS]

# (layers, dim, heads, ffn) of each run's architecture (paper App. D), written here from the paper and
# not read from fairseq_headless/models/shapes.py, which is checked against it
SHAPES = {
    "mlm_base": (12, 768, 12, 3072), "mlm_small": (4, 512, 8, 2048), "mlm_multilingual": (6, 768, 12, 3072),
    "mlm_tiny": (2, 128, 2, 512), "lm_small": (3, 192, 3, 768), "lm_tiny": (2, 128, 2, 512),
    "lm_pythia70m": (6, 512, 8, 2048), "lm_pythia_tiny": (2, 128, 2, 512),
}


def shape_of(name):
    """The SHAPES entry of a config: hlm_x, hlm_x_ft and the ablations of hmlm_x are shaped as (m)lm_x."""
    name = name.removesuffix("_ft").removesuffix("_nce").removesuffix("_cwt_ce")
    return name[1:] if name.startswith("h") else name


def expected_parameters(name, cfg, vocab):
    headless = cfg.model._name.startswith("headless_")  # a fine-tuning config is vanilla, as mlm_*_cwt_ce
    layers, dim, _, ffn = SHAPES[shape_of(name)]
    block = 4 * dim * dim + 4 * dim + 2 * dim * ffn + ffn + dim + 4 * dim  # attention, FFN, two LayerNorms
    total = vocab * dim + layers * block
    if "pythia" not in cfg.model._name:  # GPT-NeoX has rotary positions: no table
        total += (cfg.task.tokens_per_sample + 2) * dim  # fairseq's learned positions, offset by padding_idx + 1
    if cfg.task._name == "masked_lm":
        total += 2 * dim  # embedding LayerNorm (BERT)
        if not headless:
            total += dim * dim + dim + 2 * dim + vocab  # RoBERTa LM head: dense, LayerNorm, bias (tied matrix)
    else:
        total += 2 * dim  # final LayerNorm (pre-norm decoder)
        if not headless and ("pythia" in cfg.model._name or name in FINETUNING):
            total += vocab * dim  # untied head: Pythia's, and every fine-tuned head (a copy of e, then trained)
    if cfg.criterion.get("targets") == "separate":
        total += vocab * dim  # Tab.6 NCE (wo/ WT): the criterion's own target matrix
    return total


@pytest.mark.parametrize("name", CONFIGS)
def test_config_builds_with_closed_form_parameter_count(name, tiny_data):
    cfg, task, model = build_task_and_model(name, tiny_data)
    vocab = len(task.source_dictionary)  # from the data, not from the YAML
    assert model.max_positions() >= cfg.task.tokens_per_sample
    trained = [*model.parameters(), *task.build_criterion(cfg.criterion).parameters()]  # what fairseq optimizes
    assert sum(p.numel() for p in trained) == expected_parameters(name, cfg, vocab)
    # fairseq's attention and GPT-NeoX's: the one count that the parameters do not show
    assert {m.num_heads for m in model.modules() if hasattr(m, "num_heads")} == {SHAPES[shape_of(name)][2]}


def test_the_shape_table_is_the_papers_and_names_its_yaml_pair():
    """Each entry of models/shapes.py against App. D (SHAPES above), and the YAML pair it names runs it."""
    assert sorted(shape.config for shape in TABLE.values()) == sorted(SHAPES)
    for shape in TABLE.values():
        assert (shape.layers, shape.dim, shape.heads, shape.ffn) == SHAPES[shape.config], shape.name
        assert yaml_tree(shape.config)["model._name"] == shape.name
        assert yaml_tree(shape.headless_config)["model._name"] == shape.headless


def flatten(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("headless,vanilla", TWINS)
def test_twins_differ_only_in_objective_architecture_and_batch(headless, vanilla):
    h = flatten(yaml.safe_load(Path(REPO / "configs" / f"{headless}.yaml").read_text()))
    v = flatten(yaml.safe_load(Path(REPO / "configs" / f"{vanilla}.yaml").read_text()))
    differing = {k for k in h.keys() | v.keys() if h.get(k) != v.get(k)}
    allowed = {"model._name", "model.share_decoder_input_output_embed", "model.sparse_embedding_update",
               "checkpoint.save_dir"}
    if headless == "hmlm_base":
        allowed.add("dataset.batch_size")  # 64 vs 32 per device: the paper's equal-compute choice (§4.1)
    objective = {k for k in differing if k.startswith("criterion.")}  # the CWT criterion's own options
    assert differing - objective <= allowed, differing - objective - allowed
    assert h["criterion._name"].startswith("headless_") and not v["criterion._name"].startswith("headless_")


@pytest.mark.parametrize("ablation", sorted(ABLATIONS))
def test_ablations_mirror_the_cwt_config_but_for_their_objective(ablation):
    """Tab.6: the same run as the CWT row (hmlm_*) but for the objective's lines."""
    a, cwt = yaml_tree(ablation), yaml_tree(ABLATIONS[ablation])
    differing = {k for k in a.keys() | cwt.keys() if a.get(k) != cwt.get(k)}
    assert a["checkpoint.save_dir"] == f"checkpoints/{ablation}"
    if ablation.endswith("_cwt_ce"):  # CWT + the cross-entropy of the vanilla model's LM head
        # (model.sparse_embedding_update is an option of headless models only)
        assert differing == {
            "checkpoint.save_dir", "criterion.cross_entropy", "model._name", "model.sparse_embedding_update"
        }
        assert a["criterion.cross_entropy"] is True
        assert a["model._name"] == cwt["model._name"].removeprefix("headless_")
    else:  # NCE (wo/ WT): the headless model, a separate target matrix of the model's width
        assert differing == {"checkpoint.save_dir", "criterion.targets", "criterion.target_dim"}
        assert a["criterion.targets"] == "separate"
        assert a["criterion.target_dim"] == SHAPES[shape_of(ablation)][1]


def test_paper_configs_are_multi_gpu_fp16_as_the_paper():
    for name in CONFIGS:
        tree = yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text())
        if "_tiny" in name:  # hlm_tiny, hlm_pythia_tiny_ft, ...
            assert not tree["common"].get("fp16")
            continue
        assert tree["common"]["fp16"] is True, name


# The paper's (GPUs, global batch) of every paper run: App. D's tables, §4.2 for the fine-tuning stage
# (4x smaller than pretraining), the small decoders' largest batch of Fig.7 (Tab.11 gives none).
PAPER_BATCHES = {
    "mlm_base": (8, 256), "hmlm_base": (8, 512),  # Tab.7: 8 A100s, 32 / 64 per device
    "lm_pythia70m": (16, 1024), "hlm_pythia70m": (16, 1024), "hlm_pythia70m_ft": (16, 256),  # Tab.8, §4.2
    "mlm_multilingual": (1, 64), "hmlm_multilingual": (1, 64),  # Tab.9, one RTX 8000
    "mlm_small": (1, 64), "hmlm_small": (1, 64), "hmlm_small_nce": (1, 64), "mlm_small_cwt_ce": (1, 64),  # Tab.10
    "lm_small": (1, 128), "hlm_small": (1, 128), "hlm_small_ft": (1, 32),  # Fig.7, §4.2
}


def test_every_config_pins_its_world_size_and_paper_configs_have_the_papers_global_batch():
    """fairseq's default world size is every visible GPU: a config that leaves it out changes the batch."""
    assert sorted(PAPER_BATCHES) == [n for n in CONFIGS if "_tiny" not in n]
    for name in CONFIGS:
        tree = yaml_tree(name)
        world = tree["distributed_training.distributed_world_size"]  # present in every YAML
        assert tree["hydra.callbacks.launch_check._target_"] == "fairseq_headless.launch.LaunchCheck"
        assert tree["hydra.callbacks.heartbeat._target_"] == "fairseq_headless.training_heartbeat.Heartbeat"
        if "_tiny" in name:
            assert world == 1, name
            continue
        assert (world, global_batch(tree)) == PAPER_BATCHES[name], name


def yaml_tree(name):
    return flatten(yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text()))


def global_batch(tree):
    return (tree["dataset.batch_size"] * tree["distributed_training.distributed_world_size"]
            * tree["optimization.update_freq"][0])


# fine-tuning config -> (the headless pretraining it starts from, its vanilla baseline)
FINETUNED = {
    "hlm_pythia70m_ft": ("hlm_pythia70m", "lm_pythia70m"), "hlm_small_ft": ("hlm_small", "lm_small"),
    "hlm_pythia_tiny_ft": ("hlm_pythia_tiny", "lm_pythia_tiny"), "hlm_tiny_ft": ("hlm_tiny", "lm_tiny"),
}


@pytest.mark.parametrize("name", FINETUNING)
def test_finetuning_configs_follow_section_4_2(name, tiny_data):
    """Cross-entropy on the pretraining data, the headless checkpoint as a mandatory finetune_from_model, the
    baseline's shape with an untied head, a constant lr after linear warmup; the paper runs also: 10k updates,
    lr 1e-4, 2000 warmup updates, a global batch 4x smaller than pretraining, every other optimizer setting kept."""
    assert name in FINETUNED, f"{name}: add its headless pretraining config and vanilla baseline to FINETUNED"
    pretraining, baseline = FINETUNED[name]
    ft, pre = yaml_tree(name), yaml_tree(pretraining)
    assert ft["criterion._name"] == "cross_entropy" and ft["checkpoint.finetune_from_model"] == "???"
    assert ft["lr_scheduler._name"] == "fixed" and ft["lr_scheduler.warmup_updates"] > 0
    assert {k: v for k, v in ft.items() if k.startswith("task.")} == {k: v for k, v in pre.items() if k.startswith("task.")}
    kept = ["optimizer._name", "optimizer.adam_betas", "optimizer.adam_eps", "optimizer.weight_decay",
            "optimization.clip_norm", "common.fp16", "distributed_training.distributed_world_size"]
    assert [ft.get(k) for k in kept] == [pre.get(k) for k in kept]
    if "_tiny" not in name:
        lr = [float(x) for x in ft["optimization.lr"]]  # PyYAML reads 1e-4 as a string; hydra as a float
        assert (ft["optimization.max_update"], lr, ft["lr_scheduler.warmup_updates"]) == (10000, [1e-4], 2000)
        assert global_batch(ft) * 4 == global_batch(pre)

    cfg, _, model = build_task_and_model(name, tiny_data)
    _, _, vanilla = build_task_and_model(baseline, tiny_data)
    baseline_model = yaml_tree(baseline)["model._name"]
    assert cfg.model._name in (baseline_model, f"{baseline_model}_untied")  # GPT-2's twin ties its head
    params = dict(model.named_parameters())
    head = params.get("decoder.embed_out.weight", params.get("decoder.output_projection.weight"))
    embeddings = params.get("decoder.embed_in.weight", params.get("decoder.embed_tokens.weight"))
    assert head is not None and head.shape == embeddings.shape and head.data_ptr() != embeddings.data_ptr()
    # the shape of the baseline: the same body, and the untied head's matrix on top
    body = sum(p.numel() for n, p in vanilla.named_parameters() if "output_projection" not in n and "embed_out" not in n)
    assert sum(p.numel() for p in model.parameters()) == body + head.numel()


@pytest.mark.parametrize("name", CONFIGS)
def test_packing_is_fixed_blocks_that_skip_no_line(name):
    """docs/data.md, Packing: `none` blocks of the paper's sequence length (Tabs.7-11: 128; Tab.8: 2048 for
    Pythia-70M), every block in some batch (no multiple of 8 that drops an epoch's last batch), and
    validation left to fail loudly on a sample over max_positions (tests/test_packing.py: there is none)."""
    tree = yaml_tree(name)
    assert tree["task.sample_break_mode"] == "none"
    assert tree["task.tokens_per_sample"] == (2048 if "pythia70m" in name else 128)
    assert tree["dataset.required_batch_size_multiple"] == 1
    assert "dataset.skip_invalid_size_inputs_valid_test" not in tree


def readme_cpu_overrides():
    """The overrides of the README's CPU command (after `task.data=DATA_DIR`), as a shell would split them."""
    readme = (REPO / "README.md").read_text()
    block = readme[readme.index("**On CPU**"):]
    block = block[block.index("```bash\n") + len("```bash\n"):]
    command = shlex.split(block[:block.index("```")].replace("\\\n", " "))
    return command[command.index("task.data=DATA_DIR") + 1:]


@pytest.mark.parametrize("name", sorted(PAPER_BATCHES))
def test_the_readmes_cpu_line_composes_for_every_paper_config(name, tiny_data):
    """The documented first run on CPU: every paper config composes with it (a fine-tuning config given its
    checkpoint) into a 5-update run of 4 sequences, one update per batch, a log line per update, 2 validation
    batches, on CPU in one process, which the configs' launch check accepts on a machine without GPU."""
    overrides = readme_cpu_overrides()
    if name in FINETUNING:
        overrides.append(f"checkpoint.finetune_from_model={tiny_data / 'checkpoint.pt'}")
    cfg = load_config(name, f"task.data={tiny_data}", *overrides)
    assert (cfg.common.cpu, cfg.common.fp16, cfg.distributed_training.distributed_world_size) == (True, False, 1)
    assert (cfg.dataset.batch_size, list(cfg.optimization.update_freq), cfg.optimization.max_update) == (4, [1], 5)
    assert (cfg.common.log_interval, cfg.dataset.max_valid_steps, cfg.dataset.disable_validation) == (1, 2, False)
    assert cfg.checkpoint.no_save_optimizer_state
    check_config(cfg, environ={}, cuda_devices=0)
    # without the CPU line, the same check stops every paper config on such a machine (fp16, or 8-16 GPUs)
    with pytest.raises(InputError, match="this machine has no GPU"):
        check_config(load_config(name, f"task.data={tiny_data}", *overrides[len(CPU_LINE):]), environ={},
                     cuda_devices=0)


CPU_LINE = ["common.cpu=true", "common.fp16=false", "distributed_training.distributed_world_size=1"]


def test_the_readmes_cpu_line_starts_with_what_a_machine_without_gpu_needs():
    assert readme_cpu_overrides()[:len(CPU_LINE)] == CPU_LINE == CPU_OVERRIDES.split()
