"""Training-step time and peak memory, headless against vanilla (paper Fig.2, Fig.6b, Tab.6).

A *group* is an architecture at one vocabulary size and micro-batch. In one process every variant is
built from the project's YAML configs and trained through fairseq's ``Trainer.train_step``, alternating
step by step so that a drift of the machine hits all alike: ``vanilla`` (the tied-head twin),
``headless`` (per embedding update x negatives x chunk size), ``body`` (the headless body with a free
loss, the sum of its features), optionally ``frozen`` (the body with untrained input embeddings) and the
headless variants again at a reference vocabulary size (the vocabulary dependence measured in one
process, free of the drift between groups). Batches are random tokens of the right shape. The first
step measures memory, a second re-warms the heap (unless ``rewarm=False``), then come the timed steps.
"""
import logging
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import List, Optional

import torch
from fairseq.criterions import FairseqCriterion
from fairseq.logging import metrics

from fairseq_headless.models.shapes import FAMILIES, SHAPES
from fairseq_headless.sparse_embedding import MARKER as SPARSE_MARKER
from fairseq_headless.sparse_embedding import OPTIMIZER as SPARSE_OPTIMIZER
from fairseq_headless.sparse_embedding import enable_sparse_embedding_update
from .machine import PeakMemory, quiet, run_isolated, synchronize, tensor_mb

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Arch:
    """An architecture of the sweep: an entry of the shape table and the micro-batch it is timed with."""

    shape: str  # a key of fairseq_headless.models.shapes.SHAPES
    batch: int  # sequences per micro-batch
    length: int  # tokens per sequence
    description: str

    @property
    def family(self) -> str:  # encoder or decoder
        return FAMILIES[SHAPES[self.shape].family].kind

    @property
    def headless_config(self) -> str:
        return SHAPES[self.shape].headless_config

    @property
    def vanilla_config(self) -> str:
        return SHAPES[self.shape].config


ARCHS = {
    "bert-small": Arch("roberta_small", 32, 128, "the vocabulary sweep's and ablations' encoder (Fig.6, Tab.6)"),
    "bert-base": Arch("roberta_base", 32, 128, "the paper's main encoder (Fig.2)"),
    "gpt2-quarter": Arch("gpt2_quarter", 16, 128, "the batch-size sweep's decoder (Fig.7)"),
    "pythia-70m": Arch("pythia_70m", 4, 512, "the paper's causal model (Tabs.3-4)"),
    "bert-tiny": Arch("roberta_tiny", 4, 32, "CPU-sized: the smoke preset, the tests"),
    "gpt2-tiny": Arch("gpt2_tiny", 2, 32, "CPU-sized: the smoke preset, the tests"),
}


class FeatureSumLoss(FairseqCriterion):
    """The body alone: the sum of the features at the criterion's positions (a free loss)."""

    def forward(self, model, sample, reduce=True):
        selected = sample["target"].ne(self.padding_idx)
        loss = model(**sample["net_input"], features_only=True)[0][selected].float().sum()
        positions = int(selected.sum())
        return loss, positions, {"loss": loss.data, "sample_size": positions, "ntokens": sample["ntokens"],
                                 "nsentences": sample["nsentences"]}

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        total = sum(log.get("sample_size", 0) for log in logging_outputs)
        metrics.log_scalar("loss", sum(log.get("loss", 0) for log in logging_outputs) / max(total, 1), total)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True


def compose(name: str, overrides=(), config_dir: Path = Path(__file__).resolve().parents[2] / "configs"):
    """configs/<name>.yaml with overrides, composed exactly as ``fairseq-hydra-train`` does."""
    import fairseq_headless.plugin  # noqa: F401  (registers the plugin)
    from fairseq.dataclass.initialize import add_defaults, hydra_init
    from fairseq.dataclass.utils import omegaconf_no_object_check
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    hydra_init(name)
    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base=None):
        cfg = hydra_compose(config_name=name, overrides=list(overrides))
    add_defaults(cfg)
    with omegaconf_no_object_check():
        cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    OmegaConf.set_struct(cfg, True)
    return cfg


