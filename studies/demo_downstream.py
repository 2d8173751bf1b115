"""The demo's downstream check: fine-tune each exported model (and a random-init control) on SOTU-era.

    from studies.demo_downstream import run_demo_check
    table = run_demo_check({"headless": hf_dir_1, "vanilla": hf_dir_2}, corpus="demo_runs/sotu",
                           output=run_dir / "downstream")

writes ``downstream/results_sotu-era.{md,json,png}`` (one row per model, the control
last) and returns the markdown. The task is described in :mod:`.sotu_era`; the
fine-tuning is the GLUE protocol of this package (balanced cross-entropy, constant LR
after 10% warmup, dev accuracy after every epoch, best epoch reported) with a learning
rate and epoch count sized for CPU-tiny models rather than the paper's BERT-base values.
"""
from __future__ import annotations

import json
from pathlib import Path

from fairseq_headless.evaluation.results import mean_std
from fairseq_headless.evaluation.suite import SuiteRunner, parse_models, write_tables
from fairseq_headless.cli import InputError as EvaluationInputError
from studies.sotu_era import ERAS, SOTU_ERA, build_sotu_era, random_init_copy

CONTROL = "random-init"


def run_demo_check(models: dict, corpus: Path, output: Path, epochs: int = 3, seeds: int = 1,
                   learning_rate: float = 1e-4, batch_size: int = 32, train_per_era: int = 400,
                   dev_per_era: int = 100, control: bool = True, force: bool = False, threads: int = 1) -> str:
    """Fine-tune every model of ``models`` ({name: HF folder}) on SOTU-era; returns the markdown table.

    ``threads``: torch CPU threads during the check (restored after; 0 = leave as is). One thread
    is the fastest for CPU-tiny models on a shared machine.
    """
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _run_demo_check(models, corpus, output, epochs, seeds, learning_rate, batch_size, train_per_era,
                               dev_per_era, control, force)
    finally:
        torch.set_num_threads(previous)


def _run_demo_check(models, corpus, output, epochs, seeds, learning_rate, batch_size, train_per_era, dev_per_era,
                    control, force) -> str:
    from fairseq_headless.evaluation.finetune import FinetuneConfig, finetune

    output = Path(output)
    if output.exists() and not output.is_dir():
        raise EvaluationInputError(f"--output {output}: exists and is not a folder")
    refs = parse_models([f"{name}={path}" for name, path in models.items()])
    if any(r.name == CONTROL for r in refs):
        raise EvaluationInputError(f"--model: the name '{CONTROL}' is taken by the control")
    train, dev = build_sotu_era(corpus, train_per_era, dev_per_era)
    if control:
        control_dir = output / "_control-model"
        if force or not (control_dir / "config.json").is_file():
            random_init_copy(refs[0].path, control_dir)
        refs += parse_models([f"{CONTROL}={control_dir}"])
    config = FinetuneConfig(learning_rate=learning_rate, weight_decay=0.0, batch_size=batch_size, epochs=epochs,
                            loss="balanced", max_length=128)
    bench = SuiteRunner(output, force=force)
    for ref in refs:
        settings = {"model_dir": str(ref.path), "task": SOTU_ERA.name, "data": str(Path(corpus).resolve()),
                    "train_per_era": train_per_era, "dev_per_era": dev_per_era, **config.settings()}

        def run(seed, run_dir, ref=ref):
            return finetune(ref.path, SOTU_ERA, train, {"dev": dev}, config, seed, run_dir,
                            desc=f"{ref.name} {SOTU_ERA.name} seed {seed}")

        results = bench.run(ref, SOTU_ERA.name, settings, list(range(seeds)), run)
        renamed = {s: {**r, "best": {SOTU_ERA.name: r["best"]["dev"]}} for s, r in results.items()}
        bench.write_job_summary(ref, SOTU_ERA.name, SOTU_ERA.suite, "main", settings, renamed)
    notes = [
        "SOTU-era is not a task of the paper: it is built by the demo from its own corpus (State of the Union "
        f"addresses, public domain). Which era is a sentence from: {', '.join(e for e, _, _ in ERAS)} (chance 25%).",
        f"{len(train)} training / {len(dev)} dev sentences, balanced; split by address (every 4th address of an "
        "era is dev), so dev sentences come from speeches unseen in fine-tuning (but seen, unlabelled, in "
        "pretraining).",
        f"Fine-tuning: balanced cross-entropy, AdamW lr {learning_rate:g}, batch {batch_size}, constant LR after "
        f"10% warmup, {epochs} epochs, best epoch, {seeds} seed(s); lr and epochs sized for tiny CPU models, not "
        "the paper's.",
        f"'{CONTROL}': an encoder of the same shape and tokenizer with random weights, fine-tuned the same way. "
        "A pretrained model should beat it; with one seed, a point or two between pretrained models is noise.",
    ]
    md = write_tables(output, SOTU_ERA.suite, "Downstream check: SOTU era classification (dev accuracy)",
                      [("main", "", [SOTU_ERA.name])], [], {SOTU_ERA.name: "accuracy"}, notes,
                      last_rows=(CONTROL,))
    return md.read_text(encoding="utf-8")


