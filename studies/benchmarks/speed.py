"""Speed and memory of headless against vanilla training (paper Fig.2, Fig.6b, Tab.6, §3.4).

    python -m studies.benchmarks.speed --quick --output bench/   # BENCHMARKS.md's CPU sizes
    python -m studies.benchmarks.speed --output bench/           # the whole sweep (meant for a GPU)
    python -m studies.benchmarks.speed --smoke --output /tmp/b   # tiny models (what the tests run)

Three parts, each optional: training steps (:mod:`.steps`), the loss alone (:mod:`.loss`) and, with
``--curves DATA``, the training curves of the dense and sparse embedding update (:mod:`.curves`).
Writes OUTPUT/benchmark.json (machine, settings, every record), benchmark.md and PNG plots.
Vocabulary sizes take k = 1000 (50k = 50,000), loss sizes k = 1024 (16k = 16,384).
"""
import argparse
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

import torch

from fairseq_headless.cli import InputError, Parser
from fairseq_headless.data.folder import open_data_folder
from fairseq_headless.files import write_text_atomic
from . import curves, loss, report, steps
from .machine import describe, quiet

logger = logging.getLogger("studies.benchmarks.speed")  # also when run as __main__
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"

PRESETS = {
    # Each sweep: architectures x vocabulary sizes x micro-batches (None: the architecture's own, steps.ARCHS).
    "smoke": dict(
        sweeps=[(["bert-tiny", "gpt2-tiny"], [300], [None])], embedding_update=["dense", "sparse"],
        negatives=["batch"], chunk=[None], steps=2, frozen=True, reference_vocab=200,
        loss_k=[64, 128], loss_vocab=1000, loss_dim=32, loss_chunk=32, loss_repeats=(2, 1, 1),
        threads=1,  # tiny ops: one thread is faster, and immune to OpenMP spinning on a busy machine
    ),
    "quick": dict(
        # V=8k only as the reference inside the 131k group; the body at 50k only; no re-warm step
        sweeps=[(["bert-small", "pythia-70m"], [50000, 131000], [None])], embedding_update=["dense", "sparse"],
        negatives=["batch"], chunk=[None], steps=3, frozen=False, rewarm=False, body_sizes=[50000],
        reference_vocab=8000, loss_k=[1024, 4096, 16384], loss_vocab=50000, loss_dim=512, loss_chunk=4096,
        loss_repeats=(3, 1, 1), loss_ce_max_k=4096, loss_one_block_time_max_k=4096,
        loss_implementations=["cross_entropy", "cross_entropy_floor", "cwt", "cwt_chunked", "cwt_floor"],
    ),
    "full": dict(
        sweeps=[
            (["bert-small", "bert-base", "gpt2-quarter", "pythia-70m"], [8000, 32000, 50000, 131000, 256000], [None]),
            (["bert-base"], [50000], [8, 16, 64]),  # Fig.2: latency and memory against the micro-batch
            (["pythia-70m"], [50000], [1, 2, 8]),
        ],
        embedding_update=["dense", "sparse"], negatives=["batch", "unique"], chunk=[None, 0], steps=5, frozen=True,
        reference_vocab=8000, loss_k=[1024, 2048, 4096, 8192, 16384], loss_vocab=50000, loss_dim=512,
        loss_chunk=4096, loss_repeats=(5, 3, 1),  # timed calls up to K=2k, up to 8k, beyond
    ),
}


def sizes(text, unit, option):
    values = []
    for item in text.lower().split(","):
        item = item.strip()
        try:
            values.append(int(float(item[:-1]) * unit) if item.endswith("k") else int(item))
        except ValueError:
            raise InputError(f"{option}: '{item}' is not a size (e.g. 8k, 50000)") from None
    if min(values) <= 0:
        raise InputError(f"{option}: sizes must be positive")
    return values


def names(text, option, allowed):
    items = [item.strip() for item in text.split(",")]
    unknown = [item for item in items if item not in allowed]
    if unknown:
        raise InputError(f"{option}: unknown {', '.join(unknown)}; choose from {', '.join(allowed)}")
    return items


def at_least(value, minimum, option):
    if value is not None and value < minimum:
        raise InputError(f"{option} {value}: give at least {minimum}")
    return value


