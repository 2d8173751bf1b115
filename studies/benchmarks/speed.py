"""Speed and memory of headless against vanilla training (paper Fig.2, Fig.6b, Tab.6, §3.4).

    python -m studies.benchmarks.speed --quick --output bench/      # the issue's targets, < 10 min on 2 CPU cores
    python -m studies.benchmarks.speed --output bench/              # the whole sweep (hours on a CPU)
    python -m studies.benchmarks.speed --smoke --output /tmp/b      # seconds: tiny models (the tests run this)
    python -m studies.benchmarks.speed --quick --device cuda --precision fp16 --output bench-gpu/

Three parts, each optional:

1. training steps (``--archs``, ``--vocab``, ``--batch``, ``--seq-len``, ``--embedding-update``, ``--negatives``,
   ``--chunk``): for every architecture x vocabulary size x micro-batch, the vanilla twin, the
   headless model (per embedding update, negatives and chunk mode) and the headless body with a
   trivial loss (``--quick``: at V=50k only) are built from the project's YAML configs and trained through fairseq's
   ``Trainer.train_step`` in one process, alternating; median step time and peak memory
   (:mod:`studies.benchmarks.steps`); ``--reference-vocab`` times the headless
   variants at that size again inside the largest vocabulary's group, for the vocabulary
   dependence of the headless step without the machine's drift between groups;
2. the loss alone (``--loss-k``): CWT (one block and chunked) against full-vocabulary
   cross-entropy and against the bare matrix products each must do
   (:mod:`studies.benchmarks.loss`);
3. with ``--curves DATA``: the training curves of the dense and sparse embedding update on a
   prepared corpus (:mod:`studies.benchmarks.curves`).

Writes ``OUTPUT/benchmark.json`` (machine, settings, every record), ``OUTPUT/benchmark.md`` (the
tables, and the issue's targets checked) and PNG plots; refuses to overwrite a result without
``--force``. Vocabulary sizes take k = 1000 (``50k`` = 50,000), loss sizes k = 1024 (``16k`` = 16,384).

The command line is studies/benchmarks/speed.py.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from fairseq_headless.cli import InputError, Parser
from fairseq_headless.files import atomic_path, write_text_atomic

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"

PRESETS = {
    # Each sweep is a cartesian product of architectures x vocabulary sizes x micro-batches (None: the
    # architecture's own, see studies.benchmarks.steps.ARCHS).
    "smoke": dict(
        sweeps=[(["bert-tiny", "gpt2-tiny"], [300], [None])], embedding_update=["dense", "sparse"],
        negatives=["batch"], chunk=[None], steps=2, frozen=True,
        loss_k=[64, 128], loss_vocab=1000, loss_dim=32, loss_chunk=32, loss_repeats=(2, 1, 1),
        threads=1,  # tiny ops: one thread is faster, and immune to OpenMP spinning on a busy machine
        reference_vocab=200,
    ),
    "quick": dict(
        # V=8k only as the reference inside the 131k group (the flatness target): a group of its own
        # would add ~3 minutes on 2 cores, and the targets need no vanilla step at 8k.
        sweeps=[(["bert-small", "pythia-70m"], [50000, 131000], [None])], embedding_update=["dense", "sparse"],
        negatives=["batch"], chunk=[None], steps=3, frozen=False, rewarm=False,
        body_sizes=[50000],  # the issue states the limits (vanilla / body) at V=50k
        # timed calls per loss point: K <= 2k, K <= 8k, beyond (so K=4k once, like 16k)
        loss_k=[1024, 4096, 16384], loss_vocab=50000, loss_dim=512, loss_chunk=4096, loss_repeats=(3, 1, 1),
        loss_ce_max_k=4096,
        loss_one_block_time_max_k=4096,  # at 16k one call (14 s), for the memory target's denominator
        # the recompute variant is the fp16 path's, not a target: the full sweep times it
        loss_implementations=["cross_entropy", "cross_entropy_floor", "cwt", "cwt_chunked", "cwt_floor"],
        reference_vocab=8000,  # the headless variants at 8k again, interleaved in the 131k group
    ),
    "full": dict(
        sweeps=[
            (["bert-small", "bert-base", "gpt2-quarter", "pythia-70m"], [8000, 32000, 50000, 131000, 256000], [None]),
            (["bert-base"], [50000], [8, 16, 64]),  # Fig.2: latency and memory against the micro-batch
            (["pythia-70m"], [50000], [1, 2, 8]),
        ],
        embedding_update=["dense", "sparse"], negatives=["batch", "unique"], chunk=[None, 0], steps=5, frozen=True,
        loss_k=[1024, 2048, 4096, 8192, 16384], loss_vocab=50000, loss_dim=512, loss_chunk=4096,
        loss_repeats=(5, 3, 1), reference_vocab=8000,  # 5 calls up to K=2k, 3 up to 8k, 1 beyond
    ),
}


class UsageError(InputError):
    """Bad options of the benchmark: one ``error:`` line, exit status 2."""


def sizes(text, unit, option):
    values = []
    for item in text.split(","):
        item = item.strip().lower()
        try:
            values.append(int(float(item[:-1]) * unit) if item.endswith("k") else int(item))
        except ValueError:
            raise UsageError(f"{option}: '{item}' is not a size (e.g. 8k, 50000)") from None
    if any(v <= 0 for v in values):
        raise UsageError(f"{option}: sizes must be positive")
    return values


def parse_args(argv):
    parser = Parser(prog="benchmark.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--output", required=True, type=Path, help="folder for benchmark.json/.md and the plots")
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument("--quick", action="store_true", help="the issue's targets: BERT-small and Pythia-70M at "
                        "V = 50k, 131k (the headless step at 8k too), both embedding updates; the loss at K = 1k, 4k, "
                        "16k (< 10 min, 2 cores)")
    preset.add_argument("--smoke", action="store_true", help="tiny models, seconds (what the tests run)")
    parser.add_argument("--force", action="store_true", help="overwrite a benchmark.json already in --output")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32",
                        help="fp16/bf16 use fairseq's memory-efficient wrapper for every model (default fp32)")
    parser.add_argument("--archs", help="comma-separated, of: " + ", ".join(_arch_names()))
    parser.add_argument("--vocab", help="vocabulary sizes, e.g. 8k,32k,50k,131k,256k (k = 1000)")
    parser.add_argument("--batch", help="sequences per micro-batch, e.g. 8,16,32 (default: each architecture's own)")
    parser.add_argument("--seq-len", type=int, help="tokens per sequence for every architecture (default: each "
                        "architecture's own: 128 for the encoders, as the paper trains; Fig.2 used 512)")
    parser.add_argument("--embedding-update", help="dense,sparse (model.sparse_embedding_update)")
    parser.add_argument("--negatives", help="batch,unique")
    parser.add_argument("--chunk", help="criterion chunk sizes, e.g. 0,4096 ('config': the YAML's own)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's, i.e. all cores)")
    parser.add_argument("--steps", type=int, help="timed steps per variant, after two untimed ones")
    parser.add_argument("--reference-vocab", help="also time the headless variants at this vocabulary size, "
                        "interleaved in the group of the largest one: the vocabulary dependence measured in one "
                        "process (default 8k with --quick and the full sweep; 0: off)")
    parser.add_argument("--frozen", action="store_true", default=None,
                        help="also time the body with the input embeddings not trained at all")
    parser.add_argument("--loss-k", help="loss benchmark sizes K, e.g. 1k,4k,16k (k = 1024)")
    parser.add_argument("--loss-vocab", type=int, help="V of the cross-entropy in the loss benchmark (default 50000)")
    parser.add_argument("--no-steps", action="store_true", help="skip the training-step benchmark")
    parser.add_argument("--no-loss", action="store_true", help="skip the loss benchmark")
    parser.add_argument("--curves", type=Path, metavar="DATA",
                        help="also train hmlm_tiny with the dense and the sparse embedding update on this "
                        "prepared data folder and plot both loss curves")
    parser.add_argument("--curves-config", default="hmlm_tiny", help="config for --curves (default hmlm_tiny)")
    parser.add_argument("--curves-updates", type=int, default=300, help="updates per --curves run (default 300)")
    parser.add_argument("--config-dir", type=Path, default=CONFIG_DIR, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _arch_names():
    from .steps import ARCHS

    return list(ARCHS)


def plan(args):
    """The settings of this run: the preset, overridden by any option given."""
    from .steps import ARCHS

    name = "smoke" if args.smoke else "quick" if args.quick else "full"
    settings = dict(PRESETS[name], preset=name)
    if args.archs or args.vocab or args.batch:
        archs = [a.strip() for a in args.archs.split(",")] if args.archs else sorted({a for s in settings["sweeps"] for a in s[0]})
        unknown = [a for a in archs if a not in ARCHS]
        if unknown:
            raise UsageError(f"--archs: unknown {', '.join(unknown)}; choose from {', '.join(ARCHS)}")
        vocab = sizes(args.vocab, 1000, "--vocab") if args.vocab else settings["sweeps"][0][1]
        batches = sizes(args.batch, 1, "--batch") if args.batch else [None]
        settings["sweeps"] = [(archs, vocab, batches)]
        if args.vocab:
            settings["body_sizes"] = None  # the body at every size asked for
    for option in ("embedding_update", "negatives"):
        value = getattr(args, option)
        if value:
            allowed = {"embedding_update": ("dense", "sparse"), "negatives": ("batch", "unique")}[option]
            items = [v.strip() for v in value.split(",")]
            if any(v not in allowed for v in items):
                raise UsageError(f"--{option.replace('_', '-')}: choose from {', '.join(allowed)}")
            settings[option] = items
    if args.chunk:
        chunks = []
        for item in args.chunk.split(","):
            item = item.strip()
            if item != "config" and not item.isdigit():
                raise UsageError(f"--chunk: '{item}' is neither a size (0 = one block) nor 'config'")
            chunks.append(None if item == "config" else int(item))
        settings["chunk"] = chunks
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError("--threads must be at least 1")
        settings["threads"] = args.threads
    if args.seq_len is not None:
        if args.seq_len < 8:
            raise UsageError(f"--seq-len {args.seq_len}: give at least 8 tokens per sequence")
        settings["seq_len"] = args.seq_len
    if args.steps is not None:
        if args.steps < 1:
            raise UsageError("--steps must be at least 1")
        settings["steps"] = args.steps
    if args.frozen:
        settings["frozen"] = True
    if args.reference_vocab is not None:
        settings["reference_vocab"] = 0 if args.reference_vocab.strip() == "0" else \
            sizes(args.reference_vocab, 1000, "--reference-vocab")[0]
        if name == "quick" and not settings["reference_vocab"] and not args.vocab:
            # --quick measures V=8k only as the reference: without it, the 8k group comes back
            settings["sweeps"] = [(a, sorted(set(v) | {8000}), b) for a, v, b in settings["sweeps"]]
    if args.loss_k:
        settings["loss_k"] = sizes(args.loss_k, 1024, "--loss-k")
    if args.loss_vocab:
        settings["loss_vocab"] = args.loss_vocab
    if args.precision == "fp16" and args.device == "cpu" and "sparse" in settings["embedding_update"] \
            and not args.no_steps:
        raise UsageError("--precision fp16 on a CPU cannot run the sparse embedding update (PyTorch has no CPU "
                         "kernel adding fp16 sparse gradients): use --precision bf16 or --embedding-update dense")
    for sweep in settings["sweeps"]:
        for vocab in sweep[1]:
            if vocab < 16:
                raise UsageError(f"--vocab: {vocab} is too small (at least 16)")
    return settings


def check_output(args):
    if args.output.exists() and not args.output.is_dir():
        raise UsageError(f"--output {args.output} is a file; give a folder")
    if (args.output / "benchmark.json").exists() and not args.force:
        raise UsageError(f"--output {args.output} already holds benchmark.json; add --force to overwrite it")
    if args.curves is not None:
        from fairseq_headless.cli import InputError as DataError
        from fairseq_headless.data.folder import open_data_folder

        try:
            open_data_folder(args.curves, f"--curves {args.curves}", need_tokenizer=False).require_dictionary(
                f"--curves {args.curves}")
        except DataError as e:
            raise UsageError(str(e)) from None


def save_plot(function, records, path: Path):
    with atomic_path(path) as tmp:
        drawn = function(records, tmp)
        if drawn is False:  # nothing to draw: leave no file
            tmp.unlink(missing_ok=True)
    return None if drawn is False else path.name


def run_parts(args, settings, device, result: dict) -> None:
    """The training steps, the loss and the curves, as the settings ask, into ``result``."""
    import torch

    from fairseq_headless.data.progress import Parts
    from . import curves, loss, steps

    variants = len(steps.group_variants(settings["embedding_update"], settings["negatives"], settings["chunk"],
                                        settings["frozen"]))  # at most: fewer without the body, more with references
    groups = 0 if args.no_steps else sum(len(a) * len(v) * len(b) for a, v, b in settings["sweeps"])
    implementations = settings.get("loss_implementations", loss.IMPLEMENTATIONS)
    loss_points = 0 if args.no_loss else len(settings["loss_k"]) * len(implementations)
    # a bar on a terminal; redirected to a file (a cluster job's log), a line every 30 s and at the end
    bar = Parts("benchmark", groups + loss_points + (2 if args.curves else 0),
                log=lambda line: print(line, file=sys.stderr, flush=True))
    progress, advance = bar.report, bar.advance
    if not args.no_steps:
        bar.write(f"training steps: {groups} groups x up to {variants} variants, {settings['steps']} timed steps each")
        for archs, vocab_sizes, batches in settings["sweeps"]:
            records, skipped = steps.run(
                archs, vocab_sizes, batches, settings["embedding_update"], settings["negatives"], settings["chunk"],
                settings["steps"], args.config_dir, device, args.precision, frozen=settings["frozen"],
                reference_vocab=settings["reference_vocab"], seq_len=settings.get("seq_len"),
                rewarm=settings.get("rewarm", True), body_sizes=settings.get("body_sizes"),
                on_progress=progress, on_group=advance,
            )
            result["steps"] += records
            result["steps_skipped"] += skipped
    if not args.no_loss:
        repeats = settings["loss_repeats"]
        result["loss"] = loss.run(
            settings["loss_k"], settings["loss_dim"], settings["loss_vocab"], settings["loss_chunk"],
            lambda k: repeats[0] if k <= 2048 else repeats[1] if k <= 8192 else repeats[2], device,
            {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.precision],
            implementations=implementations, cross_entropy_max_k=settings.get("loss_ce_max_k"),
            one_block_time_max_k=settings.get("loss_one_block_time_max_k"),
            on_progress=progress, on_point=advance,
        )
        result["loss_agreement"] = loss.agreement()
    if args.curves is not None:
        result["loss_curves"] = curves.run(args.config_dir, args.curves_config, args.curves.resolve(),
                                           args.curves_updates, threads=settings.get("threads"), report=progress)
        bar.advance(2)
    bar.close()


def write_outputs(output: Path, result: dict, command: str) -> None:
    """benchmark.json, benchmark.md and the plots."""
    from . import report

    output.mkdir(parents=True, exist_ok=True)
    plots = []
    if result["steps"]:
        plots.append(save_plot(report.plot_vocab, result["steps"], output / "steps_vocab.png"))
        plots.append(save_plot(report.plot_batch, result["steps"], output / "steps_batch.png"))
    if any(r["time_s"] for r in result["loss"]):
        plots.append(save_plot(report.plot_loss, result["loss"], output / "loss.png"))
    if result["loss_curves"]:
        plots.append(save_plot(report.plot_curves, result["loss_curves"], output / "loss_curves.png"))
    result["plots"] = [p for p in plots if p]
    markdown = report.markdown(result, command) + "\n" + "\n".join(f"![{p}]({p})" for p in result["plots"]) + "\n"
    write_text_atomic(output / "benchmark.md", markdown)
    write_text_atomic(output / "benchmark.json", json.dumps(result, indent=1) + "\n")
    print(markdown)
    print(f"wrote {output / 'benchmark.json'} ({result['wall_s']:.0f} s)", file=sys.stderr)


def main(argv=None) -> int:
    """studies/benchmarks/speed.py: bad options raise :class:`UsageError` (``cli.run`` prints it, exit 2)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    settings = plan(args)
    check_output(args)
    import torch

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device here; use --device cpu")
    from . import report, steps
    from .machine import describe

    steps.quiet()
    if settings.get("threads"):
        torch.set_num_threads(settings["threads"])  # forked measurements inherit it
    command = "python -m studies.benchmarks.speed " + " ".join(shlex.quote(a) for a in argv)
    started = time.time()
    machine = describe(device)
    machine["precision"] = args.precision
    result = {"machine": machine, "command": command, "settings": _jsonable(settings), "steps": [],
              "steps_skipped": [], "loss": [], "loss_agreement": None, "loss_curves": None}
    run_parts(args, settings, device, result)
    machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["wall_s"] = round(time.time() - started, 1)
    result["targets"] = report.targets(result["steps"], result["loss"])
    write_outputs(args.output, result, command)
    return 0


def _jsonable(settings):
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()}


if __name__ == "__main__":
    import sys

    from fairseq_headless.cli import run as run_command

    sys.exit(run_command(main))
