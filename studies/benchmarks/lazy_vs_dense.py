"""How far lazy Adam (``model.sparse_embedding_update=true``) moves the input embeddings against dense AdamW.

Lazy Adam skips the momentum and weight decay of rows a step does not touch, so rare tokens move less
(:mod:`fairseq_headless.sparse_embedding`). The same initial model is trained on the same Zipf-distributed
batches twice, with ``lazy_adam`` in float32 and with fairseq's dense ``adam`` in float64 (the reference),
through the optimizers' own calls as fairseq's Trainer makes them. Per bucket of how often a row was
touched: the summed distance its rows travelled under lazy Adam over the same under dense AdamW; and the
held-out CWT loss of both, in bits per predicted position.

    python -m studies.benchmarks.lazy_vs_dense --output bench-lazy/
"""
from __future__ import annotations

import copy
import logging
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .report import table
from .machine import quiet
from .steps import compose, fairseq_sample, write_dictionary

logger = logging.getLogger("studies.benchmarks.lazy_vs_dense")  # also when run as __main__


@dataclass
class Settings:
    config: str = "hmlm_tiny"
    vocab_size: int = 2005  # fairseq's dictionary with <mask>: 4 specials, 2,000 words, <mask>
    batch: int = 4  # sequences a batch
    length: int = 32  # tokens a sequence, <s> first
    steps: int = 50
    lr: float = 1e-3  # constant: no warmup, no decay
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    zipf_exponent: float = 1.0
    held_out_batches: int = 16
    seed: int = 1


def zipf_batches(count: int, settings: Settings, dictionary, seed: int) -> list:
    """`count` masked-LM samples: <s>, then words drawn with probability proportional to 1 / rank^s; 15% of
    the words shown as <mask> and predicted (at least one a batch)."""
    generator = torch.Generator().manual_seed(seed)
    first, words = dictionary.nspecial, len(dictionary) - dictionary.nspecial - 1  # the last entry is <mask>
    weights = torch.arange(1, words + 1, dtype=torch.float64).pow(-settings.zipf_exponent)
    pad, mask = dictionary.pad(), dictionary.index("<mask>")
    samples = []
    for _ in range(count):
        drawn = torch.multinomial(weights, settings.batch * (settings.length - 1), replacement=True,
                                  generator=generator).view(settings.batch, -1) + first
        tokens = torch.cat([torch.full((settings.batch, 1), dictionary.bos()), drawn], dim=1)
        selected = torch.rand(tokens.shape, generator=generator) < 0.15
        selected[:, 0] = False
        selected[0, 1] = True
        samples.append(fairseq_sample(tokens.masked_fill(selected, mask), torch.where(selected, tokens, pad), pad))
    return samples


def _train_step(model, criterion, optimizer, sample, clip_norm):
    """What fairseq's Trainer.train_step does to the parameters in one process: backward of the summed
    loss, gradients divided by the sample size, clipped, one optimizer step. Dropout off (eval mode), so
    that both runs compute the same function. fairseq's clipping takes its norms in float32, which the
    float64 reference does not want: torch's clip_grad_norm_ computes the same coefficient,
    max_norm / (norm + 1e-6) capped at 1, in the gradients' dtype."""
    loss, sample_size, _ = criterion(model, sample)
    optimizer.backward(loss)
    optimizer.multiply_grads(1.0 / sample_size)
    if any(p.grad is not None and p.grad.is_sparse for p in optimizer.params):
        optimizer.clip_grad_norm(clip_norm)  # lazy_adam's own
    else:
        torch.nn.utils.clip_grad_norm_(optimizer.params, clip_norm)
    optimizer.step()


def held_out_loss(model, criterion, samples) -> float:
    """The CWT loss in bits per predicted position over `samples`."""
    total = positions = 0.0
    with torch.no_grad():
        for sample in samples:
            loss, sample_size, _ = criterion(model, sample)
            total, positions = total + float(loss), positions + sample_size
    return total / positions / math.log(2)


def movement_ratios(initial, lazy, dense, touched, steps: int) -> dict:
    """Per bucket of `touched` (steps each row was touched in): rows, summed distance travelled under lazy
    Adam and dense AdamW (L2 per row), and their ratio (None for a bucket with no row or no dense movement)."""
    lazy_moved = (lazy.double() - initial.double()).norm(dim=1)
    dense_moved = (dense.double() - initial.double()).norm(dim=1)
    buckets = {"never": (0, 0), f"1-{min(5, steps - 1)} steps": (1, min(5, steps - 1)),
               f"6-{steps - 1} steps": (6, steps - 1), f"all {steps} steps": (steps, steps)}
    result = {}
    for name, (fewest, most) in buckets.items():
        if fewest > most:  # a short run has no "6-49 steps"
            continue
        rows = (touched >= fewest) & (touched <= most)
        lazy_sum, dense_sum = float(lazy_moved[rows].sum()), float(dense_moved[rows].sum())
        result[name] = {"rows": int(rows.sum()), "lazy": lazy_sum, "dense": dense_sum,
                        "ratio": lazy_sum / dense_sum if dense_sum > 0 else None}
    return result


