"""Training-step throughput and peak memory, headless against vanilla (paper Fig.2, Fig.6b, Tab.6).

One *group* is an architecture at one vocabulary size and micro-batch. In one
process, every variant of the group is built from the project's YAML configs (the
same composition as ``fairseq-hydra-train``), with the project's criterions and
fairseq's optimizer, and trained through fairseq's own ``Trainer.train_step``
(forward, backward, gradient normalisation, clipping, optimizer step), alternating
between variants step after step so that a drift of the machine hits all alike:

* ``vanilla``: the vanilla twin (its LM head tied to the input embeddings);
* ``headless``: the headless model with the CWT criterion, once per
  ``embedding_update`` (``dense``: the paper's; ``sparse``:
  ``model.sparse_embedding_update=true optimizer._name=lazy_adam``) x ``negatives`` x ``chunk_size``;
* ``body``: the headless body with a trivial loss on the same positions' features
  (their sum), per ``embedding_update``: the limit a free loss would reach;
* optionally ``frozen``: the body with the input embeddings not trained at all:
  the limit of the embedding update too;
* optionally the ``headless`` variants again at a *reference* vocabulary size
  (``reference_vocab``, e.g. 8k in the 131k group): the vocabulary dependence of
  the headless step, measured interleaved in one process. Measured across two
  groups instead (two processes, minutes apart), it is dominated by the drift of a
  shared machine: +7% to +17% or -2% for the same code on this 2-core CPU.

Batches are random tokens of the right shape (15% masking for encoders, every
position a target for decoders): speed does not depend on the text. The first
two steps of each variant (one without ``rewarm``) are not timed. Before the first, the optimizer state is
created (one optimizer step with zero gradients), and the first step measures
peak memory: persistent tensors (parameters, buffers, optimizer state) plus the
step's peak extra memory (gradients, activations, temporaries). With
``rewarm`` (the default), a second untimed step re-warms the heap that the
memory measurements handed back to the OS (each one starts by trimming it).
Without it (``--quick``, to fit its time), the first timed step of every variant
but the last may run on a cold heap: the median of three or more timed steps
leaves that step out when it is the slowest. Then each variant runs ``steps``
timed steps; a record gives their median.
"""

import logging
import statistics
import tempfile
import time
import warnings
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
from .machine import PeakMemory, run_isolated, tensor_mb


@dataclass(frozen=True)
class Arch:
    """An architecture of the sweep: an entry of the shape table and the micro-batch it is timed with."""

    shape: str  # a key of fairseq_headless.models.shapes.SHAPES: its family, shape and YAML pair
    batch: int  # sequences per micro-batch
    length: int  # tokens per sequence
    description: str  # what the benchmark uses it for

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
        features = model(**sample["net_input"], features_only=True)[0]
        loss = features[selected].float().sum()
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