def per_seed_accuracy(output: Path, model: str) -> dict:
    """{seed: dev accuracy at the best epoch} of one model of a finished check in ``output``."""
    summary = json.loads((Path(output) / model / f"{SOTU_ERA.name}.json").read_text(encoding="utf-8"))
    return {int(seed): float(value) for seed, value in summary["columns"][SOTU_ERA.name]["accuracy"].items()}


def difference_line(output: Path, first: str, second: str) -> str:
    """``first`` minus ``second`` in dev accuracy points, paired by fine-tuning seed (both models start each seed
    from the same classifier-head initialisation and batch order); mean ± sample std over the seeds, and no
    ± with one seed, whose spread is unknown."""
    a, b = per_seed_accuracy(output, first), per_seed_accuracy(output, second)
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise EvaluationInputError(f"{output}: {first} and {second} were fine-tuned with no seed in common "
                                   f"({sorted(a)} vs {sorted(b)}); run both with the same --seeds")
    mean, std = mean_std([100 * (a[s] - b[s]) for s in seeds])
    spread = f" ± {std:.2f} (mean ± std over {len(seeds)} fine-tuning seeds, paired by seed)" if len(seeds) > 1 \
        else " (1 fine-tuning seed: its spread is unknown)"
    return f"{first} − {second}: {mean:+.2f} accuracy points{spread}"


def main(argv=None) -> int:
    """The command line; bad input: one ``error:`` line, exit 2 (fairseq_headless.cli)."""
    from fairseq_headless.cli import run

    return run(_main, argv)


def _main(argv) -> int:
    import argparse

    from fairseq_headless.cli import Parser
    from fairseq_headless.evaluation.cli import quiet_root_logger

    quiet_root_logger()
    p = Parser(description="The demo's downstream check (SOTU era classification); "
                                            "see studies/sotu_era.py for the task.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", nargs="+", action="extend", required=True, metavar="[NAME=]DIR",
                   help="exported Hugging Face encoder folder(s)")
    p.add_argument("--corpus", type=Path, default=Path("demo_runs/sotu"),
                   help="folder of <year>_<name>_<party>.txt addresses (scripts/fetch_corpus.py)")
    p.add_argument("--output", type=Path, required=True, help="results folder")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--train-per-era", type=int, default=400)
    p.add_argument("--dev-per-era", type=int, default=100)
    p.add_argument("--no-control", action="store_true", help="skip the random-init control")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    p.add_argument("--force", action="store_true", help="redo runs whose results exist")
    args = p.parse_args(argv)
    models = {}
    for value in args.model:
        name, sep, path = value.partition("=")
        models[name if sep else Path(value).resolve().name] = path if sep else value
    if len(models) != len(args.model):
        raise EvaluationInputError("--model: two models with the same name; use NAME=DIR")
    table = run_demo_check(models, args.corpus, args.output, epochs=args.epochs, seeds=args.seeds,
                           learning_rate=args.lr, train_per_era=args.train_per_era,
                           dev_per_era=args.dev_per_era, control=not args.no_control, force=args.force,
                           threads=args.threads)
    print(table)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