def parse_args(argv):
    parser = Parser(prog="python -m studies.benchmarks.speed", description=__doc__.split("\n\n")[0],
                    formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--output", required=True, type=Path, help="folder for benchmark.json/.md and the plots")
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument("--quick", action="store_true", help="BERT-small and Pythia-70M at V = 50k, 131k (the "
                        "headless step at 8k too), both embedding updates; the loss at K = 1k, 4k, 16k")
    preset.add_argument("--smoke", action="store_true", help="tiny models (what the tests run)")
    parser.add_argument("--force", action="store_true", help="overwrite a benchmark.json already in --output")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32",
                        help="fp16/bf16 use fairseq's memory-efficient wrapper for every model (default fp32)")
    parser.add_argument("--archs", help="comma-separated, of: " + ", ".join(steps.ARCHS))
    parser.add_argument("--vocab", help="vocabulary sizes, e.g. 8k,32k,50k,131k,256k (k = 1000)")
    parser.add_argument("--batch", help="sequences per micro-batch, e.g. 8,16,32 (default: each architecture's own)")
    parser.add_argument("--seq-len", type=int, help="tokens per sequence (default: each architecture's own)")
    parser.add_argument("--embedding-update", help="dense,sparse (model.sparse_embedding_update)")
    parser.add_argument("--negatives", help="batch,unique")
    parser.add_argument("--chunk", help="criterion chunk sizes, e.g. 0,4096 ('config': the YAML's own)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's, i.e. all cores)")
    parser.add_argument("--steps", type=int, help="timed steps per variant, after the untimed ones")
    parser.add_argument("--reference-vocab", help="also time the headless variants at this vocabulary size, "
                        "interleaved in the group of the largest one (default 8k; 0: off)")
    parser.add_argument("--frozen", action="store_true", help="also time the body with untrained input embeddings")
    parser.add_argument("--loss-k", help="loss benchmark sizes K, e.g. 1k,4k,16k (k = 1024)")
    parser.add_argument("--no-steps", action="store_true", help="skip the training-step benchmark")
    parser.add_argument("--no-loss", action="store_true", help="skip the loss benchmark")
    parser.add_argument("--curves", type=Path, metavar="DATA", help="also train --curves-config with the dense and "
                        "the sparse embedding update on this prepared data folder and plot both loss curves")
    parser.add_argument("--curves-config", default="hmlm_tiny", help="config for --curves (default hmlm_tiny)")
    parser.add_argument("--curves-updates", type=int, default=300, help="updates per --curves run (default 300)")
    return parser.parse_args(argv)


def plan(args):
    """The settings of this run: the preset, overridden by any option given."""
    name = "smoke" if args.smoke else "quick" if args.quick else "full"
    settings = dict(PRESETS[name], preset=name)
    if args.archs or args.vocab or args.batch:
        archs = names(args.archs, "--archs", steps.ARCHS) if args.archs else sorted({a for s in settings["sweeps"] for a in s[0]})
        vocab = sizes(args.vocab, 1000, "--vocab") if args.vocab else settings["sweeps"][0][1]
        if min(vocab) < 16:
            raise InputError(f"--vocab: {min(vocab)} is too small (at least 16)")
        settings["sweeps"] = [(archs, vocab, sizes(args.batch, 1, "--batch") if args.batch else [None])]
        if args.vocab:
            settings["body_sizes"] = None  # the body at every size asked for
    for option, allowed in (("embedding_update", ("dense", "sparse")), ("negatives", ("batch", "unique"))):
        if getattr(args, option):
            settings[option] = names(getattr(args, option), "--" + option.replace("_", "-"), allowed)
    if args.chunk:
        items = [item.strip() for item in args.chunk.split(",")]
        if not all(item == "config" or item.isdigit() for item in items):
            raise InputError(f"--chunk: give sizes (0 = one block) or 'config', not {args.chunk}")
        settings["chunk"] = [None if item == "config" else int(item) for item in items]
    for option, minimum in (("threads", 1), ("seq_len", 8), ("steps", 1)):
        if at_least(getattr(args, option), minimum, "--" + option.replace("_", "-")) is not None:
            settings[option] = getattr(args, option)
    settings["frozen"] = settings["frozen"] or args.frozen
    if args.reference_vocab is not None:
        settings["reference_vocab"] = 0 if args.reference_vocab.strip() == "0" else \
            sizes(args.reference_vocab, 1000, "--reference-vocab")[0]
        if name == "quick" and not settings["reference_vocab"] and not args.vocab:  # 8k as a group of its own
            settings["sweeps"] = [(a, sorted(set(v) | {8000}), b) for a, v, b in settings["sweeps"]]
    if args.loss_k:
        settings["loss_k"] = sizes(args.loss_k, 1024, "--loss-k")
    if args.precision == "fp16" and args.device == "cpu" and "sparse" in settings["embedding_update"] \
            and not args.no_steps:
        raise InputError("--precision fp16 on a CPU cannot run the sparse embedding update (PyTorch has no CPU "
                         "kernel adding fp16 sparse gradients): use --precision bf16 or --embedding-update dense")
    return settings


