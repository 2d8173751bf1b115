"""The demo's downstream check (not a task of the paper): which era is a State of the Union sentence from?

Four eras, 1790-1849, 1850-1899, 1900-1949, 1950-2021 (chance 25%); sentences of 8-60 words, deduplicated,
balanced, drawn with a fixed seed; split by address (every 4th address of an era is dev), so dev sentences
come from speeches unseen in fine-tuning (seen, unlabelled, in pretraining). Each export and a random-init
encoder of the same shape (the control) are fine-tuned with the package's GLUE protocol, sized for tiny models.
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

from fairseq_headless.cli import InputError
from fairseq_headless.evaluation.results import mean_std
from fairseq_headless.evaluation.suite import SuiteRunner, parse_models, write_tables
from fairseq_headless.evaluation.task_data import Example
from fairseq_headless.evaluation.tasks import CLASSIFICATION, TaskSpec
from fairseq_headless.files import atomic_folder

ERAS = (("1790-1849", 1790, 1849), ("1850-1899", 1850, 1899), ("1900-1949", 1900, 1949), ("1950-2021", 1950, 2021))
SOTU_ERA = TaskSpec(name="SOTU-era", suite="sotu-era", kind=CLASSIFICATION,
                    labels=tuple(name for name, _, _ in ERAS), metrics=("accuracy",))
ADDRESS_FILE = re.compile(r"^(\d{4})_[A-Za-z0-9._-]+\.txt$")
DEV_EVERY = 4  # every 4th address of an era is a dev address


def era_of(year: int):
    for index, (_, first, last) in enumerate(ERAS):
        if first <= year <= last:
            return index
    return None


def build_sotu_era(corpus: Path, train_per_era: int = 400, dev_per_era: int = 100, min_words: int = 8,
                   max_words: int = 60, seed: int = 0) -> tuple:
    """(train, dev) lists of :class:`Example`, balanced over the eras, split by address."""
    corpus = Path(corpus)
    addresses = sorted((int(m.group(1)), p) for p in corpus.glob("*.txt") if (m := ADDRESS_FILE.match(p.name)))
    if not addresses:
        raise InputError(
            f"{corpus}: no SOTU address files (<year>_<name>.txt); fetch them with scripts/fetch_corpus.py")
    pools = {split: [[] for _ in ERAS] for split in ("train", "dev")}
    seen = set()
    by_era = [[a for a in addresses if era_of(a[0]) == e] for e in range(len(ERAS))]
    for era, era_addresses in enumerate(by_era):
        for position, (_, path) in enumerate(era_addresses):
            split = "dev" if position % DEV_EVERY == DEV_EVERY - 1 else "train"
            for line in path.read_text(encoding="utf-8").splitlines():
                sentence = " ".join(line.split())
                if min_words <= len(sentence.split()) <= max_words and sentence not in seen:
                    seen.add(sentence)
                    pools[split][era].append(sentence)
    rng = random.Random(seed)
    out = {}
    for split, per_era in (("train", train_per_era), ("dev", dev_per_era)):
        examples = []
        for era, pool in enumerate(pools[split]):
            if len(pool) < per_era:
                raise InputError(
                    f"{corpus}: era {ERAS[era][0]} has {len(pool)} {split} sentences of {min_words}-{max_words} "
                    f"words, fewer than the {per_era} asked for; lower the per-era counts or use the full corpus")
            examples += [Example((s,), era) for s in rng.sample(pool, per_era)]
        rng.shuffle(examples)
        out[split] = examples
    return out["train"], out["dev"]


def random_init_copy(model_dir: Path, target: Path, seed: int = 0) -> Path:
    """A randomly initialised encoder with ``model_dir``'s config and tokenizer (the control)."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    # trust_remote_code: a headless export's classes are its folder's modeling_headless_roberta.py
    config = AutoConfig.from_pretrained(model_dir, local_files_only=True, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True, trust_remote_code=True)
    torch.manual_seed(seed)
    with atomic_folder(target, replace=True) as folder:  # config.json marks it done: all files or none
        AutoModel.from_config(config, trust_remote_code=True).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return Path(target)


CONTROL = "random-init"


def run_demo_check(models: dict, corpus: Path, output: Path, epochs: int = 3, seeds: int = 1,
                   learning_rate: float = 1e-4, batch_size: int = 32, train_per_era: int = 400,
                   dev_per_era: int = 100, control: bool = True, force: bool = False, threads: int = 1) -> str:
    """Fine-tune every model of ``models`` ({name: HF folder}) on SOTU-era; returns the markdown table.
    ``threads``: torch CPU threads during the check (0: torch's own), the fastest for tiny models on one."""
    import torch

    from fairseq_headless.evaluation.finetune import FinetuneConfig, finetune

    output = Path(output)
    refs = parse_models([f"{name}={path}" for name, path in models.items()])
    if any(r.name == CONTROL for r in refs):
        raise InputError(f"the model name '{CONTROL}' is taken by the control")
    train, dev = build_sotu_era(corpus, train_per_era, dev_per_era)
    if control:
        if force or not (output / "_control-model" / "config.json").is_file():
            random_init_copy(refs[0].path, output / "_control-model")
        refs += parse_models([f"{CONTROL}={output / '_control-model'}"])
    config = FinetuneConfig(learning_rate=learning_rate, weight_decay=0.0, batch_size=batch_size, epochs=epochs,
                            loss="balanced", max_length=128)
    bench, previous = SuiteRunner(output, force=force), torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        for ref in refs:
            settings = {"model_dir": str(ref.path), "task": SOTU_ERA.name, "data": str(Path(corpus).resolve()),
                        "train_per_era": train_per_era, "dev_per_era": dev_per_era, **config.settings()}

            def run(seed, run_dir, ref=ref):
                return finetune(ref.path, SOTU_ERA, train, {"dev": dev}, config, seed, run_dir,
                                desc=f"{ref.name} {SOTU_ERA.name} seed {seed}")

            results = bench.run(ref, SOTU_ERA.name, settings, list(range(seeds)), run)
            renamed = {s: {**r, "best": {SOTU_ERA.name: r["best"]["dev"]}} for s, r in results.items()}
            bench.write_job_summary(ref, SOTU_ERA.name, SOTU_ERA.suite, "main", settings, renamed)
    finally:
        torch.set_num_threads(previous)
    notes = [
        "SOTU-era is not a task of the paper: the demo builds it from its own corpus (State of the Union "
        f"addresses, public domain). Which era is a sentence from: {', '.join(e for e, _, _ in ERAS)} (chance 25%).",
        f"{len(train)} training / {len(dev)} dev sentences, balanced; split by address, so dev sentences come "
        "from speeches unseen in fine-tuning (seen, unlabelled, in pretraining).",
        f"Fine-tuning: balanced cross-entropy, AdamW lr {learning_rate:g}, batch {batch_size}, constant LR after "
        f"10% warmup, {epochs} epochs, best epoch, {seeds} seed(s); sized for tiny CPU models, not the paper's.",
        f"'{CONTROL}': the same shape and tokenizer with random weights, fine-tuned the same way.",
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
        raise InputError(f"{output}: {first} and {second} were fine-tuned with no seed in common "
                         f"({sorted(a)} vs {sorted(b)}); run both with the same --seeds")
    mean, std = mean_std([100 * (a[s] - b[s]) for s in seeds])
    spread = f" ± {std:.2f} (mean ± std over {len(seeds)} fine-tuning seeds, paired by seed)" if len(seeds) > 1 \
        else " (1 fine-tuning seed: its spread is unknown)"
    return f"{first} − {second}: {mean:+.2f} accuracy points{spread}"