def write_dictionary(folder: Path, vocab_size: int, family: str) -> None:
    """A dict.txt whose fairseq Dictionary has ``vocab_size`` entries: fairseq adds 4 specials, masked_lm <mask>."""
    symbols = vocab_size - 4 - (family == "encoder")
    (Path(folder) / "dict.txt").write_text("".join(f"w{i} 1\n" for i in range(symbols)))


def random_sample(family, batch, length, vocab_size, pad, mask, seed=0):
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(5, vocab_size - 1, (batch, length), generator=generator)
    if family == "encoder":  # fairseq's masked_lm: 15% of positions predicted, shown as <mask>
        selected = torch.rand(batch, length, generator=generator) < 0.15
        target = torch.where(selected, tokens, pad)
        source = tokens.masked_fill(selected, mask)
    else:  # next-token prediction at every position
        source, target = tokens, torch.randint(5, vocab_size - 1, (batch, length), generator=generator)
    return fairseq_sample(source, target, pad)


def fairseq_sample(source, target, pad) -> dict:
    """A batch as fairseq's language-model tasks give it to a criterion (sequences of equal length)."""
    batch, length = source.shape
    return {"id": torch.arange(batch), "net_input": {"src_tokens": source, "src_lengths": torch.full((batch,), length)},
            "target": target, "ntokens": int(target.ne(pad).sum()), "nsentences": batch}


@dataclass
class Variant:
    name: str  # vanilla, headless-<mode>-<negatives>-c<chunk>[@<reference V>], body-<mode>, frozen
    kind: str
    embedding_update: Optional[str] = None
    negatives: Optional[str] = None
    chunk_size: Optional[int] = None  # None: the config's own
    vocab_size: Optional[int] = None  # None: the group's; else the reference size


def group_variants(embedding_updates, negatives_modes, chunk_sizes, frozen, body=True, reference=None) -> List[Variant]:
    """The variants of a group; ``reference``: each headless one again at that vocabulary size."""
    variants = [Variant("vanilla", "vanilla")]
    for mode in embedding_updates:
        if body:
            variants.append(Variant(f"body-{mode}", "body", mode))
        variants += [Variant(f"headless-{mode}-{negatives}-c{'config' if chunk is None else chunk}", "headless", mode,
                             negatives, chunk) for negatives in negatives_modes for chunk in chunk_sizes]
    if frozen:
        variants.append(Variant("frozen", "frozen"))
    if reference:
        variants += [replace(v, name=f"{v.name}@{reference}", vocab_size=reference)
                     for v in variants if v.kind == "headless"]
    return variants


def build_trainer(arch: Arch, variant: Variant, config_dir, data, device, precision, tasks_by_config):
    """(cfg, task, trainer) of one variant; ``tasks_by_config`` shares one task (its dictionary) per config."""
    from fairseq import tasks
    from fairseq.trainer import Trainer

    overrides = [f"task.data={data}", f"dataset.batch_size={arch.batch}", f"task.tokens_per_sample={arch.length}",
                 "distributed_training.distributed_world_size=1", "optimization.update_freq=[1]",
                 "common.log_format=none", f"common.cpu={str(device.type == 'cpu').lower()}"]
    for half in ("fp16", "bf16"):  # the memory-efficient wrapper: FP16Optimizer's flat buffer takes no sparse grads
        on = str(precision == half).lower()
        overrides += [f"common.{half}={on}", f"common.memory_efficient_{half}={on}"]
    if variant.kind == "headless":
        overrides.append(f"criterion.negatives={variant.negatives}")
        if variant.chunk_size is not None:
            overrides.append(f"criterion.chunk_size={variant.chunk_size}")
    if variant.embedding_update == "sparse":
        overrides.append(f"optimizer._name={SPARSE_OPTIMIZER}")
    name = arch.vanilla_config if variant.kind == "vanilla" else arch.headless_config
    cfg = compose(name, overrides, config_dir)
    if name not in tasks_by_config:
        tasks_by_config[name] = tasks.setup_task(cfg.task)
    task = tasks_by_config[name]
    model = task.build_model(cfg.model)
    if variant.embedding_update == "sparse":  # what model.sparse_embedding_update=true does, for any model
        enable_sparse_embedding_update(model)
    if variant.kind == "frozen":
        model.input_embeddings().weight.requires_grad_(False)
    criterion = task.build_criterion(cfg.criterion) if variant.kind in ("vanilla", "headless") else FeatureSumLoss(task)
    return cfg, task, Trainer(cfg, task, model, criterion)


