"""The demo's downstream check: which era is a State of the Union sentence from?

Not a task of the paper. The paper's benchmarks (GLUE, SuperGLUE, XNLI) cannot ship
offline here, so the demo builds a small supervised task from its own public-domain
corpus (the SOTU addresses 1790-2021, as fetched by scripts/fetch_corpus.py: one file
``<year>_<president>_<party>.txt`` per address, one sentence per line) and fine-tunes
each exported model on it with the GLUE machinery of this package.

* Labels: four eras, 1790-1849, 1850-1899, 1900-1949, 1950-2021 (chance = 25%).
* Split by address, not by sentence: in each era every 4th address (by year) is a dev
  address, so dev sentences come from speeches the fine-tuning never saw (their wording
  and topics do not leak). The pretraining did see them, without labels: this checks that
  the encoder's features carry usable information, it is not a held-out language test.
* Sentences of 8-60 words, deduplicated; the same number per era (balanced), drawn with a
  fixed seed: the task is identical on every run and machine for the same corpus.
* A randomly initialised encoder of the same shape and tokenizer is fine-tuned alongside
  as a control: a pretrained encoder that does no better than it has learnt nothing
  usable.
"""
from __future__ import annotations

import random
import re
from pathlib import Path

from fairseq_headless.files import atomic_folder
from fairseq_headless.cli import InputError as EvaluationInputError
from fairseq_headless.evaluation.task_data import Example
from fairseq_headless.evaluation.tasks import CLASSIFICATION, TaskSpec

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
        raise EvaluationInputError(
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
                raise EvaluationInputError(
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