def run_parts(args, settings, device, result: dict) -> None:
    """The training steps, the loss and the curves, as the settings ask, into ``result``."""
    groups = 0 if args.no_steps else sum(len(a) * len(v) * len(b) for a, v, b in settings["sweeps"])
    implementations = settings.get("loss_implementations", loss.IMPLEMENTATIONS)
    total = groups + (0 if args.no_loss else len(settings["loss_k"]) * len(implementations)) + bool(args.curves)
    done = [0]

    def advance():
        done[0] += 1
        logger.info(f"benchmark: {done[0]}/{total} parts")

    for archs, vocab_sizes, batches in [] if args.no_steps else settings["sweeps"]:
        records, skipped = steps.run(
            archs, vocab_sizes, batches, settings["embedding_update"], settings["negatives"], settings["chunk"],
            settings["steps"], CONFIG_DIR, device, args.precision, frozen=settings["frozen"],
            reference_vocab=settings["reference_vocab"], seq_len=settings.get("seq_len"),
            rewarm=settings.get("rewarm", True), body_sizes=settings.get("body_sizes"), on_group=advance)
        result["steps"] += records
        result["steps_skipped"] += skipped
    if not args.no_loss:
        repeats = settings["loss_repeats"]
        result["loss"] = loss.run(
            settings["loss_k"], settings["loss_dim"], settings["loss_vocab"], settings["loss_chunk"],
            lambda k: repeats[0] if k <= 2048 else repeats[1] if k <= 8192 else repeats[2], device,
            {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.precision],
            implementations=implementations, cross_entropy_max_k=settings.get("loss_ce_max_k"),
            one_block_time_max_k=settings.get("loss_one_block_time_max_k"), on_point=advance)
    if args.curves is not None:
        result["loss_curves"] = curves.run(CONFIG_DIR, args.curves_config, args.curves.resolve(),
                                           args.curves_updates, threads=settings.get("threads"))
        advance()


def write_outputs(output: Path, result: dict) -> None:
    """benchmark.json, benchmark.md and the plots."""
    output.mkdir(parents=True, exist_ok=True)
    plots = {"steps_vocab.png": result["steps"] and report.plot_vocab,
             "steps_batch.png": result["steps"] and report.plot_batch,
             "loss.png": any(r["time_s"] for r in result["loss"]) and report.plot_loss,
             "loss_curves.png": result["loss_curves"] and report.plot_curves}
    data = {"loss.png": result["loss"], "loss_curves.png": result["loss_curves"]}
    result["plots"] = [name for name, draw in plots.items()
                       if draw and draw(data.get(name, result["steps"]), output / name) is not False]
    markdown = report.markdown(result, result["command"]) + "\n".join(f"![{p}]({p})" for p in result["plots"]) + "\n"
    write_text_atomic(output / "benchmark.md", markdown)
    write_text_atomic(output / "benchmark.json", json.dumps(result, indent=1) + "\n")
    print(markdown)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    settings = plan(args)
    report.check_output(args.output, "benchmark.json", args.force)
    if args.curves is not None:
        open_data_folder(args.curves, f"--curves {args.curves}", need_tokenizer=False).require_dictionary(
            f"--curves {args.curves}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device here; use --device cpu")
    quiet()
    if settings.get("threads"):
        torch.set_num_threads(settings["threads"])  # forked measurements inherit it
    started = time.time()
    result = {"machine": dict(describe(device), precision=args.precision), "settings": settings,
              "command": shlex.join(["python", "-m", "studies.benchmarks.speed", *argv]), "steps": [],
              "steps_skipped": [], "loss": [], "loss_curves": None}
    run_parts(args, settings, device, result)
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["wall_s"] = round(time.time() - started, 1)
    write_outputs(args.output, result)
    return 0


if __name__ == "__main__":
    from fairseq_headless.cli import run as run_command

    sys.exit(run_command(main))