def quiet():
    """Keep the progress bar readable: fairseq, hydra and matplotlib log and warn a lot."""
    logging.getLogger().setLevel(logging.WARNING)
    for name in ("fairseq", "hydra", "matplotlib"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # hydra_init stores fairseq's schema under each config's name (README "Tracking and the log"); the
    # plugin itself filters fairseq's torch.cuda.amp and pin_memory warnings
    warnings.filterwarnings("ignore", message=r"\s*.*validated against ConfigStore schema")  # it starts with \n


def compose(config_dir: Path, name: str, overrides: List[str]):
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
    """A dict.txt whose fairseq Dictionary has ``vocab_size`` entries (specials and <mask> included)."""
    # fairseq adds <s>, <pad>, </s>, <unk>; the masked_lm task also adds <mask>.
    symbols = vocab_size - 4 - (1 if family == "encoder" else 0)
    with open(folder / "dict.txt", "w") as handle:
        handle.writelines(f"w{i} 1\n" for i in range(symbols))


def random_sample(family, batch, length, vocab_size, pad, mask, seed=0):
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(5, vocab_size - 1, (batch, length), generator=generator)
    if family == "encoder":  # fairseq's masked_lm: 15% of positions predicted, shown as <mask>
        selected = torch.rand(batch, length, generator=generator) < 0.15
        target = torch.full_like(tokens, pad)
        target[selected] = tokens[selected]
        source = tokens.masked_fill(selected, mask)
    else:  # next-token prediction at every position
        source, target = tokens, torch.randint(5, vocab_size - 1, (batch, length), generator=generator)
    return {
        "id": torch.arange(batch),
        "net_input": {"src_tokens": source, "src_lengths": torch.full((batch,), length)},
        "target": target,
        "ntokens": int(target.ne(pad).sum()),
        "nsentences": batch,
    }


@dataclass
class Variant:
    name: str  # vanilla, headless-<mode>-<negatives>-c<chunk>[@<reference V>], body-<mode>, frozen
    kind: str
    embedding_update: Optional[str] = None
    negatives: Optional[str] = None
    chunk_size: Optional[int] = None  # None: the config's own
    vocab_size: Optional[int] = None  # None: the group's; else a reference size (see the module docstring)


def group_variants(embedding_updates, negatives_modes, chunk_sizes, frozen, body=True) -> List[Variant]:
    variants = [Variant("vanilla", "vanilla")]
    for mode in embedding_updates:
        if body:
            variants.append(Variant(f"body-{mode}", "body", mode))
        for negatives in negatives_modes:
            for chunk in chunk_sizes:
                label = "config" if chunk is None else chunk
                variants.append(Variant(f"headless-{mode}-{negatives}-c{label}", "headless", mode, negatives, chunk))
    if frozen:
        variants.append(Variant("frozen", "frozen"))
    return variants


def with_reference(variants: List[Variant], group_vocab: int, reference_vocab: Optional[int]) -> List[Variant]:
    """The group's variants plus each headless one at ``reference_vocab`` (none in the reference's own group)."""
    if not reference_vocab or reference_vocab == group_vocab:
        return list(variants)
    extra = [Variant(f"{v.name}@{reference_vocab}", v.kind, v.embedding_update, v.negatives, v.chunk_size,
                     reference_vocab) for v in variants if v.kind == "headless"]
    return list(variants) + extra


def _overrides(data, batch, length, device, precision):
    overrides = [
        f"task.data={data}", f"dataset.batch_size={batch}", f"task.tokens_per_sample={length}",
        "distributed_training.distributed_world_size=1", "optimization.update_freq=[1]",
        "common.log_format=none", f"common.cpu={'true' if device.type == 'cpu' else 'false'}",
    ]
    if precision == "fp32":
        overrides.append("common.fp16=false")
    else:  # the memory-efficient wrapper: FP16Optimizer's flat buffer cannot take sparse gradients
        overrides += [f"common.fp16={'true' if precision == 'fp16' else 'false'}",
                      f"common.bf16={'true' if precision == 'bf16' else 'false'}",
                      f"common.memory_efficient_fp16={'true' if precision == 'fp16' else 'false'}",
                      f"common.memory_efficient_bf16={'true' if precision == 'bf16' else 'false'}"]
    return overrides


def build_trainer(arch: Arch, variant: Variant, config_dir, data, device, precision, tasks_by_config=None):
    """(cfg, task, trainer) of one variant; ``tasks_by_config``: a dict that shares one task per config
    (a task only holds the dictionary here, and loading a 131k-entry dict.txt takes ~0.7 s)."""
    from fairseq import tasks
    from fairseq.trainer import Trainer

    base = _overrides(data, arch.batch, arch.length, device, precision)
    name = arch.vanilla_config if variant.kind == "vanilla" else arch.headless_config
    extra = []
    if variant.kind == "headless":
        extra = [f"criterion.negatives={variant.negatives}"]
        if variant.chunk_size is not None:
            extra.append(f"criterion.chunk_size={variant.chunk_size}")
    if variant.embedding_update == "sparse":
        extra.append(f"optimizer._name={SPARSE_OPTIMIZER}")  # the sparse update's optimizer (fairseq_headless.lazy_adam)
    cfg = compose(config_dir, name, base + extra)
    cache = {} if tasks_by_config is None else tasks_by_config
    if name not in cache:
        cache[name] = tasks.setup_task(cfg.task)
    task = cache[name]
    model = task.build_model(cfg.model)
    if variant.embedding_update == "sparse":
        # What model.sparse_embedding_update=true does at build time, for any headless model.
        enable_sparse_embedding_update(model)
    if variant.kind == "frozen":
        model.input_embeddings().weight.requires_grad_(False)
    criterion = task.build_criterion(cfg.criterion) if variant.kind in ("vanilla", "headless") else FeatureSumLoss(task)
    trainer = Trainer(cfg, task, model, criterion)
    return cfg, task, trainer


def _synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _prime_optimizer(trainer):
    """Create the optimizer state (one step on zero gradients) so that the first step measures steady memory."""
    for p in trainer.model.parameters():
        if p.requires_grad:  # a row-sparse table gets its kind of gradient (lazy_adam refuses a dense one)
            p.grad = torch.zeros_like(p).to_sparse(1) if getattr(p, SPARSE_MARKER, False) else torch.zeros_like(p)
    trainer.optimizer.step()
    trainer.zero_grad()


def _persistent_mb(trainer):
    state = [t for s in trainer.optimizer.optimizer.state.values() for t in s.values()]
    return tensor_mb(list(trainer.model.parameters()) + list(trainer.model.buffers()) + state)


def measure_group(arch_name, vocab_size, variants, steps, config_dir, device, precision, batch=None, seq_len=None,
                  rewarm=True, report=print):
    """Build every variant of one group, time them alternately, return {variant name: numbers}."""
    quiet()
    device = torch.device(device)
    arch = ARCHS[arch_name]
    if batch or seq_len:  # another micro-batch (sequences) or sequence length than the architecture's own
        arch = replace(arch, batch=batch or arch.batch, length=seq_len or arch.length)
    label = f"{arch_name} V={vocab_size}"
    trainers, samples = {}, {}
    for size in dict.fromkeys(v.vocab_size or vocab_size for v in variants):
        with tempfile.TemporaryDirectory(prefix="benchmark-dict-") as data:
            write_dictionary(Path(data), size, arch.family)
            tasks_by_config = {}
            for variant in variants:
                if (variant.vocab_size or vocab_size) == size:
                    report(f"{label}: building {variant.name}")
                    trainers[variant.name] = build_trainer(arch, variant, config_dir, data, device, precision,
                                                           tasks_by_config)
                    dictionary = trainers[variant.name][1].source_dictionary
        mask = dictionary.index("<mask>") if arch.family == "encoder" else dictionary.unk()
        samples[size] = random_sample(arch.family, arch.batch, arch.length, len(dictionary), dictionary.pad(), mask)
    dictionary = trainers[variants[0].name][1].source_dictionary  # the group's (variants[0] is vanilla)
    results = {v.name: {"times_s": []} for v in variants}
    for variant in variants:  # warm-up step, which also measures memory
        cfg, _, trainer = trainers[variant.name]
        sample = samples[variant.vocab_size or vocab_size]
        results[variant.name]["chunk_size"] = cfg.criterion.get("chunk_size")
        _prime_optimizer(trainer)
        with PeakMemory(device) as meter:
            trainer.train_step([sample])
            _synchronize(device)
        results[variant.name].update(
            persistent_mb=_persistent_mb(trainer), step_extra_mb=meter.extra_mb,
            parameters=sum(p.numel() for p in trainer.model.parameters()),
        )
        report(f"{label}: {variant.name} warm-up done")
    for step in range(-1 if rewarm else 0, steps):  # step -1: untimed, re-warms what the memory steps trimmed
        # Rotate the order every step, so that no variant always runs right after the same one.
        order = variants[step % len(variants):] + variants[: step % len(variants)]
        for variant in order:
            _, _, trainer = trainers[variant.name]
            _synchronize(device)
            start = time.perf_counter()
            trainer.train_step([samples[variant.vocab_size or vocab_size]])
            _synchronize(device)
            if step >= 0:
                results[variant.name]["times_s"].append(time.perf_counter() - start)
                report(f"{label}: {variant.name} step {step + 1}/{steps} {results[variant.name]['times_s'][-1]:.2f} s")
    for name, numbers in results.items():
        numbers["step_s"] = statistics.median(numbers["times_s"])
        extra = numbers["step_extra_mb"]
        numbers["peak_mb"] = None if extra is None else numbers["persistent_mb"] + extra
    info = {
        "vocab_size": len(dictionary),
        "batch": arch.batch,
        "seq_len": arch.length,
        "tokens_per_step": arch.batch * arch.length,
        "positions": int(samples[vocab_size]["target"].ne(dictionary.pad()).sum()),
    }
    return {"info": info, "variants": results}


def records_of_group(arch_name, group, variants, device, precision):
    """The group's results as records, one per headless variant (the vanilla and body numbers repeated)."""
    arch = ARCHS[arch_name]  # family and configs; the batch comes from the group
    info, results = group["info"], group["variants"]
    vanilla = results["vanilla"]
    frozen = results.get("frozen")
    records = []
    for variant in variants:
        if variant.kind != "headless":
            continue
        if variant.vocab_size:  # a reference, reported with its group's variant below
            continue
        headless = results[variant.name]
        body = results.get(f"body-{variant.embedding_update}")  # None: not timed at this size (body_sizes)
        reference = next((dict(vocab_size=v.vocab_size, headless_step_s=results[v.name]["step_s"],
                               times_s=results[v.name]["times_s"], headless_peak_mb=results[v.name]["peak_mb"])
                          for v in variants if v.vocab_size and v.name.startswith(variant.name + "@")), None)
        tokens = info["tokens_per_step"]
        records.append({
            "family": arch.family,
            "arch": arch_name,
            "configs": [arch.headless_config, arch.vanilla_config],
            "device": str(device),
            "precision": precision,
            **info,
            "embedding_update": variant.embedding_update,
            "negatives": variant.negatives,
            "chunk_size": headless["chunk_size"],
            "vanilla_step_s": vanilla["step_s"],
            "headless_step_s": headless["step_s"],
            "body_step_s": body["step_s"] if body else None,
            "frozen_embedding_step_s": frozen["step_s"] if frozen else None,
            "speedup": vanilla["step_s"] / headless["step_s"],
            "vanilla_tokens_per_s": tokens / vanilla["step_s"],
            "headless_tokens_per_s": tokens / headless["step_s"],
            "body_tokens_per_s": tokens / body["step_s"] if body else None,
            "vanilla_peak_mb": vanilla["peak_mb"],
            "headless_peak_mb": headless["peak_mb"],
            "body_peak_mb": body["peak_mb"] if body else None,
            "vanilla_parameters": vanilla["parameters"],
            "headless_parameters": headless["parameters"],
            "times_s": {"vanilla": vanilla["times_s"], "headless": headless["times_s"],
                        **({"body": body["times_s"]} if body else {}),
                        **({"frozen": frozen["times_s"]} if frozen else {})},
            # the headless step at a reference vocabulary, interleaved with this group's (None: not measured)
            "reference": reference,
        })
    return records


def run(archs, vocab_sizes, batches, embedding_updates, negatives_modes, chunk_sizes, steps, config_dir, device,
        precision, frozen=False, reference_vocab=None, seq_len=None, rewarm=True, body_sizes=None,
        on_progress=lambda message: None, on_group=lambda: None):
    """Every group of the sweep, each in its own process on CPU; returns (records, skipped groups).

    ``batches``: sequences per micro-batch; None = the architecture's own (``ARCHS``); likewise
    ``seq_len``, tokens per sequence (e.g. 512 for the paper's Fig.2).
    ``reference_vocab``: also time the headless variants at this size in the group of the largest
    vocabulary (see the module docstring). ``body_sizes``: the vocabulary sizes at which the body
    variants are timed (None: every size; elsewhere a record's ``body_*`` fields are None).
    """
    records, skipped = [], []
    groups = [(a, v, b) for a in archs for b in batches for v in vocab_sizes]
    for arch_name, vocab_size, batch in groups:
        base_variants = group_variants(embedding_updates, negatives_modes, chunk_sizes, frozen,
                                       body=body_sizes is None or vocab_size in body_sizes)
        variants = with_reference(base_variants, vocab_size,
                                  reference_vocab if vocab_size == max(vocab_sizes) else None)
        kind, payload = run_isolated(
            measure_group,
            dict(arch_name=arch_name, vocab_size=vocab_size, variants=variants, steps=steps,
                 config_dir=config_dir, device=device, precision=precision, batch=batch, seq_len=seq_len,
                 rewarm=rewarm),
            device, on_progress,
        )
        if kind == "result":
            records += records_of_group(arch_name, payload, variants, device, precision)
        elif kind == "skipped":
            skipped.append({"arch": arch_name, "vocab_size": vocab_size,
                            "batch": batch or ARCHS[arch_name].batch,
                            "seq_len": seq_len or ARCHS[arch_name].length, "reason": payload})
        else:
            raise RuntimeError(f"step benchmark {arch_name} V={vocab_size} failed:\n{payload}")
        on_group()
    return records, skipped