def measure(settings: Settings = Settings()) -> dict:
    """Train the two runs and compare them (see the module docstring); returns the numbers."""
    from fairseq import optim, tasks

    from fairseq_headless.sparse_embedding import OVERRIDES, enable_sparse_embedding_update

    quiet()
    positions = settings.batch * settings.length
    with tempfile.TemporaryDirectory(prefix="lazy-vs-dense-") as data:
        write_dictionary(Path(data), settings.vocab_size, "encoder")
        common = [f"task.data={data}", "common.cpu=true", f"optimization.lr=[{settings.lr}]",
                  f"optimizer.weight_decay={settings.weight_decay}", f"optimization.clip_norm={settings.clip_norm}"]
        # the reference's CWT loss in chunks: that path keeps float64 (the one-block path rounds logits to fp32)
        dense_cfg = compose(settings.config, common + [f"criterion.chunk_size={positions}"])
        lazy_cfg = compose(settings.config, common + list(OVERRIDES))
        task = tasks.setup_task(dense_cfg.task)
        torch.manual_seed(settings.seed)
        lazy_model = task.build_model(dense_cfg.model).eval()  # one initialisation for both
    dense_model = copy.deepcopy(lazy_model).double()
    enable_sparse_embedding_update(lazy_model)  # what lazy_cfg's model.sparse_embedding_update=true does
    dictionary = task.source_dictionary
    if len(dictionary) != settings.vocab_size:
        raise ValueError(f"{settings.config}: a dictionary of {len(dictionary)} rows, not {settings.vocab_size}")
    embeddings = {"lazy": lazy_model.input_embeddings().weight, "dense": dense_model.input_embeddings().weight}
    initial = embeddings["lazy"].detach().clone()
    runs = {"lazy": (lazy_model, task.build_criterion(lazy_cfg.criterion),
                     optim.build_optimizer(lazy_cfg.optimizer, list(lazy_model.parameters()))),
            "dense": (dense_model, task.build_criterion(dense_cfg.criterion),
                      optim.build_optimizer(dense_cfg.optimizer, list(dense_model.parameters())))}
    train = zipf_batches(settings.steps, settings, dictionary, settings.seed)
    held_out = zipf_batches(settings.held_out_batches, settings, dictionary, settings.seed + 1)
    touched = torch.zeros(len(dictionary), dtype=torch.long)
    for step, sample in enumerate(train):
        for name, (model, criterion, optimizer) in runs.items():
            optimizer.zero_grad()
            _train_step(model, criterion, optimizer, sample, settings.clip_norm)
        touched[embeddings["lazy"].grad.coalesce().indices()[0]] += 1  # the rows lazy Adam updated
        if (step + 1) % 10 == 0 or step + 1 == settings.steps:
            logger.info(f"lazy vs dense: step {step + 1}/{settings.steps}")
    ratios = movement_ratios(initial, embeddings["lazy"].detach(), embeddings["dense"].detach(), touched,
                             settings.steps)
    losses = {name: held_out_loss(model, criterion, held_out) for name, (model, criterion, _) in runs.items()}
    return {"settings": settings.__dict__, "buckets": ratios, "held_out_loss_bits": losses,
            "touched": touched.tolist()}


def markdown(result: dict) -> str:
    s, loss = result["settings"], result["held_out_loss_bits"]
    rows = [[name, b["rows"], None if b["ratio"] is None else f"{b['ratio']:.4f}x"] for name, b in result["buckets"].items()]
    return "\n\n".join([
        f"Lazy Adam (float32) against dense AdamW (float64): `{s['config']}`, V = {s['vocab_size']:,}, Zipf tokens "
        f"(exponent {s['zipf_exponent']:g}), {s['batch']} x {s['length']} tokens a batch, {s['steps']} steps, lr "
        f"{s['lr']:g} (constant), weight decay {s['weight_decay']:g}, clip {s['clip_norm']:g}, seed {s['seed']}.",
        table(rows, ["rows touched in", "rows", "movement, lazy / dense"]),
        f"Held-out CWT loss ({s['held_out_batches']} batches, bits per predicted position): "
        f"lazy {loss['lazy']:.4f}, dense {loss['dense']:.4f}."]) + "\n"


def main(argv=None) -> int:
    from fairseq_headless.cli import InputError, Parser
    from fairseq_headless.files import write_json_atomic, write_text_atomic

    defaults = Settings()
    parser = Parser(prog="python -m studies.benchmarks.lazy_vs_dense", description=(
        "How far lazy Adam (the sparse embedding update) moves rare and frequent embedding rows against dense "
        "AdamW (the paper's), and the held-out CWT loss of both (BENCHMARKS.md)."))
    parser.add_argument("--steps", type=int, default=defaults.steps, help="training steps of both runs")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="initialisation and batches")
    parser.add_argument("--output", type=Path, default=None, help="folder for lazy_vs_dense.json and .md")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.steps < 7:
        raise InputError("--steps must be at least 7, so that every bucket (1-5, 6 to steps-1, all) can hold rows")
    result = measure(Settings(steps=args.steps, seed=args.seed))
    text = markdown(result)
    print(text, end="")
    if args.output:
        write_json_atomic(args.output / "lazy_vs_dense.json", result)
        write_text_atomic(args.output / "lazy_vs_dense.md", text)
    return 0


if __name__ == "__main__":
    from fairseq_headless.cli import run as run_command

    sys.exit(run_command(main))