def _prime_optimizer(trainer):
    """Create the optimizer state (one step on zero gradients), so that the first step measures steady memory."""
    for p in trainer.model.parameters():
        if p.requires_grad:  # a row-sparse table gets its kind of gradient (lazy_adam refuses a dense one)
            p.grad = torch.zeros_like(p).to_sparse(1) if getattr(p, SPARSE_MARKER, False) else torch.zeros_like(p)
    trainer.optimizer.step()
    trainer.zero_grad()


def measure_group(arch_name, vocab_size, variants, steps, config_dir, device, precision, batch=None, seq_len=None,
                  rewarm=True):
    """Build every variant of one group, time them alternately: {"info": ..., "variants": {name: numbers}}."""
    quiet()
    device = torch.device(device)
    arch = ARCHS[arch_name]
    arch = replace(arch, batch=batch or arch.batch, length=seq_len or arch.length)
    label = f"{arch_name} V={vocab_size}"
    trainers, samples = {}, {}
    for size in dict.fromkeys(v.vocab_size or vocab_size for v in variants):
        with tempfile.TemporaryDirectory(prefix="benchmark-dict-") as data:
            write_dictionary(Path(data), size, arch.family)
            tasks_by_config = {}
            for variant in variants:
                if (variant.vocab_size or vocab_size) == size:
                    logger.info(f"{label}: building {variant.name}")
                    trainers[variant.name] = build_trainer(arch, variant, config_dir, data, device, precision,
                                                           tasks_by_config)
                    dictionary = trainers[variant.name][1].source_dictionary
        mask = dictionary.index("<mask>") if arch.family == "encoder" else dictionary.unk()
        samples[size] = random_sample(arch.family, arch.batch, arch.length, len(dictionary), dictionary.pad(), mask)
    dictionary = trainers["vanilla"][1].source_dictionary
    results = {}
    for variant in variants:  # the memory step
        cfg, _, trainer = trainers[variant.name]
        _prime_optimizer(trainer)
        with PeakMemory(device) as meter:
            trainer.train_step([samples[variant.vocab_size or vocab_size]])
            synchronize(device)
        state = [t for s in trainer.optimizer.optimizer.state.values() for t in s.values()]
        persistent = tensor_mb([*trainer.model.parameters(), *trainer.model.buffers(), *state])
        results[variant.name] = dict(
            times_s=[], chunk_size=cfg.criterion.get("chunk_size"),
            peak_mb=None if meter.extra_mb is None else persistent + meter.extra_mb,
            parameters=sum(p.numel() for p in trainer.model.parameters()))
    for step in range(-1 if rewarm else 0, steps):  # step -1: untimed, re-warms what the memory steps trimmed
        # a rotating order: no variant always runs right after the same one
        for variant in variants[step % len(variants):] + variants[:step % len(variants)]:
            trainer = trainers[variant.name][2]
            synchronize(device)
            start = time.perf_counter()
            trainer.train_step([samples[variant.vocab_size or vocab_size]])
            synchronize(device)
            if step >= 0:
                results[variant.name]["times_s"].append(time.perf_counter() - start)
        logger.info(f"{label}: step {step + 1}/{steps}")
    for numbers in results.values():
        numbers["step_s"] = statistics.median(numbers["times_s"])
    info = {"vocab_size": len(dictionary), "batch": arch.batch, "seq_len": arch.length,
            "tokens_per_step": arch.batch * arch.length,
            "positions": int(samples[vocab_size]["target"].ne(dictionary.pad()).sum())}
    return {"info": info, "variants": results}


def records_of_group(arch_name, group, variants, device, precision):
    """One record per headless variant of the group (the vanilla, body and frozen numbers repeated)."""
    arch, info, results = ARCHS[arch_name], group["info"], group["variants"]
    vanilla, frozen, tokens = results["vanilla"], results.get("frozen"), group["info"]["tokens_per_step"]
    records = []
    for variant in variants:
        if variant.kind != "headless" or variant.vocab_size:  # a reference goes with its group's variant
            continue
        headless = results[variant.name]
        body = results.get(f"body-{variant.embedding_update}")  # None: not timed at this size
        reference = next((dict(vocab_size=v.vocab_size, headless_step_s=results[v.name]["step_s"],
                               times_s=results[v.name]["times_s"], headless_peak_mb=results[v.name]["peak_mb"])
                          for v in variants if v.name.startswith(variant.name + "@")), None)
        times = {"vanilla": vanilla, "headless": headless, "body": body, "frozen": frozen}
        records.append({
            "family": arch.family, "arch": arch_name, "configs": [arch.headless_config, arch.vanilla_config],
            "device": str(device), "precision": precision, **info,
            "embedding_update": variant.embedding_update, "negatives": variant.negatives,
            "chunk_size": headless["chunk_size"],
            **{f"{k}_step_s": v and v["step_s"] for k, v in times.items() if k != "frozen"},
            "frozen_embedding_step_s": frozen and frozen["step_s"],
            "speedup": vanilla["step_s"] / headless["step_s"],
            **{f"{k}_tokens_per_s": v and tokens / v["step_s"] for k, v in times.items() if k != "frozen"},
            **{f"{k}_peak_mb": v and v["peak_mb"] for k, v in times.items() if k != "frozen"},
            "vanilla_parameters": vanilla["parameters"], "headless_parameters": headless["parameters"],
            "times_s": {k: v["times_s"] for k, v in times.items() if v},
            "reference": reference,  # the headless step at the reference vocabulary, interleaved (None: not asked)
        })
    return records


def run(archs, vocab_sizes, batches, embedding_updates, negatives_modes, chunk_sizes, steps, config_dir, device,
        precision, frozen=False, reference_vocab=None, seq_len=None, rewarm=True, body_sizes=None, on_group=None):
    """Every group of the sweep, each isolated (machine.run_isolated); returns (records, skipped groups).

    ``batches``, ``seq_len``: None = the architecture's own. ``reference_vocab``: in the group of the largest
    vocabulary only. ``body_sizes``: the sizes the body is timed at (None: every size).
    """
    records, skipped = [], []
    for arch_name in archs:
        for batch in batches:
            for vocab_size in vocab_sizes:
                reference = reference_vocab if vocab_size == max(vocab_sizes) != reference_vocab else None
                variants = group_variants(embedding_updates, negatives_modes, chunk_sizes, frozen,
                                          body=body_sizes is None or vocab_size in body_sizes, reference=reference)
                kind, payload = run_isolated(measure_group, dict(
                    arch_name=arch_name, vocab_size=vocab_size, variants=variants, steps=steps, config_dir=config_dir,
                    device=device, precision=precision, batch=batch, seq_len=seq_len, rewarm=rewarm), device)
                if kind == "error":
                    raise RuntimeError(f"step benchmark {arch_name} V={vocab_size} failed:\n{payload}")
                if kind == "result":
                    records += records_of_group(arch_name, payload, variants, device, precision)
                else:
                    skipped.append({"arch": arch_name, "vocab_size": vocab_size, "batch": batch or ARCHS[arch_name].batch,
                                    "seq_len": seq_len or ARCHS[arch_name].length, "reason": payload})
                if on_group:
                    on_group()
    return records, skipped
